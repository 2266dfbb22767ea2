"""The CPU stand-in models are deterministic and shaped for the stock loaders."""

from __future__ import annotations

import subprocess
import sys

from safetensors import safe_open

from cak.cpu_models import MODEL_FILES
from cak.install_state import REPO_ROOT, InstallState
from tools.tiny_models import sha256


def _generate(installed: InstallState, out, seed: int) -> None:
    subprocess.run([sys.executable, "-m", "tools.tiny_models", "--comfyui", installed.comfyui_path,
                    "--out", str(out), "--seed", str(seed)], cwd=REPO_ROOT, check=True,
                   capture_output=True, timeout=300)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, installed_comfyui):
    _generate(installed_comfyui, tmp_path / "a", 5)
    _generate(installed_comfyui, tmp_path / "b", 5)
    _generate(installed_comfyui, tmp_path / "c", 6)
    for folder, name in MODEL_FILES.items():
        first, second, other = (sha256(tmp_path / run / folder / name) for run in "abc")
        assert first == second, name
        assert first != other, name


def test_tensor_layout_matches_comfyui_detection(tmp_path, installed_comfyui):
    _generate(installed_comfyui, tmp_path, 5)
    with safe_open(tmp_path / "diffusion_models" / MODEL_FILES["diffusion_models"], "pt") as f:
        keys = set(f.keys())
        assert "joint_blocks.0.context_block.attn.qkv.weight" in keys  # MMDiT → SD3
        assert f.get_slice("x_embedder.proj.weight").get_shape()[1] == 16  # 16-channel latent
    with safe_open(tmp_path / "text_encoders" / MODEL_FILES["text_encoders"], "pt") as f:
        assert "text_model.encoder.layers.0.mlp.fc1.weight" in f.keys()  # noqa: SIM118 - CLIP-L; a safetensors file has no __contains__
    with safe_open(tmp_path / "vae" / MODEL_FILES["vae"], "pt") as f:
        assert f.get_slice("taesd_decoder.1.weight").get_shape()[1] == 16
