"""What a client may ask for: the body of ``POST /v1/jobs``, checked field by field.

Every problem becomes a ``FieldError`` naming the field, answered 422. Types and broad bounds are
checked here (a pydantic model of the body); the chosen workflow's own manifest then checks its
limits (``workflow_catalog``).
Job ids are checked here too, before any file path is built from one.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .webhook_policy import UrlRefused, WebhookPolicy

WORKFLOW_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
STYLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _-]{0,63}$")
IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,128}$")
# Broad sanity bounds; a workflow's manifest may be stricter.
INT_FIELDS: dict[str, tuple[int, int]] = {
    "seed": (0, 2**64 - 1),
    "width": (16, 4096),
    "height": (16, 4096),
    "steps": (1, 200),
}
PARAM_FIELDS = ("style", *INT_FIELDS)
FIELDS = ("prompt", "workflow", "graph", "webhook", *PARAM_FIELDS)
MAX_GRAPH_NODES = 500
MAX_DEPTH = 32  # a graph is 4 levels deep; anything far deeper is an attack on the recursion limit
# Characters that reorder or break what a parent or a moderator reads (RTL override, isolates,
# line/paragraph separators): refused in a prompt rather than silently stripped.
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u2028\u2029")


class FieldError(ValueError):
    """A request field is missing or wrong; ``field`` names it (``body`` for the whole body)."""

    def __init__(self, field_name: str, reason: str) -> None:
        super().__init__(f"{field_name}: {reason}")
        self.field = field_name
        self.reason = reason


@dataclass(frozen=True)
class JobRequest:
    """A checked request: the prompt, the workflow and the parameters that were given."""

    workflow: str
    prompt: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    graph: dict[str, Any] | None = None
    webhook_url: str | None = None  # normalised, checked against ``webhooks.allow``

    def to_json(self) -> dict[str, Any]:
        """What the job store keeps (and ``from_json`` reads back for each attempt)."""
        data: dict[str, Any] = {"workflow": self.workflow, **self.params}
        if self.prompt is not None:
            data["prompt"] = self.prompt
        if self.graph is not None:
            data["graph"] = self.graph
        if self.webhook_url is not None:
            data["webhook"] = {"url": self.webhook_url}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobRequest:
        return cls(workflow=data["workflow"], prompt=data.get("prompt"), graph=data.get("graph"),
                   params={key: data[key] for key in PARAM_FIELDS if key in data},
                   webhook_url=(data.get("webhook") or {}).get("url"))

    def texts(self) -> Iterator[str]:
        """Every text a safety check must see: the prompt, and each string input of a raw graph."""
        if self.prompt is not None:
            yield self.prompt
        for node in (self.graph or {}).values():
            for value in node.get("inputs", {}).values():
                if isinstance(value, str):
                    yield value


class _Body(BaseModel):
    """Types and broad bounds of the body's fields; the rules between fields are in ``parse_job_request``.

    ``prompt`` and ``graph`` stay ``Any`` here: their own checks (``_prompt``, ``_graph``) word the
    answer, and a graph is refused before its shape matters when the service takes none.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    graph: Any = None
    prompt: Any = None
    webhook: Any = None  # checked by ``_webhook`` against the allow-list
    # Not Optional: an explicit null is a wrong workflow name; only a missing one means the default.
    workflow: Annotated[str, Field(pattern=WORKFLOW_NAME.pattern)] = None  # type: ignore[assignment]
    style: Annotated[str, Field(pattern=STYLE_NAME.pattern)] | None = None
    seed: Annotated[int, Field(ge=INT_FIELDS["seed"][0], le=INT_FIELDS["seed"][1])] | None = None
    width: Annotated[int, Field(ge=INT_FIELDS["width"][0], le=INT_FIELDS["width"][1])] | None = None
    height: Annotated[int, Field(ge=INT_FIELDS["height"][0], le=INT_FIELDS["height"][1])] | None = None
    steps: Annotated[int, Field(ge=INT_FIELDS["steps"][0], le=INT_FIELDS["steps"][1])] | None = None


_REASONS = {
    "workflow": "must be a workflow name (lowercase letters, digits, '_' or '-')",
    "style": "must be a style name (letters, digits, spaces, '_' or '-')",
}


def _first_problem(exc: ValidationError) -> FieldError:
    """The answer names one field: an unknown one first, then in the body model's field order."""
    errors = exc.errors(include_url=False)
    order = list(_Body.model_fields)
    errors.sort(key=lambda e: (e["type"] != "extra_forbidden", order.index(e["loc"][0])
                               if e["loc"][0] in order else -1))
    error = errors[0]
    name = str(error["loc"][0])
    if error["type"] == "extra_forbidden":
        return FieldError(name[:64], f"unknown field (known: {', '.join(FIELDS)})")
    if name in INT_FIELDS:
        low, high = INT_FIELDS[name]
        in_range = error["type"] in ("greater_than_equal", "less_than_equal")
        return FieldError(name, f"must be between {low} and {high}" if in_range else "must be an integer")
    return FieldError(name, _REASONS.get(name, error["msg"]))


def parse_job_request(body: Any, *, max_prompt_chars: int, allow_graphs: bool,
                      default_workflow: str, webhook_policy: WebhookPolicy | None = None) -> JobRequest:
    """Check a decoded JSON body; ``FieldError`` on the first problem.

    Without a ``webhook_policy`` no webhook is accepted (as with an empty allow-list).
    """
    if not isinstance(body, dict):
        raise FieldError("body", "must be a JSON object")
    _check_structure(body)
    try:
        fields, problem = _Body.model_validate(body), None
    except ValidationError as exc:
        fields, problem = None, exc
    if problem is not None and any(e["type"] == "extra_forbidden" for e in problem.errors()):
        raise _first_problem(problem) from None
    graph = _graph(body.get("graph"), allow_graphs)
    prompt = body.get("prompt")
    if prompt is None:
        if graph is None:
            raise FieldError("prompt", "is required")
    else:
        prompt = _prompt(prompt, max_prompt_chars)
    if problem is not None or fields is None:
        raise _first_problem(problem) from None
    workflow = fields.workflow if fields.workflow is not None else default_workflow
    if graph is not None:
        if "workflow" in body:
            raise FieldError("workflow", "give either a workflow or a graph, not both")
        workflow = "graph"
    params = fields.model_dump(include=set(PARAM_FIELDS), exclude_none=True)
    params = {name: params[name] for name in PARAM_FIELDS if name in params}
    if graph is not None and params:
        raise FieldError(next(iter(params)), "parameters apply to workflows, not to a raw graph")
    webhook_url = _webhook(body.get("webhook"), webhook_policy) if "webhook" in body else None
    return JobRequest(workflow=workflow, prompt=prompt, params=params, graph=graph, webhook_url=webhook_url)


def _webhook(value: Any, policy: WebhookPolicy | None) -> str:
    if not isinstance(value, dict) or "url" not in value:
        raise FieldError("webhook", 'must be an object {"url": "https://..."}')
    for key in value:
        if key != "url":
            raise FieldError(f"webhook.{str(key)[:64]}", "unknown field (known: url)")
    if policy is None:
        raise FieldError("webhook.url", "webhooks are not enabled on this service (webhooks.allow is empty)")
    try:
        return policy.check(value["url"])
    except UrlRefused as exc:  # parse_url refuses non-strings too
        raise FieldError("webhook.url", str(exc)) from None


def _prompt(value: Any, max_chars: int) -> str:
    if not isinstance(value, str):
        raise FieldError("prompt", "must be a string")
    if any(char in BIDI_CONTROLS for char in value):  # before strip(), which drops U+2028/2029
        raise FieldError("prompt", "must not contain bidirectional controls or line/paragraph separators")
    text = value.strip()
    if not text:
        raise FieldError("prompt", "must not be empty")
    if len(text) > max_chars:
        raise FieldError("prompt", f"is longer than {max_chars} characters")
    if any(unicodedata.category(char) == "Cc" for char in text):
        raise FieldError("prompt", "must not contain control characters")
    if all(char.isspace() or unicodedata.category(char) == "Cf" for char in text):
        raise FieldError("prompt", "must contain visible text (not only zero-width characters or spaces)")
    return text


def _check_structure(body: dict[str, Any]) -> None:
    """No lone surrogates in any key or string (they cannot be stored as UTF-8) and no deep nesting.

    Iterative, so the check itself cannot hit the recursion limit it guards.
    """
    for key in body:
        if _has_surrogate(key):
            raise FieldError("body", "field names must be valid Unicode (no lone surrogates)")
    stack: list[tuple[str, Any, int]] = [(key, value, 1) for key, value in body.items()]
    while stack:
        field_name, value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise FieldError(field_name[:64], f"is nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, str):
            if _has_surrogate(value):
                raise FieldError(field_name[:64], "must be valid Unicode text (no lone surrogates)")
        elif isinstance(value, dict):
            for key, item in value.items():
                if _has_surrogate(key):
                    raise FieldError(field_name[:64], "keys must be valid Unicode (no lone surrogates)")
                stack.append((field_name, item, depth + 1))
        elif isinstance(value, list):
            stack.extend((field_name, item, depth + 1) for item in value)


def _has_surrogate(text: str) -> bool:
    return any("\ud800" <= char <= "\udfff" for char in text)


def _graph(value: Any, allowed: bool) -> dict[str, Any] | None:
    if value is None:
        return None
    if not allowed:
        raise FieldError("graph", "raw graphs are not accepted by this service (name a workflow)")
    if not isinstance(value, dict) or not value or len(value) > MAX_GRAPH_NODES:
        raise FieldError("graph", f"must be an API-format graph with 1-{MAX_GRAPH_NODES} nodes")
    for node_id, node in value.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str) \
                or not isinstance(node.get("inputs", {}), dict):
            raise FieldError("graph", f"node {str(node_id)[:32]} must have a class_type and inputs")
    return value


def valid_job_id(text: str) -> bool:
    """A canonical lowercase UUID, the only form job ids take (checked before any path is built)."""
    try:
        return str(uuid.UUID(text)) == text
    except (ValueError, TypeError, AttributeError):
        return False


def valid_idempotency_key(text: str) -> bool:
    return bool(IDEMPOTENCY_KEY.match(text))
