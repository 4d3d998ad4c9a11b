"""Shared fixtures: small generated DAVIS-layout data and a runner for the `ussl` command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ussl_core.sample import SampleSpec, write_sample_davis

SMALL = SampleSpec(n_frames=20, width=96, height=72)


def make_davis(root: Path, n_videos: int = 2, spec: SampleSpec = SMALL) -> Path:
    """A DAVIS-layout root of generated videos (JPEGImages/72p/sample-NN + Annotations)."""
    return write_sample_davis(root, n_videos=n_videos, spec=spec)


def run_ussl(*args: str | os.PathLike, env: dict | None = None, timeout: float = 120,
             cwd: str | os.PathLike | None = None) -> subprocess.CompletedProcess:
    """Run the `ussl` command (this interpreter's ussl_core.cli) in a child process."""
    full_env = {k: v for k, v in os.environ.items() if k != "USSL_CRASH_AT"}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "ussl_core.cli", *map(str, args)],
                          capture_output=True, text=True, env=full_env, timeout=timeout, cwd=cwd)


def stderr_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


@pytest.fixture(scope="session")
def harness_data(tmp_path_factory):
    """The kill and disk-fault tests' shared inputs (tests/kill_harness.py): generated videos, a
    project with them added, one taught and selected, a trained LowRes-Net, images, a video."""
    from tests.kill_harness import Data

    return Data(tmp_path_factory.mktemp("harness"))


@pytest.fixture
def sample_davis(tmp_path: Path) -> Path:
    """Two 20-frame 96x72 sample videos with ground truth in DAVIS layout."""
    return make_davis(tmp_path / "davis", n_videos=2)
