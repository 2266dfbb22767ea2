"""A tiny random-weight Qwen3Guard-Gen stand-in, so the guard's real load-and-generate path runs in CI.

The real 0.6B checkpoint (1.2 GB) is the user's to fetch; tests and demos need the same code path
without it. This writes a checkpoint of the same architecture (``Qwen3ForCausalLM``, 2 layers,
small dims, seeded init) with the Qwen2 tokenizer files ComfyUI's tree ships
(``comfy/text_encoders/qwen25_tokenizer``: the same vocabulary and special tokens as Qwen3) and a
chat template shaped like Qwen3Guard-Gen's prompt-moderation one (task, policy with the three
labels, the nine categories, the conversation, the answer format, then the assistant turn).

Random weights answer with garbage, so the guard refuses every prompt with ``guard_unavailable``:
that is the fail-closed path the tests exercise. Never committed: install.py writes it into
``models/guard/cak_tiny_qwen3guard/``.

    python -m tools.tiny_guard_model --comfyui var/comfyui --out models/guard/cak_tiny_qwen3guard
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

FOLDER_NAME = "cak_tiny_qwen3guard"
DEFAULT_SEED = 20261201
TOKENIZER_DIR = Path("comfy") / "text_encoders" / "qwen25_tokenizer"
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json")
EOS_TOKEN_ID = 151645  # <|im_end|>
PAD_TOKEN_ID = 151643  # <|endoftext|>

_CATEGORY_LINES = "".join(f"{name}.\\n" for name in (
    "Violent", "Non-violent Illegal Acts", "Sexual Content or Sexual Acts", "PII", "Suicide & Self-Harm",
    "Unethical Acts", "Politically Sensitive Topics", "Copyright Violation", "Jailbreak"))

# Prompt moderation only (the tiny model never judges responses): the last user message is judged.
CHAT_TEMPLATE = (
    "{%- set query = (messages | selectattr('role', 'equalto', 'user') | list | last).content -%}"
    "{{- '<|im_start|>user\\n# Task:\\n"
    "1) Evaluate whether THE LAST USER\\'s query belongs to safe or unsafe content based on our "
    "safety policy.\\n2) Identify the category of unsafe content found.\\n\\n"
    "<BEGIN SAFETY POLICY>\\n"
    "**Safety: Safe**: the query contains no prohibited content and cannot lead to it.\\n"
    "**Safety: Unsafe**: the query contains prohibited content.\\n"
    "**Safety: Controversial**: the query is not explicitly prohibited, but its intent or context "
    "could be exploited to produce unsafe content.\\n"
    "<END SAFETY POLICY>\\n\\n<BEGIN UNSAFE CONTENT CATEGORIES>\\n" + _CATEGORY_LINES
    + "<END UNSAFE CONTENT CATEGORIES>\\n\\n<BEGIN CONVERSATION>\\n\\nUSER: ' + query + '\\n\\n"
    "<END CONVERSATION>\\n\\n"
    "Provide your safety assessment for ONLY THE LAST **USER\\'s query** in the above conversation:\\n"
    " - The first line must be one of: \\'Safety: Safe\\', \\'Safety: Unsafe\\', \\'Safety: Controversial\\'.\\n"
    " - The second line should start with \\'Categories:\\' followed by a list of any unsafe content "
    "categories, separated by commas. If the content is safe, use \\'Categories: None\\'.<|im_end|>\\n"
    "<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n' -}}"
)


def write(comfyui: Path, out: Path, seed: int = DEFAULT_SEED) -> Path:
    """Write the checkpoint folder ``out`` (atomically: a folder with that name is complete)."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    source = comfyui / TOKENIZER_DIR
    missing = [name for name in TOKENIZER_FILES if not (source / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{source} lacks {', '.join(missing)}: is {comfyui} a ComfyUI tree?")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        with tempfile.TemporaryDirectory() as staging:
            for name in ("vocab.json", "merges.txt"):
                shutil.copy(source / name, Path(staging) / name)
            settings = json.loads((source / "tokenizer_config.json").read_text(encoding="utf-8"))
            settings.pop("processor_class", None)  # a VL processor the text tokenizer does not need
            settings["chat_template"] = CHAT_TEMPLATE
            (Path(staging) / "tokenizer_config.json").write_text(json.dumps(settings), encoding="utf-8")
            tokenizer = AutoTokenizer.from_pretrained(staging, local_files_only=True)
        config = Qwen3Config(
            vocab_size=max(len(tokenizer), 151936), hidden_size=64, intermediate_size=128,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            max_position_embeddings=4096, tie_word_embeddings=True, bos_token_id=PAD_TOKEN_ID,
            eos_token_id=EOS_TOKEN_ID, pad_token_id=PAD_TOKEN_ID)
        torch.manual_seed(seed)
        model = Qwen3ForCausalLM(config).eval()
        model.generation_config = GenerationConfig(eos_token_id=EOS_TOKEN_ID, pad_token_id=PAD_TOKEN_ID,
                                                   do_sample=False)
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        partial.chmod(0o755)  # mkdtemp makes it private
        if out.exists():
            shutil.rmtree(out)
        os.replace(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.tiny_guard_model",
        description="Write a tiny random-weight Qwen3Guard-Gen-shaped checkpoint (for tests; its "
                    "verdicts are garbage, so the guard refuses everything with guard_unavailable).")
    parser.add_argument("--comfyui", type=Path, required=True,
                        help="ComfyUI source tree (its qwen25_tokenizer files are used)")
    parser.add_argument("--out", type=Path, required=True, help=f"checkpoint folder, e.g. models/guard/{FOLDER_NAME}")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="weight seed (default %(default)s)")
    args = parser.parse_args(argv)
    try:
        path = write(args.comfyui, args.out, args.seed)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    size = sum(f.stat().st_size for f in path.iterdir()) / 1e6
    print(f"  wrote {path} ({size:.1f} MB)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
