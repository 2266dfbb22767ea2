"""``KidsTextSafety``: stops a workflow before any model runs when the prompt is not fit for children.

The decision is made by :func:`.text_safety.check_text`, the same function the supervisor calls
before queueing, so the node and the service cannot disagree.
"""

from __future__ import annotations

from comfy_api.latest import io
from typing_extensions import override

from .text_safety import UnsafePromptError, check_text


class KidsTextSafety(io.ComfyNode):
    @classmethod
    @override
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CAK_KidsTextSafety",
            display_name="Kids Text Safety",
            category="Cute Animal Kids/Safety",
            description=(
                "Checks a prompt (English or Chinese, including disguised spellings) for sexual, "
                "violent, scary, weapon, drug/alcohol/tobacco, self-harm, hateful, bullying and "
                "swearing content. Safe "
                "text passes through; otherwise the prompt stops with UnsafePromptError naming the "
                "category, never the words."
            ),
            inputs=[
                io.String.Input(
                    "text",
                    force_input=True,
                    tooltip="The prompt to check, e.g. the positive output of Cute Animal Prompt "
                    "(not the negative one, which names unsafe things on purpose).",
                ),
                io.Boolean.Input(
                    "strict",
                    default=False,
                    optional=True,
                    tooltip="Strict mode for the youngest audience: also refuse any word outside the "
                    "kid-safe vocabulary (category unknown_word). Use the same setting as the "
                    "supervisor's jobs.strict_text_gate.",
                ),
                io.String.Input(
                    "negative",
                    force_input=True,
                    optional=True,
                    tooltip="Optional: the negative prompt, passed through unchecked (it names unsafe "
                    "things on purpose). Wiring it here makes its encoder wait for the check, so no "
                    "text encoder runs before a rejection.",
                ),
            ],
            outputs=[
                io.String.Output(
                    "safe_text",
                    display_name="text",
                    tooltip="The same text, unchanged; only produced when it is safe.",
                ),
                io.String.Output(
                    "report",
                    display_name="report",
                    tooltip="JSON decision: safe, category, categories, matched_rule_count and the "
                    "text with any hit replaced by [category].",
                ),
                io.String.Output(
                    "negative_out",
                    display_name="negative",
                    tooltip="The negative input, unchanged (empty if none was wired).",
                ),
            ],
        )

    @classmethod
    def execute(cls, text: str, negative: str | None = None, strict: bool = False) -> io.NodeOutput:
        decision = check_text(text, strict=bool(strict))
        if not decision.safe:
            raise UnsafePromptError(decision)
        return io.NodeOutput(text, decision.to_json(), negative or "")
