"""README's first two commands are what users and CI run: keep them present and in order."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def commands() -> list[str]:
    return re.findall(r"^    \$ (.+)$", (ROOT / "README.md").read_text(), flags=re.M)


def test_readme_starts_with_run_then_test_command():
    run, test = commands()[:2]
    assert run.startswith("pip install -e .") and "ussl demo" in run
    assert test.startswith('pip install -e ".[test]"') and "pytest" in test


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "README.md" in ci and "bash -c \"$TEST_COMMAND\"" in ci
    # The pattern CI uses to extract the command finds README's test command.
    assert re.search(r'^    \$ pip install -e "\.\[test\]"', (ROOT / "README.md").read_text(), re.M)
