"""``CuteAnimalPrompt``: turns a child's or parent's description into positive and negative prompts.

The composing itself is pure Python in :mod:`.prompt_composer` (tested without ComfyUI); this
module only adapts it to ComfyUI's V3 node schema.
"""

from __future__ import annotations

from comfy_api.latest import io
from typing_extensions import override

from .prompt_composer import PromptInputError, get_composer


class CuteAnimalPrompt(io.ComfyNode):
    @classmethod
    @override
    def define_schema(cls) -> io.Schema:
        composer = get_composer()
        return io.Schema(
            node_id="CAK_CuteAnimalPrompt",
            display_name="Cute Animal Prompt",
            category="Cute Animal Kids/Prompt",
            description=(
                "Builds a cute, age-appropriate positive prompt around your description (kept word "
                "for word) in the chosen style, and a negative prompt that steers away from scary, "
                "violent or grown-up content. Wire the positive output through Kids Text Safety."
            ),
            inputs=[
                io.String.Input(
                    "description",
                    multiline=True,
                    placeholder="a bunny with a red scarf / 一只戴帽子的小熊",
                    tooltip="What to draw, in English or Chinese, in your own words. "
                    f"At most {composer.max_description_chars} characters.",
                ),
                io.Combo.Input(
                    "style",
                    options=composer.style_names(),
                    default=composer.default_style,
                    tooltip="The picture style: "
                    + ", ".join(f"{composer.style(n).display_name} ({n})" for n in composer.style_names())
                    + ".",
                ),
            ],
            outputs=[
                io.String.Output(
                    "positive",
                    display_name="positive",
                    tooltip="The positive prompt: the style template with your description inside.",
                ),
                io.String.Output(
                    "negative",
                    display_name="negative",
                    tooltip="The negative prompt: what the picture must not show. It names unsafe "
                    "things on purpose, so do not send it through Kids Text Safety.",
                ),
            ],
        )

    @classmethod
    def execute(cls, description: str, style: str) -> io.NodeOutput:
        try:
            prompt = get_composer().compose(description, style)
        except PromptInputError as exc:
            raise ValueError(f"Cute Animal Prompt: {exc}") from exc
        return io.NodeOutput(prompt.positive, prompt.negative)
