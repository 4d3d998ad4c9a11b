"""ussl_core.views.audit: the Audit panel's table, filters, pixels, purity and cut-off, without Qt."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import make_davis
from ussl_core.ingest import add_sources, davis_sources
from ussl_core.progress import CancelToken, Cancelled
from ussl_core.purity import PERCENTS, PurityCurve, decisions_curve, purity_curve
from ussl_core.sample import SampleSpec
from ussl_core.selection import SelectionSettings, kept_by_score
from ussl_core.store import Project
from ussl_core.store.project import Mask
from ussl_core.teacher.runner import producer_name, run_teacher
from ussl_core.views.audit import (APPROVE, NONE, REJECT, AuditRecord, AuditTable, CurvePoint,
                                   MaskPixels, cutoff_figures, curve_point, decision_codes, is_kept,
                                   load_table, percent_above, read_large_view, read_purity_curve,
                                   render_thumbnail, table_decisions_curve, threshold_keeping)

PRODUCER = 3


def made_table(scores, videos, codes=None) -> AuditTable:
    """A table of masks given best first; frame ids 100, 101, ...; video 1 is 'a', 2 is 'b'."""
    n = len(scores)
    ints = np.arange(n, dtype=np.int32)
    return AuditTable(
        producer_id=PRODUCER, frame_id=np.arange(100, 100 + n, dtype=np.int64),
        score=np.asarray(scores, np.float64), video_id=np.asarray(videos, np.int64),
        frame_idx=ints, decision=np.asarray(codes if codes is not None else [NONE] * n, np.int8),
        mask_path=np.zeros(n, np.int32), mask_row=ints, frames_path=np.full(n, -1, np.int32),
        frames_row=ints, shot_id=np.ones(n, np.int64), paths=["/p/masks.h5"],
        video_sizes={1: (320, 180)}, video_names={1: "a", 2: "b"})


# ----------------------------------------------------------------------------- the table
def test_records_positions_and_descriptions_of_a_table():
    table = made_table([0.9, 0.7, 0.5, 0.3], [1, 2, 1, 2], [APPROVE, NONE, REJECT, NONE])
    assert len(table) == 4
    assert table.index_of([102, 100, 999]).tolist() == [2, 0, -1]
    assert table.record(0) == AuditRecord(100, PRODUCER, 0.9, 1, "approve")
    assert table.record(1).decision is None
    assert table.describe(2) == "a, frame 2\nscore 0.5000 · rank 3 of 4 · reject"
    assert table.describe(3).endswith("undecided")
    assert table.decisions_at(np.array([0, 1, 2])) == ["approve", "clear", "reject"]
    assert table.pixels(0) == MaskPixels(None, 0, "/p/masks.h5", 0, (320, 180))
    assert table.pixels(1).source_size == (0, 0)          # a video of unknown size
    assert made_table([], []).index_of([1]).tolist() == [-1]
    assert decision_codes(["approve", "clear", "reject"]).tolist() == [APPROVE, NONE, REJECT]


def test_filters_by_video_score_and_decision():
    table = made_table([0.9, 0.7, 0.5, 0.3], [1, 2, 1, 2], [APPROVE, NONE, REJECT, NONE])
    assert table.filtered(None, 0.0, 1.0, "All").tolist() == [0, 1, 2, 3]
    assert table.filtered(2, 0.0, 1.0, "All").tolist() == [1, 3]
    assert table.filtered(None, 0.5, 0.7, "All").tolist() == [1, 2]      # the ends are kept
    assert table.filtered(None, 0.0, 1.0, "Approved").tolist() == [0]
    assert table.filtered(None, 0.0, 1.0, "Rejected").tolist() == [2]
    assert table.filtered(1, 0.0, 1.0, "Undecided").tolist() == []


def test_decisions_override_the_score():
    assert is_kept(APPROVE, False) and not is_kept(REJECT, True)
    assert is_kept(NONE, True) and not is_kept(NONE, False)


# ----------------------------------------------------------------------------- cut-off
def test_threshold_and_percent_of_a_cutoff():
    scores = np.array([0.9, 0.7, 0.5, 0.3])
    assert threshold_keeping(scores, 2) == 0.5 and threshold_keeping(scores, 0) == 0.9
    assert threshold_keeping(scores, 4) == pytest.approx(0.299)
    assert percent_above(scores, 0.6) == 50.0 and percent_above(scores, 0.95) == 0.1


def test_cutoff_figures_count_decisions_and_read_the_curve():
    table = made_table([0.9, 0.7, 0.5, 0.3], [1, 2, 1, 2], [REJECT, NONE, NONE, APPROVE])
    whole = SelectionSettings(top_percent=50.0, per_video=False, max_per_video=None)
    curve = decisions_curve([Mask(f, PRODUCER, s, "m.h5", 0, 1, 1)
                             for f, s in zip(table.frame_id.tolist(), table.score.tolist())],
                            {(100, PRODUCER): {"decision": "reject"}})
    figures = cutoff_figures(table, whole, curve)
    assert figures.kept.tolist() == [True, True, False, False]
    assert (figures.n_by_score, figures.n_approved_below, figures.n_rejected_above) == (2, 1, 1)
    assert figures.n_selected == 2 and figures.n_masks == 4
    assert figures.whole_ranking and figures.percent == 50.0
    assert figures.point == CurvePoint(approved_share=0.0, n_audited=1)

    threshold = SelectionSettings(threshold=0.6, per_video=False, max_per_video=None)
    assert cutoff_figures(table, threshold).percent == 50.0          # the share above it
    per_video = SelectionSettings(top_percent=50.0, per_video=True, max_per_video=None)
    figures = cutoff_figures(table, per_video, curve)
    assert figures.kept.tolist() == kept_by_score(table.score, table.video_id, per_video).tolist()
    assert not figures.whole_ranking and figures.point is None       # the curve ranks all masks


def test_curve_point_from_ground_truth_or_decisions():
    n = len(PERCENTS)
    truth = PurityCurve("ground_truth", PERCENTS, list(range(1, n + 1)),
                        [0.5] * (n - 1) + [None], [0.25] * n)
    assert curve_point(truth, 9.2) == CurvePoint(mean_iou=0.5, corloc=0.25)
    assert curve_point(truth, 100.0) is None
    assert curve_point(truth, 0.0) == curve_point(truth, 1.0)        # the first step
    undecided = PurityCurve("decisions", PERCENTS, [1] * n, [None] * n, [None] * n, [None] * n, [0] * n)
    assert curve_point(undecided, 50.0) is None


# ----------------------------------------------------------------------------- a real project
@pytest.fixture(scope="module")
def taught(tmp_path_factory):
    """Two 8-frame sample videos with ground truth and the teacher's 16 masks."""
    base = tmp_path_factory.mktemp("views_audit")
    davis = make_davis(base / "davis", n_videos=2, spec=SampleSpec(n_frames=8, width=96, height=72))
    with Project.create(base / "project") as project:
        project.set_meta("working_size", json.dumps([96, 72]))
        list(add_sources(project, davis_sources(davis)))
        list(run_teacher(project, workers=1))
        producer_id = project.producer(producer_name("videopca")).id
    return base / "project", producer_id


def test_load_table_lists_the_store_s_masks_best_first(taught):
    root, producer_id = taught
    with Project.open(root, write=True) as project:
        masks = project.masks(producer_id)
        best = max(masks, key=lambda m: m.score)
        project.set_decision(best.frame_id, producer_id, "reject")
        videos = {v.id: v for v in project.videos()}
    try:
        table = load_table(root, producer_id)
    finally:
        with Project.open(root, write=True) as project:
            project.set_decision(best.frame_id, producer_id, "clear")
    assert len(table) == len(masks) == 16
    assert table.score.tolist() == sorted((m.score for m in masks), reverse=True)
    assert set(table.frame_id.tolist()) == {m.frame_id for m in masks}
    assert table.decision.tolist() == [REJECT] + [NONE] * 15 and table.frame_id[0] == best.frame_id
    assert table.video_sizes == {v.id: (v.width, v.height) for v in videos.values()}
    assert set(table.video_names.values()) == {v.name for v in videos.values()}
    pixels = table.pixels(0)
    assert pixels.frames_path is not None and pixels.frames_row == pixels.mask_row == best.row

    cancel = CancelToken()
    cancel.cancel()
    with pytest.raises(Cancelled):
        load_table(root, producer_id, cancel)


def test_thumbnail_and_large_view_read_the_pixels(taught):
    root, producer_id = taught
    table = load_table(root, producer_id)
    pixels = table.pixels(0)
    thumb = render_thumbnail(pixels, (48, 36))
    assert thumb.shape == (36, 48, 3) and thumb.dtype == np.uint8
    grey = render_thumbnail(MaskPixels(None, 0, pixels.mask_path, pixels.mask_row, (0, 0)), (48, 36))
    assert grey.shape == (36, 48)                          # no stored frames: the mask alone

    view = read_large_view(root, pixels, int(table.frame_id[0]), int(table.shot_id[0]))
    assert view.frame.shape == (240, 320, 3)               # at least 240 high, the source's 4:3
    assert view.soft.shape == (240, 320) and 0.0 <= view.soft.min() <= view.soft.max() <= 1.0
    assert view.ground_truth is not None and view.ground_truth.dtype == bool


def test_purity_from_the_store_and_from_the_table_agree(taught):
    root, producer_id = taught
    with Project.open(root) as project:
        expected = purity_curve(project, producer_id)
    assert read_purity_curve(root, producer_id) == expected
    assert expected.source == "ground_truth"

    table = load_table(root, producer_id)
    codes = table.decision.copy()
    codes[[0, 3]] = [APPROVE, REJECT]
    decided = {(int(table.frame_id[0]), producer_id): {"decision": "approve"},
               (int(table.frame_id[3]), producer_id): {"decision": "reject"}}
    with Project.open(root) as project:
        from_store = decisions_curve(project.masks(producer_id), decided)
    from_table = table_decisions_curve(table, codes)
    assert from_table == from_store and from_table.n_audited[-1] == 2
    assert table.decision.tolist() == [NONE] * 16          # the table's own codes are untouched
