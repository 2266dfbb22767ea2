"""Kids Guard's pure logic: the Qwen3Guard-Gen output parser on every documented form, the YAML
policy, the decision (Controversial policy, category map) and fail-closed refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from cute_animal_kids import guard_model
from cute_animal_kids.guard_model import (
    QWEN3GUARD_CATEGORIES,
    UNAVAILABLE,
    Guard,
    GuardOutputError,
    GuardPolicy,
    GuardUnavailable,
    GuardVerdict,
    decide,
    get_policy,
    parse_output,
)
from cute_animal_kids.pack_data import DATA_DIR, PackDataError

# Recorded answers in the forms Qwen3Guard-Gen documents (QwenLM/Qwen3Guard README, model card).
DOCUMENTED = [
    ("Safety: Safe\nCategories: None", GuardVerdict("Safe", ())),
    ("Safety: Unsafe\nCategories: Violent", GuardVerdict("Unsafe", ("Violent",))),
    ("Safety: Controversial\nCategories: Politically Sensitive Topics",
     GuardVerdict("Controversial", ("Politically Sensitive Topics",))),
    ("Safety: Unsafe\nCategories: Violent, Non-violent Illegal Acts",
     GuardVerdict("Unsafe", ("Violent", "Non-violent Illegal Acts"))),
    ("Safety: Unsafe\nCategories: Sexual Content or Sexual Acts, PII, Suicide & Self-Harm",
     GuardVerdict("Unsafe", ("Sexual Content or Sexual Acts", "PII", "Suicide & Self-Harm"))),
    ("Safety: Unsafe\nCategories: Jailbreak", GuardVerdict("Unsafe", ("Jailbreak",))),
    ("Safety: Unsafe\nCategories: Copyright Violation", GuardVerdict("Unsafe", ("Copyright Violation",))),
    ("Safety: Controversial\nCategories: Unethical Acts", GuardVerdict("Controversial", ("Unethical Acts",))),
    # response moderation adds a refusal line
    ("Safety: Safe\nCategories: None\nRefusal: Yes", GuardVerdict("Safe", (), "Yes")),
    ("Safety: Unsafe\nCategories: Violent\nRefusal: No", GuardVerdict("Unsafe", ("Violent",), "No")),
    # surrounding whitespace and a trailing newline, as decode() may leave them
    ("\nSafety: Safe\n\nCategories: None\n", GuardVerdict("Safe", ())),
    ("Safety: Unsafe\r\nCategories:  Violent ,PII ", GuardVerdict("Unsafe", ("Violent", "PII"))),
]

UNPARSABLE = [
    "",
    "   \n ",
    ">\n\n>\n\n>",                                   # what the tiny random-weight model says
    "Safety: Safe",                                   # no categories line
    "Categories: None\nSafety: Safe",                 # wrong order
    "Safety: Fine\nCategories: None",                 # unknown label
    "Safety: safe\nCategories: None",                 # labels are case-sensitive
    "Safety: Unsafe\nCategories: Scary Monsters",     # unknown category
    "Safety: Unsafe\nCategories: Violent, ",          # empty item
    "Safety: Safe\nCategories: Violent",              # contradictory
    "Safety: Safe\nCategories: None\nSafety: Unsafe",  # a line twice
    "Safety: Safe\nCategories: None\nAll good!",      # chatter after the verdict
    "Sure! Safety: Safe\nCategories: None",           # chatter before it
    "Safety: Safe\nCategories: None\nRefusal: Maybe",
]


@pytest.mark.parametrize(("text", "expected"), DOCUMENTED)
def test_documented_output_forms_parse(text, expected):
    assert parse_output(text) == expected


@pytest.mark.parametrize("text", UNPARSABLE)
def test_anything_else_is_not_a_verdict(text):
    with pytest.raises(GuardOutputError):
        parse_output(text)


def test_policy_maps_every_qwen3guard_category():
    policy = get_policy()
    assert set(policy.categories) == set(QWEN3GUARD_CATEGORIES)
    assert policy.controversial == "refuse"  # children: Controversial is refused unless configured


@pytest.mark.parametrize(("change", "message"), [
    ({"controversial": "maybe"}, "controversial"),
    ({"max_new_tokens": 2}, "max_new_tokens"),
    ({"unnamed_category": UNAVAILABLE}, "guard_unavailable"),
])
def test_bad_policy_values_fail_naming_the_key(change, message):
    data = {**yaml.safe_load((DATA_DIR / guard_model.DATA_FILE).read_text()), **change}
    with pytest.raises(PackDataError, match=message):
        GuardPolicy.from_data(data)


def test_policy_must_map_exactly_the_models_categories():
    data = yaml.safe_load((DATA_DIR / guard_model.DATA_FILE).read_text())
    del data["categories"]["Jailbreak"]
    with pytest.raises(PackDataError, match="missing: \\['Jailbreak'\\]"):
        GuardPolicy.from_data(data)


def test_decisions_follow_the_policy():
    policy = get_policy()
    assert decide(GuardVerdict("Safe", ()), policy).safe
    unsafe = decide(GuardVerdict("Unsafe", ("Violent", "PII")), policy)
    assert (unsafe.safe, unsafe.category, unsafe.categories) == (
        False, policy.categories["Violent"], (policy.categories["Violent"], policy.categories["PII"]))
    controversial = GuardVerdict("Controversial", ("Politically Sensitive Topics",))
    assert not decide(controversial, policy).safe                  # default: refuse
    assert decide(controversial, policy, "allow").safe
    assert not decide(GuardVerdict("Unsafe", ()), policy).safe     # unsafe naming no category
    assert decide(GuardVerdict("Unsafe", ()), policy).category == policy.unnamed_category
    assert not decide(GuardVerdict("Unsafe", ()), policy, "allow").safe  # allow is for Controversial only


def test_guard_passes_a_safe_verdict_and_reports_it():
    decision = Guard(generate=lambda text: "Safety: Safe\nCategories: None").check("a bunny in a hat")
    assert decision.safe
    assert json.loads(decision.to_json())["label"] == "Safe"


@pytest.mark.parametrize("generate", [
    lambda text: "I think this is fine.",
    lambda text: (_ for _ in ()).throw(RuntimeError("CUDA out of memory")),
    lambda text: (_ for _ in ()).throw(GuardUnavailable("cannot load")),
])
def test_guard_fails_closed(generate):
    decision = Guard(generate=generate).check("a bunny in a hat")
    assert (decision.safe, decision.category, decision.label) == (False, UNAVAILABLE, None)
    assert "a bunny" not in decision.reason


def test_missing_checkpoint_folder_is_guard_unavailable(tmp_path: Path):
    model = guard_model.GuardModel(tmp_path / "nothing-here")
    with pytest.raises(GuardUnavailable, match="no config.json"):
        model.load()
    assert Guard(model).check("a bunny").category == UNAVAILABLE


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "", "CPU"])
def test_device_names_are_checked(device):
    with pytest.raises(ValueError, match="device"):
        guard_model.check_device(device)
