"""Kids Guard: a Qwen3Guard-Gen model as the second opinion on prompts the lexicon passed.

One module for both entries: the supervisor calls :meth:`Guard.check` before queueing (off its
event loop), and the ``CAK_KidsGuard`` node calls it inside a workflow. So this module imports no
ComfyUI, and ``transformers``/``torch`` only when a model is loaded.

The guard fails closed: a checkpoint that does not load, a generation that raises, and output that
is not the documented verdict format all give a refusal with category :data:`UNAVAILABLE`, never a
pass. Policy (category map, Controversial, token budget) is in ``data/guard.yaml``.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .pack_data import (
    PackDataError,
    data_dir,
    load_data_file,
    require_key,
    require_mapping,
    require_number,
    require_string,
)

logger = logging.getLogger(__name__)

DATA_FILE = "guard.yaml"
UNAVAILABLE = "guard_unavailable"
"""The category of every refusal the guard gives because it could not judge (fail closed)."""
MODEL_FOLDER = "guard"
"""The ComfyUI model folder (``models/guard/``) holding one sub-folder per checkpoint."""
CONTROVERSIAL_POLICIES = ("refuse", "allow")
LABELS = ("Safe", "Unsafe", "Controversial")
QWEN3GUARD_CATEGORIES = (
    "Violent", "Non-violent Illegal Acts", "Sexual Content or Sexual Acts", "PII",
    "Suicide & Self-Harm", "Unethical Acts", "Politically Sensitive Topics", "Copyright Violation",
    "Jailbreak",
)
"""Qwen3Guard-Gen's prompt-moderation categories, as its chat template lists them."""
REJECTION_MARKER = "rejected by Kids Guard"
_DEVICE = re.compile(r"cpu|cuda(?::\d+)?")
_CATEGORY_NAME = re.compile(r"[a-z][a-z0-9_]*")
_LINE = re.compile(r"(Safety|Categories|Refusal):[ \t]*(.*)")


class GuardUnavailable(RuntimeError):
    """The guard model cannot be loaded or run; nothing it was asked about may pass."""


class GuardOutputError(ValueError):
    """The model's output is not a Qwen3Guard-Gen verdict."""


# --------------------------------------------------------------------------- policy


@dataclass(frozen=True, slots=True)
class GuardPolicy:
    """``data/guard.yaml``: how a verdict becomes the pack's decision."""

    controversial: str
    max_new_tokens: int
    unnamed_category: str
    categories: Mapping[str, str]

    @classmethod
    def from_data(cls, data: Mapping[str, Any], file: str = DATA_FILE) -> GuardPolicy:
        controversial = require_string(require_key(data, "controversial", file, ""), file, "controversial")
        if controversial not in CONTROVERSIAL_POLICIES:
            raise PackDataError(f"{file}: controversial: must be one of {', '.join(CONTROVERSIAL_POLICIES)}")
        tokens = require_number(require_key(data, "max_new_tokens", file, ""), file, "max_new_tokens",
                                minimum=8, maximum=4096, integer=True)
        unnamed = require_string(require_key(data, "unnamed_category", file, ""), file, "unnamed_category")
        mapping = require_mapping(require_key(data, "categories", file, ""), file, "categories")
        if set(mapping) != set(QWEN3GUARD_CATEGORIES):
            missing = sorted(set(QWEN3GUARD_CATEGORIES) - set(mapping))
            unknown = sorted(set(mapping) - set(QWEN3GUARD_CATEGORIES))
            raise PackDataError(f"{file}: categories: must map exactly Qwen3Guard-Gen's categories "
                                f"(missing: {missing or 'none'}; unknown: {unknown or 'none'})")
        for name in (unnamed, *mapping.values()):
            if not isinstance(name, str) or not _CATEGORY_NAME.fullmatch(name) or name == UNAVAILABLE:
                raise PackDataError(f"{file}: {name!r}: our category names must match "
                                    f"{_CATEGORY_NAME.pattern} and not be {UNAVAILABLE}")
        return cls(controversial, int(tokens), unnamed, dict(mapping))


def get_policy(directory: str | Path | None = None) -> GuardPolicy:
    """The policy of a data directory (default: the pack's), validated once."""
    return _policy_for(data_dir(directory).resolve())


@functools.cache
def _policy_for(folder: Path) -> GuardPolicy:
    return GuardPolicy.from_data(load_data_file(DATA_FILE, folder))


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True, slots=True)
class GuardVerdict:
    """What the model said: its label, the categories it named, and (response moderation) refusal."""

    label: str
    categories: tuple[str, ...]
    refusal: str | None = None


def parse_output(text: str) -> GuardVerdict:
    """Parse Qwen3Guard-Gen's answer; ``GuardOutputError`` unless it is exactly a verdict.

    Accepted: a ``Safety:`` line, then a ``Categories:`` line (``None`` or known categories,
    comma-separated), then optionally ``Refusal: Yes|No`` (the response-moderation form); blank
    lines and surrounding spaces are ignored. Anything else (other text, a line twice, an unknown
    category, ``Safe`` with categories) is refused: a strict parser is what keeps a confused or
    broken model from passing a prompt.
    """
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    fields: list[tuple[str, str]] = []
    for line in lines:
        match = _LINE.fullmatch(line)
        if match is None:
            raise GuardOutputError(f"not a verdict line: {line[:80]!r}")
        fields.append((match.group(1), match.group(2).strip()))
    keys = [key for key, _ in fields]
    if keys not in (["Safety", "Categories"], ["Safety", "Categories", "Refusal"]):
        raise GuardOutputError(f"expected Safety, Categories[, Refusal] lines, got {keys or 'nothing'}")
    values = dict(fields)
    label = values["Safety"]
    if label not in LABELS:
        raise GuardOutputError(f"unknown safety label {label[:40]!r}")
    named = [part.strip() for part in values["Categories"].split(",")]
    if named == ["None"]:
        categories: tuple[str, ...] = ()
    else:
        unknown = [name for name in named if name not in QWEN3GUARD_CATEGORIES]
        if unknown:
            raise GuardOutputError(f"unknown categories {unknown!r}")
        categories = tuple(dict.fromkeys(named))
    if label == "Safe" and categories:
        raise GuardOutputError("a Safe verdict that names unsafe categories")
    refusal = values.get("Refusal")
    if refusal is not None and refusal not in ("Yes", "No"):
        raise GuardOutputError(f"unknown refusal value {refusal[:40]!r}")
    return GuardVerdict(label, categories, refusal)


# --------------------------------------------------------------------------- decision


@dataclass(frozen=True, slots=True)
class GuardDecision:
    """The guard's verdict in the pack's terms.

    ``label`` is the model's (None when it could not judge), ``category`` the first of our
    ``categories`` (None when safe), ``reason`` a short why for logs and reports (no prompt text).
    """

    safe: bool
    category: str | None
    categories: tuple[str, ...]
    label: str | None
    reason: str

    @property
    def unavailable(self) -> bool:
        return self.category == UNAVAILABLE

    def to_json(self) -> str:
        return json.dumps({"safe": self.safe, "category": self.category,
                           "categories": list(self.categories), "label": self.label,
                           "reason": self.reason}, ensure_ascii=False)


def unavailable(reason: str) -> GuardDecision:
    """The fail-closed refusal: the guard could not judge, so the text does not pass."""
    return GuardDecision(False, UNAVAILABLE, (UNAVAILABLE,), None, reason)


def decide(verdict: GuardVerdict, policy: GuardPolicy, controversial: str | None = None) -> GuardDecision:
    """Map a verdict onto our decision; ``controversial`` overrides the policy's default."""
    rule = controversial or policy.controversial
    if rule not in CONTROVERSIAL_POLICIES:
        raise ValueError(f"controversial must be one of {CONTROVERSIAL_POLICIES}, got {rule!r}")
    if verdict.label == "Safe" or (verdict.label == "Controversial" and rule == "allow"):
        return GuardDecision(True, None, (), verdict.label, f"Qwen3Guard: {verdict.label}")
    ours = tuple(dict.fromkeys(policy.categories[name] for name in verdict.categories)) \
        or (policy.unnamed_category,)
    named = ", ".join(verdict.categories) or "None"
    return GuardDecision(False, ours[0], ours, verdict.label, f"Qwen3Guard: {verdict.label} ({named})")


# --------------------------------------------------------------------------- the model


Generate = Callable[[str], str]
"""Text in, the model's raw answer out."""


def check_device(device: str) -> str:
    """``cpu`` or ``cuda`` / ``cuda:N``; ``ValueError`` otherwise."""
    if not isinstance(device, str) or not _DEVICE.fullmatch(device):
        raise ValueError(f"device must be cpu, cuda or cuda:N, got {device!r}")
    return device


class GuardModel:
    """A Qwen3Guard-Gen checkpoint in a local folder, loaded once, generating greedily.

    Nothing is ever downloaded: the folder must hold the checkpoint (config, weights, tokenizer
    and a chat template). A failed load is not remembered, so a repaired folder recovers without a
    restart; until then every :meth:`generate` raises ``GuardUnavailable``.
    """

    def __init__(self, path: str | Path, device: str = "cpu", max_new_tokens: int | None = None) -> None:
        self.path = Path(path)
        self.device = check_device(device)
        self.max_new_tokens = max_new_tokens or get_policy().max_new_tokens
        self._lock = threading.Lock()
        self._loaded: tuple[Any, Any] | None = None  # (tokenizer, model)

    @property
    def loaded(self) -> bool:
        return self._loaded is not None

    def load(self) -> None:
        """Load tokenizer and model now (``GuardUnavailable`` naming the folder and the cause)."""
        with self._lock:
            if self._loaded is not None:
                return
            if not (self.path / "config.json").is_file():
                raise GuardUnavailable(f"cannot load the guard model from {self.path}: not a "
                                       "checkpoint folder (no config.json there)")
            try:
                import torch
                from transformers import AutoModelForCausalLM, AutoTokenizer
                from transformers.utils import logging as hf_logging

                hf_logging.disable_progress_bar()  # a bar per load in the service's log is noise
                tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
                if not tokenizer.chat_template:
                    raise GuardUnavailable("the checkpoint has no chat template")
                dtype = torch.float32 if self.device == "cpu" else torch.bfloat16
                model = AutoModelForCausalLM.from_pretrained(self.path, local_files_only=True, dtype=dtype)
                model.to(self.device).eval()
            except GuardUnavailable as exc:
                raise GuardUnavailable(f"cannot load the guard model from {self.path}: {exc}") from None
            except Exception as exc:  # transformers raises OSError, ValueError, KeyError, torch errors...
                first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
                raise GuardUnavailable(f"cannot load the guard model from {self.path}: {first}") from exc
            self._loaded = (tokenizer, model)
            logger.info("guard model loaded from %s on %s", self.path, self.device)

    def generate(self, text: str) -> str:
        """The model's answer to the prompt-moderation request for ``text`` (greedy)."""
        self.load()
        tokenizer, model = self._loaded  # type: ignore[misc] - set by load()
        import torch

        # The checkpoint's own template builds the moderation request and ends with the assistant
        # turn (as Qwen3Guard-Gen's README calls it: no add_generation_prompt).
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False)
        inputs = tokenizer([prompt], return_tensors="pt").to(self.device)
        with torch.inference_mode():
            output = model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                                    pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
        new_tokens = output[0][inputs["input_ids"].shape[1]:]
        return tokenizer.decode(new_tokens, skip_special_tokens=True)

    def unload(self) -> bool:
        """Drop the weights (True if they were loaded); the next call loads them again."""
        with self._lock:
            was_loaded, self._loaded = self._loaded is not None, None
        if was_loaded and self.device != "cpu":
            import torch

            torch.cuda.empty_cache()
        return was_loaded


class Guard:
    """The decision on a text: model (or an injected ``generate``), parser and policy together."""

    def __init__(self, model: GuardModel | None = None, *, generate: Generate | None = None,
                 policy: GuardPolicy | None = None) -> None:
        if (model is None) == (generate is None):
            raise ValueError("give exactly one of model and generate")
        self.model = model
        self._generate: Generate = generate or model.generate  # type: ignore[union-attr]
        self.policy = policy or get_policy()

    def check(self, text: str, controversial: str | None = None) -> GuardDecision:
        """Judge ``text``; never raises for a guard problem: those are refusals (fail closed)."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, not {type(text).__name__}")
        try:
            raw = self._generate(text)
        except GuardUnavailable as exc:
            logger.warning("guard unavailable: %s", exc)
            return unavailable(str(exc))
        except Exception as exc:
            logger.exception("guard failed")
            return unavailable(f"the guard model failed: {type(exc).__name__}: {str(exc)[:200]}")
        try:
            verdict = parse_output(raw)
        except GuardOutputError as exc:
            logger.warning("guard output not understood (%s)", exc)
            return unavailable(f"the guard model's output is not a verdict ({exc})")
        decision = decide(verdict, self.policy, controversial)
        if not decision.safe:
            logger.info("guard refused: %s categories=%s", verdict.label, ",".join(decision.categories))
        return decision


# --------------------------------------------------------------------------- shared models

_shared: dict[tuple[Path, str], GuardModel] = {}
_shared_lock = threading.Lock()


def shared_model(path: str | Path, device: str = "cpu") -> GuardModel:
    """One :class:`GuardModel` per (folder, device) in this process, so node runs reuse the weights."""
    key = (Path(path).resolve(), check_device(device))
    with _shared_lock:
        model = _shared.get(key)
        if model is None:
            model = _shared[key] = GuardModel(key[0], key[1])
        return model


def unload_shared() -> list[str]:
    """Unload every shared guard model (the pack's Free Memory node); the folders unloaded."""
    with _shared_lock:
        models = list(_shared.values())
    return [f"Qwen3Guard ({model.path.name})" for model in models if model.unload()]


def rejection_message(decision: GuardDecision) -> str:
    """The stable message of a refusal: category named, prompt words never."""
    return f"{REJECTION_MARKER} (category: {decision.category})"
