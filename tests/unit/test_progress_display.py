"""The one progress display: plain, throttled lines in a log; a redrawn tqdm bar on a terminal."""

from __future__ import annotations

import io

from cak.events import ComfyEvent
from cak.progress import ProgressDisplay, ProgressReporter


def test_a_log_gets_one_line_per_tenth_and_every_said_line() -> None:
    out = io.StringIO()
    display = ProgressDisplay(out, tty=False)
    display.say("running")
    for value in range(101):
        display.step("comfy-a #1 node 8", value, 100)
    display.step("comfy-a #1 node 9", 1, 2)
    lines = out.getvalue().splitlines()
    assert lines[0] == "running"
    assert lines[1:11] == [f"comfy-a #1 node 8: step {10 * n}/100 ({10 * n}%)" for n in range(1, 11)]
    assert lines[11:] == ["comfy-a #1 node 9: step 1/2 (50%)"]
    assert "\r" not in out.getvalue()


def test_a_terminal_gets_a_redrawn_bar_and_lines_below_it() -> None:
    out = io.StringIO()
    display = ProgressDisplay(out, tty=True)
    for value in range(1, 5):
        display.step("node 8 KSampler", value, 4)
    display.say("finished")
    text = out.getvalue()
    assert text.count("\r") >= 4 and "node 8 KSampler |" in text and "4/4 100%" in text
    assert text.endswith("\nfinished\n")  # the finished bar stays, the line starts below it


def test_the_reporter_names_nodes_and_steps_from_comfyui_events() -> None:
    out = io.StringIO()
    graph = {"8": {"class_type": "KSampler"}, "9": {"class_type": "VAEDecode"}}
    reporter = ProgressReporter(graph, ProgressDisplay(out, tty=False))
    reporter(ComfyEvent("executing", {"node": "8", "prompt_id": "p"}, 0.0))
    for value in range(1, 5):
        reporter(ComfyEvent("progress", {"node": "8", "value": value, "max": 4, "prompt_id": "p"}, 0.0))
    lines = out.getvalue().splitlines()
    assert lines[0] == "[1/2] node 8 KSampler"
    assert lines[-1] == "    node 8 KSampler: step 4/4 (100%)"
