"""Typed steps shared by the CLI and the GUI's job child (ussl_core.steps)."""

from __future__ import annotations

import json

import pytest

from tests.core.test_selection import fake_project
from ussl_core.errors import SettingsError
from ussl_core.generations import GenerationSettings
from ussl_core.steps import (AddStep, EvalSegStep, NextGenerationStep, SelectStep, TeacherStep, TrainStep,
                             run_step, settings_of, step_from_spec, step_spec)
from ussl_core.training import TrainingSettings

STEPS = [
    AddStep(("a.mp4", "frames/"), davis=False, images=True, max_shot_length=50),
    TeacherStep("mog2", {"var_threshold": 20.0}, workers=2, replace=True),
    SelectStep({"top_percent": 30.0, "per_video": False}, producer="videopca@g1"),
    TrainStep(("basic_unet", "evalseg"), "compact", {"epochs": 3, "loss": "bce"}, resume=True),
    EvalSegStep("compact", {"epochs": 2}, resume=False, max_frames=100),
    NextGenerationStep(("more/",), davis=True, settings={"threshold": 0.8}, teacher="builtin", workers=1),
]


@pytest.mark.parametrize("step", STEPS, ids=lambda s: s.kind)
def test_a_step_survives_its_json_form(step):
    spec = json.loads(json.dumps({**step_spec(step), "project": "/p"}))   # as the job child gets it
    assert spec["kind"] == step.kind
    assert step_from_spec(spec) == step


def test_settings_are_their_dataclasses_validated_up_front():
    assert settings_of(STEPS[3]) == TrainingSettings(epochs=3, loss="bce")
    assert settings_of(STEPS[5]) == GenerationSettings(threshold=0.8)
    assert settings_of(SelectStep()).top_percent == 20.0   # the defaults when nothing is given
    for spec, fragment in [({"kind": "nope"}, "unknown step 'nope'"),
                           ({"kind": "train", "archs": ["lowres"], "settings": {"epochs": 0}}, "epoch"),
                           ({"kind": "train", "archs": ["lowres"], "settings": {"colour": 1}}, "colour"),
                           ({"kind": "select", "rule": {"top_percent": 150}}, "top_percent must be in"),
                           ({"kind": "next_generation", "settings": {"threshold": 0.5, "top_percent": 5}},
                            "one of"),
                           ({"kind": "add"}, "sources")]:
        with pytest.raises(SettingsError, match=fragment):
            step_from_spec(spec)


def test_select_step_writes_the_selection_and_says_so(tmp_path):
    project, _ = fake_project(tmp_path / "p", {"a": [0.9, 0.1, 0.8, 0.2], "b": [0.6, 0.3, 0.5, 0.4]})
    with project:
        events = list(run_step(project, SelectStep({"top_percent": 50.0})))
        active = project.active_selection()
    assert (active["method"], active["value"], active["per_video"], active["n_selected"]) == (
        "top_percent", 50.0, 1, 4)
    assert events[-1].message.startswith("selected 4 masks of videopca@g1 (4 by score")
