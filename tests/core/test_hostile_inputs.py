"""Bad input, walked through the real `ussl` command (a child process each): every case ends in
exit 2 and one line `ussl...: error: ...` that names the file or option and the cause, with no
traceback, and leaves the project exactly as it was (its shards, its models and a logical dump
of its catalog; lock and WAL files aside)."""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import make_davis, run_ussl
from ussl_core.ingest import add_sources, davis_sources
from ussl_core.sample import SampleSpec
from ussl_core.store import Project
from ussl_core.teacher.runner import producer_name, run_teacher

# (argv, fragments the one line must contain). {p}: the project; {d}: a folder of bad files.
CASES = [
    # The project itself
    (["status", "{d}/nothing-here"], ["{d}/nothing-here", "does not exist"]),
    (["status", "{d}/a-file.txt"], ["{d}/a-file.txt", "not a ussl project"]),
    (["status", "{d}/empty-dir"], ["{d}/empty-dir", "not a ussl project"]),
    (["status", "{d}/zero-catalog"], ["{d}/zero-catalog/project.sqlite", "empty"]),
    (["status", "{d}/foreign-catalog"], ["{d}/foreign-catalog/project.sqlite", "not a ussl catalog"]),
    (["status", "{d}/loop"], ["{d}/loop", "link loop"]),
    (["check", "{d}/nothing-here"], ["{d}/nothing-here", "does not exist"]),
    (["init", "{d}/a-file.txt"], ["{d}/a-file.txt", "not a folder"]),
    # The teacher's settings
    (["teacher", "{p}", "--settings", '{"n_components": -1}'], ["n_components must be at least 1, not -1"]),
    (["teacher", "{p}", "--settings", '{"n_components": "3"}'], ["n_components must be a whole number"]),
    (["teacher", "{p}", "--settings", '{"seed_threshold": 1.5}'], ["seed_threshold must be in [0, 1)"]),
    (["teacher", "{p}", "--settings", '{"blur_ksize": 4}'], ["blur_ksize must be an odd number"]),
    (["teacher", "{p}", "--settings", '{"hysteresis_low": 0.9}'], ["hysteresis_low must be at most"]),
    (["teacher", "{p}", "--settings", '{"colour": 1}'], ["unknown videopca setting(s) colour"]),
    (["teacher", "{p}", "--settings", "[1, 2]"], ["must be a JSON object"]),
    (["teacher", "{p}", "--settings", "{not json"], ["--settings", "JSON"]),
    (["teacher", "{p}", "--teacher", "mog2", "--settings", '{"var_threshold": 0}'],
     ["var_threshold must be positive, not 0"]),
    (["teacher", "{p}", "--teacher", "nosuch"], ["--teacher", "invalid choice: 'nosuch'"]),
    (["teacher", "{p}", "--workers", "-2"], ["--workers", "must be at least 1, not -2"]),
    (["teacher", "{p}", "--replace"], ["decision", "--discard-decisions"]),
    # Selection
    (["select", "{p}", "--threshold", "nan"], ["threshold must be in [0, 1), not nan"]),
    (["select", "{p}", "--threshold", "2"], ["threshold must be in [0, 1), not 2"]),
    (["select", "{p}", "--threshold", "-1"], ["threshold must be in [0, 1), not -1"]),
    (["select", "{p}", "--top-percent", "0"], ["top_percent must be in (0, 100], not 0"]),
    (["select", "{p}", "--top-percent", "150"], ["top_percent must be in (0, 100], not 150"]),
    (["select", "{p}", "--top-percent", "ten"], ["--top-percent", "invalid float value: 'ten'"]),
    (["select", "{p}", "--max-per-video", "-3"], ["max_per_video must be at least 1, not -3"]),
    (["select", "{p}", "--top-percent", "10", "--threshold", "0.5"], ["not allowed with argument"]),
    # Adding video
    (["add", "{p}", "{d}/missing.mp4"], ["{d}/missing.mp4", "does not exist"]),
    (["add", "{p}", "{d}/text.mp4"], ["{d}/text.mp4", "not a readable video"]),
    (["add", "{p}", "{d}/zero.mp4"], ["{d}/zero.mp4", "empty"]),
    (["add", "{p}", "{d}/empty-dir"], ["{d}/empty-dir", "no frames"]),
    (["add", "{p}", "{d}/mixed-sizes"], ["{d}/mixed-sizes", "size"]),
    (["add", "{p}", "{d}/a-file.txt"], ["{d}/a-file.txt", "not a video"]),
    (["add", "{p}", "{d}/missing.mp4", "--max-shot-length", "0"], ["--max-shot-length", "must be at least 1"]),
    # Training
    (["train", "{p}", "--arch", "lowres", "--epochs", "0"], ["epochs must be at least 1, not 0"]),
    (["train", "{p}", "--arch", "lowres", "--learning-rate", "2"], ["learning_rate must be in (0, 1), not 2"]),
    (["train", "{p}", "--arch", "lowres", "--batch-size", "0"], ["batch_size must be at least 1, not 0"]),
    (["train", "{p}", "--arch", "lowres", "--validation-share", "1"], ["validation_share must be in [0, 1)"]),
    (["train", "{p}", "--arch", "lowres", "--crop-fraction", "0.5", "--min-crop-fraction", "0.6"],
     ["min_crop_fraction must be at most crop_fraction"]),
    (["train", "{p}", "--arch", "lowres", "--loss", "l1"], ["--loss", "invalid choice: 'l1'"]),
    (["train", "{p}", "--arch", "nosuch"], ["nosuch"]),
    (["train", "{p}", "--arch", "lowres", "--resume"], ["no interrupted run", "without --resume"]),
    (["train", "{p}", "--arch", "fconv"], ["{p}", "no selection yet"]),
    (["next-generation", "{p}", "--workers", "0"], ["--workers", "must be at least 1, not 0"]),
    (["next-generation", "{p}"], ["{p}", "no students of generation 1"]),
    # Decisions, export, evaluation
    (["decisions", "{p}", "--import", "{d}/missing.csv"], ["{d}/missing.csv", "not found"]),
    (["decisions", "{p}", "--import", "{d}/bad-columns.csv"], ["{d}/bad-columns.csv", "column"]),
    (["decisions", "{p}", "--import", "{d}/wrong-decision.csv"], ["{d}/wrong-decision.csv", "decision"]),
    (["export", "{p}", "--masks", "{d}/a-file.txt"], ["{d}/a-file.txt", "not a folder"]),
    (["export", "{p}", "--masks", "{d}/out", "--producer", "nosuch"], ["nosuch"]),
    (["evaluate", "--pred", "{d}/missing", "--gt", "{d}/empty-dir"], ["{d}/missing", "does not exist"]),
    (["evaluate", "--pred", "{d}/photos", "--gt", "{d}/photos"], ["{d}/photos/photo0.png", "not a ground-truth mask"]),
    # Segmentation
    (["segment", "{d}/missing.png", "--out", "{d}/seg"], ["{d}/missing.png", "does not exist"]),
    (["segment", "{d}/text.png", "--out", "{d}/seg", "--model", "{d}/garbage.keras"],
     ["{d}/garbage.keras", "not a"]),
    (["segment", "{d}/photos", "--out", "{d}/a-file.txt"], ["{d}/a-file.txt", "already exists"]),
    (["segment", "{d}/photos", "--out", "{d}/seg", "--threshold", "1.5"], ["threshold must be in [0, 1)"]),
]


def is_native_log(line: str) -> bool:
    """TensorFlow's C++ start-up notes (absl, before its logging is set up: no environment
    variable silences them); not ussl's output."""
    return bool(re.match(r"[IWEF]\d{4} \d\d:\d\d:\d\d", line)) or line.startswith("WARNING: All log messages before absl")


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()} if folder.is_dir() else {}


def project_state(root: Path) -> dict:
    """What must not change: every file under arrays/ and models/, and the catalog's rows."""
    connection = sqlite3.connect(f"file:{root / 'project.sqlite'}?mode=ro", uri=True)
    try:
        dump = list(connection.iterdump())
    finally:
        connection.close()
    return {"arrays": _digest(root / "arrays"), "models": _digest(root / "models"), "catalog": dump,
            "top": sorted(p.name for p in root.iterdir()
                          if not p.name.startswith("project.sqlite") and p.name != ".lock")}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> tuple[Path, Path]:
    """A taught project with a human decision and a model, and a folder of bad files."""
    base = tmp_path_factory.mktemp("hostile")
    davis = make_davis(base / "davis", n_videos=2, spec=SampleSpec(n_frames=6, width=32, height=24))
    root = base / "p"
    with Project.create(root) as project:
        list(add_sources(project, davis_sources(davis)))
        list(run_teacher(project, workers=1))
        producer = project.producer(producer_name("videopca"))
        project.set_decision(project.frames()[0].id, producer.id, "approve")
    (root / "models").mkdir(exist_ok=True)
    (root / "models" / "g1_lowres_compact.keras").write_bytes(b"a model someone trained")
    d = base / "bad"
    d.mkdir()
    (d / "a-file.txt").write_text("just text")
    (d / "empty-dir").mkdir()
    (d / "zero-catalog").mkdir()
    (d / "zero-catalog" / "project.sqlite").write_bytes(b"")
    (d / "foreign-catalog").mkdir()
    other = sqlite3.connect(d / "foreign-catalog" / "project.sqlite")
    other.execute("CREATE TABLE invoices (id INTEGER)")
    other.commit()
    other.close()
    os.symlink(d / "loop", d / "loop")
    (d / "text.mp4").write_text("not a video at all")
    (d / "zero.mp4").write_bytes(b"")
    (d / "mixed-sizes").mkdir()
    for i, size in enumerate([(24, 32), (24, 32), (30, 40)]):
        cv2.imwrite(str(d / "mixed-sizes" / f"{i:05d}.jpg"), np.full((*size, 3), 90, np.uint8))
    (d / "bad-columns.csv").write_text("name,verdict\nsample-00,yes\n")
    (d / "wrong-decision.csv").write_text("video,frame,producer,decision,time,reason\n"
                                          f"sample-00,0,{producer_name('videopca')},maybe,,\n")
    (d / "photos").mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        cv2.imwrite(str(d / "photos" / f"photo{i}.png"), rng.integers(0, 255, (24, 32, 3), np.uint8))
    (d / "text.png").write_text("not an image")
    (d / "garbage.keras").write_bytes(b"garbage, not a zip")
    return root, d


def test_the_table_is_long_enough():
    assert len(CASES) >= 40


def test_every_bad_input_is_one_clear_line_exit_2_and_changes_nothing(hostile):
    root, d = hostile
    before = project_state(root)

    def attempt(case):
        argv, fragments = case
        fill = {"{p}": str(root), "{d}": str(d)}

        def filled(text: str) -> str:
            for key, value in fill.items():
                text = text.replace(key, value)
            return text

        result = run_ussl(*map(filled, argv), timeout=300)
        return argv, [filled(f) for f in fragments], result

    # Cases on the project run one after another (a writer locks it); the others beside them.
    on_project = [case for case in CASES if "{p}" in case[0]]
    elsewhere = [case for case in CASES if "{p}" not in case[0]]
    with ThreadPoolExecutor(max_workers=1) as pool:
        beside = pool.map(attempt, elsewhere)
        outcomes = [attempt(case) for case in on_project] + list(beside)
    problems = []
    for argv, fragments, result in outcomes:
        lines = [line for line in result.stderr.splitlines() if line.strip() and not is_native_log(line)]
        line = lines[-1] if lines else ""
        if result.returncode != 2 or len(lines) != 1 or "Traceback" in result.stderr:
            problems.append(f"{argv}: exit {result.returncode}, stderr {result.stderr[-600:]!r}")
        elif not (line.startswith("ussl") and ": error: " in line):
            problems.append(f"{argv}: not the one-line form: {line!r}")
        elif missing := [f for f in fragments if f not in line]:
            problems.append(f"{argv}: {line!r} lacks {missing}")
    assert not problems, "\n".join(problems)
    after = project_state(root)
    changed_rows = sorted(set(before["catalog"]) ^ set(after["catalog"]))
    assert changed_rows == []
    assert after == before
