"""Tests of purity curves: exact on hand-made statistics, real on a generated project."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest

import ussl_core.purity as purity
from ussl_core.ingest import SourceSpec, add_sources
from ussl_core.purity import (
    PERCENTS,
    MaskStats,
    decisions_curve,
    ground_truth_curve,
    mask_gt_stats,
    plot_curve,
    purity_curve,
    write_per_video_csv,
)
from ussl_core.sample import SampleSpec, generate_video, write_frame_folder
from ussl_core.store import Mask, Project
from ussl_core.teacher.runner import producer_name, run_teacher


def at(curve, field: str, percent: int):
    return getattr(curve, field)[PERCENTS.index(percent)]


# ----------------------------------------------------------------------------- exact curves


def test_ground_truth_curve_exact():
    stats = [MaskStats(1, 1, 0.9, 0.8, True), MaskStats(2, 1, 0.3, 0.1, False),
             MaskStats(3, 2, 0.7, 0.6, True), MaskStats(4, 2, 0.5, 0.2, False)]
    curve = ground_truth_curve(stats)
    assert curve.source == "ground_truth" and curve.n_masks == 4
    assert curve.percent == list(range(1, 101))
    # Best first: (0.8, hit), (0.6, hit), (0.2, miss), (0.1, miss).
    expected = {1: (1, 0.8, 1.0), 25: (1, 0.8, 1.0), 26: (2, 0.7, 1.0), 50: (2, 0.7, 1.0),
                51: (3, 1.6 / 3, 2 / 3), 75: (3, 1.6 / 3, 2 / 3), 76: (4, 0.425, 0.5),
                100: (4, 0.425, 0.5)}
    for p, (k, miou, corloc) in expected.items():
        assert at(curve, "n_kept", p) == k, p
        assert at(curve, "mean_iou", p) == pytest.approx(miou), p
        assert at(curve, "corloc", p) == pytest.approx(corloc), p
    assert curve.n_kept == sorted(curve.n_kept)
    data = curve.to_json()
    assert "approved_share" not in data and "n_audited" not in data
    assert json.loads(json.dumps(data))["mean_iou"][-1] == pytest.approx(0.425)


def test_ground_truth_curve_ties_and_empty():
    # Equal scores keep the given order.
    stats = [MaskStats(i, 1, 0.5, iou, False) for i, iou in enumerate([0.1, 0.9, 0.4])]
    curve = ground_truth_curve(stats)
    assert at(curve, "mean_iou", 33) == pytest.approx(0.1)
    assert at(curve, "mean_iou", 34) == pytest.approx(0.5)
    empty = ground_truth_curve([])
    assert empty.n_masks == 0 and set(empty.n_kept) == {0}
    assert set(empty.mean_iou) == {None} and set(empty.corloc) == {None}


def test_decisions_curve_exact():
    scores = [0.9, 0.8, 0.7, 0.6, 0.5]
    masks = [Mask(i, 7, s, "x.h5", i, 1, 1) for i, s in enumerate(scores)]
    decisions = {(0, 7): {"decision": "approve"}, (1, 7): {"decision": "reject"},
                 (3, 7): {"decision": "approve"},
                 (4, 8): {"decision": "reject"}}  # another producer's: ignored
    curve = decisions_curve(masks, decisions)
    assert curve.source == "decisions" and curve.n_masks == 5
    # kept: 1 -> a ; 2 -> a r ; 3 -> a r . ; 4 -> a r . a ; 5 -> a r . a .
    expected = {1: (1, 1.0, 1), 20: (1, 1.0, 1), 21: (2, 0.5, 2), 40: (2, 0.5, 2),
                60: (3, 0.5, 2), 80: (4, 2 / 3, 3), 100: (5, 2 / 3, 3)}
    for p, (k, share, audited) in expected.items():
        assert at(curve, "n_kept", p) == k, p
        assert at(curve, "approved_share", p) == pytest.approx(share), p
        assert at(curve, "n_audited", p) == audited, p
    assert set(curve.mean_iou) == {None} and set(curve.corloc) == {None}
    assert "approved_share" in curve.to_json()

    # No decisions among the kept masks: the share is undefined, not 0.
    only_last = decisions_curve(masks, {(4, 7): {"decision": "reject"}})
    assert at(only_last, "approved_share", 80) is None and at(only_last, "n_audited", 80) == 0
    assert at(only_last, "approved_share", 100) == 0.0 and at(only_last, "n_audited", 100) == 1


# ----------------------------------------------------------------------------- a real project


@pytest.fixture(scope="module")
def gt_sources(tmp_path_factory) -> list[SourceSpec]:
    root = tmp_path_factory.mktemp("purity_sources")
    specs = []
    for seed in range(3):
        frames, masks = generate_video(SampleSpec(n_frames=30, width=128, height=96, seed=seed))
        write_frame_folder(root / "src" / f"v{seed}", frames, masks, root / "gt" / f"v{seed}")
        specs.append(SourceSpec(root / "src" / f"v{seed}", root / "gt" / f"v{seed}"))
    return specs


@pytest.fixture
def taught(tmp_path, gt_sources):
    project = Project.create(tmp_path / "p")
    project.set_meta("working_size", json.dumps([96, 72]))
    list(add_sources(project, gt_sources))
    list(run_teacher(project, workers=1))
    yield project, project.producer(producer_name("videopca")).id
    project.close()


def test_purity_rises_as_selection_gets_stricter(taught):
    project, pid = taught
    curve = purity_curve(project, pid)
    assert curve.source == "ground_truth" and curve.n_masks == 90
    assert at(curve, "n_kept", 10) == 9 and at(curve, "n_kept", 100) == 90
    # Observed: mean IoU 0.83 at 10 %, 0.57 at 100 %.
    assert at(curve, "mean_iou", 10) >= at(curve, "mean_iou", 100) + 0.1
    assert at(curve, "corloc", 10) >= at(curve, "corloc", 100)
    assert 0.3 < at(curve, "mean_iou", 100) < 1.0
    # The curve at 100 % is the mean of the per-mask IoUs, computed at the original size.
    stats = mask_gt_stats(project, pid)
    assert len(stats) == 90
    assert at(curve, "mean_iou", 100) == pytest.approx(np.mean([s.iou for s in stats]))
    one = stats[0]
    mask = next(m for m in project.masks(pid) if m.frame_id == one.frame_id)
    frame = next(f for f in project.frames() if f.id == one.frame_id)
    gt = cv2.imread(str(project.abspath(frame.gt_path)), cv2.IMREAD_GRAYSCALE) > 0
    full = cv2.resize(project.read_mask(mask), (128, 96), interpolation=cv2.INTER_LINEAR) > 0.5
    assert one.iou == pytest.approx(np.count_nonzero(full & gt) / np.count_nonzero(full | gt),
                                    abs=0.01)
    assert one.score == mask.score


def test_purity_of_one_video_and_without_ground_truth(taught):
    project, pid = taught
    video = project.videos()[1]
    curve = purity_curve(project, pid, video.id)
    assert curve.source == "ground_truth" and curve.n_masks == 30
    ids = {f.id for f in project.frames(video.id)}
    stats = [s for s in mask_gt_stats(project, pid) if s.frame_id in ids]
    assert at(curve, "mean_iou", 100) == pytest.approx(np.mean([s.iou for s in stats]))


def test_gt_stats_are_cached_and_invalidated_when_masks_change(taught, monkeypatch):
    project, pid = taught
    calls = []
    original = purity._one_mask_stats

    def counting(*args):
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(purity, "_one_mask_stats", counting)
    first = mask_gt_stats(project, pid)
    assert len(calls) == 90
    assert list((project.root / "cache").glob("gt_stats_*.npz"))

    def refuse(*args):
        raise AssertionError("recomputed although the masks did not change")

    monkeypatch.setattr(purity, "_one_mask_stats", refuse)
    second = mask_gt_stats(project, pid)
    assert second == first

    # New masks (other settings): the cache no longer applies.
    monkeypatch.setattr(purity, "_one_mask_stats", counting)
    calls.clear()
    list(run_teacher(project, settings={"n_components": 1}, workers=1, replace=True))
    pid = project.producer(producer_name("videopca")).id
    third = mask_gt_stats(project, pid)
    assert len(calls) == 90
    assert [s.score for s in third] == [m.score for m in project.masks(pid)]
    assert [s.score for s in third] != [s.score for s in first]


def test_write_per_video_csv(taught, tmp_path):
    project, pid = taught
    path = tmp_path / "per_video.csv"
    assert write_per_video_csv(project, pid, path) == 300
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 300
    assert list(rows[0]) == ["video", "percent", "n_kept", "mean_iou", "corloc",
                             "approved_share", "n_audited", "source"]
    for video in project.videos():
        mine = [r for r in rows if r["video"] == video.name]
        assert [int(r["percent"]) for r in mine] == PERCENTS
        curve = purity_curve(project, pid, video.id)
        assert [int(r["n_kept"]) for r in mine] == curve.n_kept
        assert [float(r["mean_iou"]) for r in mine] == pytest.approx(curve.mean_iou, abs=1e-4)
        assert {r["source"] for r in mine} == {"ground_truth"}
        assert {r["approved_share"] for r in mine} == {""}


def test_write_per_video_csv_from_decisions(tmp_path):
    project = Project.create(tmp_path / "p")
    pid = project.ensure_producer("videopca@g1", "teacher", 1)
    for name, scores in {"a": [0.9, 0.1], "b": [0.3, 0.8, 0.5]}.items():
        vid = project.add_video(name, "frames", tmp_path / name,
                                [f"{i}" for i in range(len(scores))], (8, 8), None,
                                [(0, len(scores))])
        project.commit_shot_masks(pid, project.shots(vid)[0], tmp_path / f"{name}.h5", scores)
    project.add_video("empty", "frames", tmp_path / "empty", ["0"], (8, 8), None, [(0, 1)])
    b = [f.id for f in project.frames(project.video_by_name("b").id)]
    project.set_decision(b[1], pid, "approve")
    project.set_decision(b[2], pid, "reject")
    path = tmp_path / "decisions.csv"
    assert write_per_video_csv(project, pid, path) == 200  # the video without masks is left out
    with open(path, newline="") as f:
        rows = {(r["video"], int(r["percent"])): r for r in csv.DictReader(f)}
    assert rows[("b", 33)]["n_kept"] == "1" and rows[("b", 33)]["approved_share"] == "1.0000"
    assert rows[("b", 100)]["approved_share"] == "0.5000" and rows[("b", 100)]["n_audited"] == "2"
    assert rows[("a", 100)]["approved_share"] == "" and rows[("a", 100)]["n_audited"] == "0"
    assert rows[("a", 50)]["mean_iou"] == "" and rows[("a", 50)]["source"] == "decisions"
    project.close()


@pytest.mark.parametrize("source", ["ground_truth", "decisions"])
def test_plot_curve_writes_a_png(tmp_path, source):
    if source == "ground_truth":
        curve = ground_truth_curve([MaskStats(i, 1, i / 10, i / 10, i % 2 == 0) for i in range(10)])
    else:
        masks = [Mask(i, 1, i / 10, "x.h5", i, 1, 1) for i in range(10)]
        curve = decisions_curve(masks, {(9, 1): {"decision": "approve"},
                                        (5, 1): {"decision": "reject"}})
    path = tmp_path / "curve.png"
    plot_curve(curve, path, title="test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = cv2.imread(str(path))
    assert image is not None and image.shape == (400, 600, 3)
    assert image.std() > 5  # something was drawn


def test_the_teacher_job_measures_purity_in_its_own_process(tmp_path, monkeypatch):
    """The job (a child of the GUI) leaves the per-mask ground-truth statistics cached, so the
    Audit panel's purity curve afterwards only reads them."""
    from tests.conftest import make_davis
    from ussl_core.ingest import davis_sources
    from ussl_core.jobs import run_job
    from ussl_core.progress import CancelToken

    davis = make_davis(tmp_path / "davis", n_videos=2)
    with Project.create(tmp_path / "project") as project:
        for _ in add_sources(project, davis_sources(davis)):
            pass
    events = []
    run_job({"kind": "teacher", "project": str(tmp_path / "project"), "workers": 1},
            events.append, CancelToken())
    purity_events = [e for e in events if e.stage == "purity"]
    assert [e.done for e in purity_events] == [0, 1]
    assert "40 masks measured" in purity_events[-1].message
    assert len(list((tmp_path / "project" / "cache").glob("gt_stats_*.npz"))) == 1

    def not_again(*_args):
        raise AssertionError("the statistics were measured again")

    monkeypatch.setattr(purity, "_one_mask_stats", not_again)
    with Project.open(tmp_path / "project") as project:
        curve = purity_curve(project, project.producer(producer_name("videopca")).id)
    assert curve.source == "ground_truth" and curve.n_masks == 40
