"""The workflows a client may name, loaded once at start, and the graph each request becomes.

Building the graph at submit time is the validation: a value outside the manifest's limits is
answered 422 naming the field before the job is queued. Each attempt builds it again from the
stored request, so a retry runs exactly what was accepted.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import random
import re
from pathlib import Path
from typing import Any

from cak.errors import UsageError
from cak.install_state import WORKFLOWS_DIR
from cak.workflow import Workflow

from .job_request import FieldError, JobRequest

_PARAMETER_IN_MESSAGE = re.compile(r"^(?:unknown )?parameter '?(\w+)'?")
SEED_MAX = 2**32 - 1


class WorkflowCatalog:
    def __init__(self, workflows: dict[str, Workflow], allow_graphs: bool = False) -> None:
        self.workflows = workflows
        self.allow_graphs = allow_graphs

    @classmethod
    def load(cls, directory: Path = WORKFLOWS_DIR, allow_graphs: bool = False) -> WorkflowCatalog:
        """Every ``<name>.yaml`` manifest in ``directory`` (blocking: call it off the event loop)."""
        workflows = {}
        for manifest in sorted(directory.glob("*.yaml")):
            workflow = Workflow.load(manifest)
            workflows[manifest.stem] = workflow
        return cls(workflows, allow_graphs)

    @property
    def names(self) -> list[str]:
        return sorted(self.workflows)

    def with_seed(self, request: JobRequest, idempotency_key: str | None) -> JobRequest:
        """The request with a seed filled in when the workflow takes one and none was given.

        Stored with the job, so every attempt draws the same picture. With an idempotency key the
        seed comes from the key, so a repeated submission is the same request.
        """
        workflow = self.workflows.get(request.workflow)
        if request.graph is not None or workflow is None or "seed" not in workflow.parameters \
                or "seed" in request.params:
            return request
        if idempotency_key is None:
            seed = random.randint(0, SEED_MAX)
        else:
            seed = int.from_bytes(hashlib.sha256(idempotency_key.encode()).digest()[:4], "big")
        return dataclasses.replace(request, params={**request.params, "seed": seed})

    def build(self, request: JobRequest) -> dict[str, Any]:
        """The API graph for a request; ``FieldError`` naming the field the workflow refuses."""
        if request.graph is not None:
            if not self.allow_graphs:
                raise FieldError("graph", "raw graphs are not accepted by this service")
            return copy.deepcopy(request.graph)
        workflow = self.workflows.get(request.workflow)
        if workflow is None:
            raise FieldError("workflow", f"unknown workflow {request.workflow!r} "
                                         f"(available: {', '.join(self.names) or 'none'})")
        values = dict(request.params)
        if request.prompt is not None:
            values["prompt"] = request.prompt
        for name in values:
            if name not in workflow.parameters:
                raise FieldError(name, f"workflow {request.workflow} takes no {name}")
        try:
            return workflow.build(values)
        except UsageError as exc:
            message = str(exc)
            match = _PARAMETER_IN_MESSAGE.match(message)
            # The field is named once: "style: is not one of ...", not "style: parameter style: ...".
            named_once = match and not message.startswith("unknown")
            raise FieldError(match.group(1) if match else "workflow",
                             message[match.end():].lstrip(": ") if named_once else message) from None
