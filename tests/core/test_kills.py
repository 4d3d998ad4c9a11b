"""A few SIGKILLs of each long step at random moments (tests/kill_harness.py; the benchmark
benchmarks/kills.py runs many): no orphan process, no file under a final name that is not whole,
no completed work lost, and a re-run that converges to the uninterrupted run's result."""

from __future__ import annotations

import random
import sys
from dataclasses import asdict

import pytest

from tests.kill_harness import Data, kill_trial, random_delays, reference_run, scenarios, trial_ok

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="finds a run's processes through /proc (Linux)")

# Training's kills in the suite are tests/core/test_training.py's and test_training_input.py's
# (after a checkpoint, resumed to the same weights); the benchmark kills it at random moments.
KILLS = {"teacher (whole group)": 2, "teacher (parent only)": 1, "GUI job child (teacher)": 1,
         "segment (image folder)": 1, "segment (video)": 1}


@pytest.fixture(scope="module")
def data(harness_data) -> Data:
    return harness_data


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", list(KILLS))
def test_killed_at_random_moments_loses_nothing_and_converges(data: Data, name: str):
    scenario = next(s for s in scenarios(data) if s.name == name)
    reference_run(scenario, data.base / "reference")
    assert scenario.reference, f"{name}: the uninterrupted run produced nothing to compare"
    rng = random.Random(name)
    trials = [kill_trial(scenario, data.base / "trial", delay)
              for delay in random_delays(scenario, KILLS[name], rng)]
    for trial in trials:
        assert trial_ok(trial), asdict(trial)
