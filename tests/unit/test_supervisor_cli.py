"""The supervisor CLI's exit codes and the missing-model message (pure logic; the CLI end to end is
in tests/integration/test_job_service.py)."""

from __future__ import annotations

from supervisor.cli import (
    EXAMPLES,
    EXIT_BAD_REQUEST,
    EXIT_FAILED,
    EXIT_MISSING_MODELS,
    EXIT_UNREACHABLE,
    EXIT_UNSAFE,
    build_parser,
    exit_code_for,
)
from supervisor.dispatcher import missing_model_files
from supervisor.service_client import ServiceError


def test_exit_codes_are_distinct_and_in_the_help() -> None:
    codes = [EXIT_UNREACHABLE, EXIT_BAD_REQUEST, EXIT_MISSING_MODELS, EXIT_UNSAFE, EXIT_FAILED]
    assert len(set(codes)) == len(codes) and 0 not in codes
    for code in codes:
        assert f"{code} " in EXAMPLES.split("Exit codes:")[1]
    assert exit_code_for(ServiceError("cannot reach")) == EXIT_UNREACHABLE
    assert exit_code_for(ServiceError("draining", 503)) == EXIT_UNREACHABLE
    for status in (400, 401, 404, 409, 413, 415, 422):
        assert exit_code_for(ServiceError("refused", status)) == EXIT_BAD_REQUEST


def test_cancel_command_takes_a_job_id() -> None:
    args = build_parser().parse_args(["cancel", "0b7e4c2a-8f0e-4d55-9a84-2f4f3c1d2e10"])
    assert args.command == "cancel" and args.job_id.startswith("0b7e4c2a")


def _missing(node_type: str, input_name: str, value: str) -> dict:
    return {"type": "value_not_in_list", "message": "Value not in list",
            "details": f"{input_name}: '{value}' not in []",
            "extra_info": {"input_name": input_name, "received_value": value}}


def test_missing_model_files_are_named_once_with_their_folder() -> None:
    node_errors = {  # ComfyUI repeats a loader's error for every output that depends on it
        "1": {"class_type": "UNETLoader", "errors": [_missing("UNETLoader", "unet_name", "big.safetensors")]},
        "2": {"class_type": "VAELoader", "errors": [_missing("VAELoader", "vae_name", "vae.safetensors")]},
        "3": {"class_type": "UNETLoader", "errors": [_missing("UNETLoader", "unet_name", "big.safetensors")]},
        "4": {"class_type": "KSampler", "errors": [_missing("KSampler", "sampler_name", "nope")]},
    }
    assert missing_model_files(node_errors) == ["big.safetensors (put it in models/diffusion_models/)",
                                                "vae.safetensors (put it in models/vae/)"]
    assert missing_model_files({"4": node_errors["4"]}) == []  # a bad choice is not a missing model


class _Answers:
    """A ServiceClient stand-in answering ``status``'s two reads."""

    def __init__(self, hosts: list[dict]) -> None:
        self.hosts = hosts

    async def request(self, method: str, path: str, **_: object) -> dict:
        if path == "/v1/instances":
            return {"instances": [], "queue_depth": 3, "running_jobs": 1}
        return {"hosts": self.hosts, "queue_depth": 3, "running_jobs": 1}


def test_status_lists_the_hosts_only_when_several_share_the_queue(capsys) -> None:
    import asyncio
    import time

    from supervisor.cli import _status

    host = {"name": "gpu-a", "self": True, "started_at": 0, "heartbeat_at": time.time(), "version": "0.1.0",
            "instances": [{"name": "comfy-1", "state": "busy"}]}
    asyncio.run(_status(_Answers([host])))  # type: ignore[arg-type]
    alone = capsys.readouterr().out
    asyncio.run(_status(_Answers([host, {**host, "name": "gpu-b", "self": False}])))  # type: ignore[arg-type]
    shared = capsys.readouterr().out
    assert "HOST" not in alone and "queue depth: 3" in alone
    assert "gpu-a (this one)" in shared and "gpu-b" in shared and "comfy-1=busy" in shared
