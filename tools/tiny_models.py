"""Small random-weight models that stand in for Qwen-Image on a CPU.

Real Qwen-Image weights (about 30 GB) cannot be had on a test machine, so the CPU workflow runs the
same graph shape on three small files that stock ComfyUI loaders accept:

- ``diffusion_models/cak_cpu_mmdit.safetensors``: an SD3-architecture MMDiT of depth 1 (16-channel
  latent, the path Qwen-Image takes through ``ModelSamplingAuraFlow`` and ``EmptySD3LatentImage``);
- ``text_encoders/cak_cpu_clip_l.safetensors``: a CLIP-L text encoder (ComfyUI fixes its size);
- ``vae/cak_cpu_vae.safetensors``: a 16-channel TAESD-style VAE.

The modules are built from ComfyUI's own classes on the ``meta`` device (so the tensor names and
shapes are exactly what its loaders expect) and every tensor is filled from one seeded generator:
the same seed gives byte-identical files. The pictures they draw are noise; the plumbing is what
they test.

Run with the ComfyUI tree on ``sys.path``: ``python -m tools.tiny_models --comfyui PATH --out DIR``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path

from cak.cpu_models import DIFFUSION_MODEL, MODEL_FILES, TEXT_ENCODER, VAE

DEFAULT_SEED = 20261125


def _import_comfy(comfyui: Path) -> None:
    """Make ComfyUI importable on a machine without a GPU."""
    sys.path.insert(0, str(comfyui))
    import comfy.cli_args

    comfy.cli_args.args.cpu = True  # before comfy.model_management is imported


def _fill(state: dict, seed: int, dtype: torch.dtype) -> dict:  # noqa: F821 - torch imported lazily
    """Deterministic values for every tensor: norms 1, biases 0, matrices N(0, fan_in^-1/2)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name in sorted(state):
        shape = tuple(state[name].shape)
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "bias" or leaf == "vae_shift":
            value = torch.zeros(shape)
        elif leaf == "vae_scale" or len(shape) <= 1:
            value = torch.ones(shape)
        else:
            fan_in = math.prod(shape[1:])
            value = torch.randn(shape, generator=gen) * fan_in ** -0.5
        out[name] = value.to(dtype).contiguous()
    return out


def _mmdit_state() -> dict:
    """SD3 MMDiT, depth 1 (hidden 64, one head): ComfyUI detects it as SD3 from the tensor shapes."""
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.mmdit import MMDiT

    model = MMDiT(
        patch_size=2,
        in_channels=16,
        out_channels=16,
        depth=1,
        adm_in_channels=2048,
        context_embedder_config={
            "target": "torch.nn.Linear",
            "params": {"in_features": 4096, "out_features": 64},
        },
        pos_embed_max_size=64,  # 64×64 patches of 2 latent px: images up to 1024²
        num_patches=64 * 64,
        pos_embed_scaling_factor=None,
        device="meta",
        operations=comfy.ops.disable_weight_init,
    )
    return model.state_dict()


def _clip_l_state() -> dict:
    """CLIP-L text encoder in the layout of a stand-alone ``clip_l.safetensors``."""
    import comfy.ops
    from comfy.clip_model import CLIPTextModel

    config_path = Path(comfy.ops.__file__).parent / "sd1_clip_config.json"
    config = json.loads(config_path.read_text())
    model = CLIPTextModel(config, dtype=None, device="meta", operations=comfy.ops.disable_weight_init)
    return model.state_dict()


def _vae_state() -> dict:
    """A TAESD-style VAE with a 16-channel latent (ComfyUI reads the channel count from the file)."""
    import torch
    from comfy.taesd.taesd import TAESD

    with torch.device("meta"):
        model = TAESD(latent_channels=16)
    return model.state_dict()


BUILDERS: dict[str, Callable[[], dict]] = {
    DIFFUSION_MODEL: _mmdit_state,
    TEXT_ENCODER: _clip_l_state,
    VAE: _vae_state,
}


def generate(comfyui: Path, out_dir: Path, seed: int = DEFAULT_SEED, force: bool = False) -> dict[str, Path]:
    """Write the three files under ``out_dir/<folder>/`` (skipping present ones) and return their paths."""
    import torch
    from safetensors.torch import save_file

    _import_comfy(comfyui)
    written: dict[str, Path] = {}
    for index, (folder, file_name) in enumerate(MODEL_FILES.items()):
        target = out_dir / folder / file_name
        written[folder] = target
        if target.exists() and not force:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        state = _fill(BUILDERS[file_name](), seed + index, torch.float16)
        partial = target.with_suffix(".partial")
        save_file(state, str(partial))
        os.replace(partial, target)  # a file with the final name is always complete
        print(f"  wrote {target} ({target.stat().st_size / 1e6:.1f} MB)", flush=True)
    return written


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.tiny_models",
        description="Write deterministic random-weight CPU stand-ins for the Qwen-Image models.",
    )
    parser.add_argument("--comfyui", type=Path, required=True, help="ComfyUI source tree (holds main.py)")
    parser.add_argument("--out", type=Path, required=True, help="models folder (gets diffusion_models/, text_encoders/, vae/)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="same seed, same bytes (default %(default)s)")
    parser.add_argument("--force", action="store_true", help="rewrite files that already exist")
    parser.add_argument("--sha256", action="store_true", help="print each file's sha256")
    args = parser.parse_args(argv)
    if not (args.comfyui / "main.py").is_file():
        print(f"error: {args.comfyui} is not a ComfyUI tree (no main.py)", file=sys.stderr)
        return 2
    paths = generate(args.comfyui, args.out, args.seed, args.force)
    if args.sha256:
        for path in paths.values():
            print(f"{sha256(path)}  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
