"""Tests of selection (module C): score-based choice, human decisions, decisions CSV."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from ussl_core.errors import SettingsError, UsslError
from ussl_core.purity import n_kept, rank_best_first
from ussl_core.selection import (
    DECISION_COLUMNS,
    SelectionSettings,
    chosen_by_score,
    export_decisions,
    import_decisions,
    select,
)
from ussl_core.store import Mask, Project


def mask(frame_id: int, score: float, video_id: int = 1) -> Mask:
    return Mask(frame_id, 1, score, "fake.h5", frame_id, video_id, video_id)


# Video 1 has the four best scores, video 2 the four worst.
MASKS = [mask(1, 0.9), mask(2, 0.6), mask(3, 0.8), mask(4, 0.7),
         mask(5, 0.2, 2), mask(6, 0.5, 2), mask(7, 0.3, 2), mask(8, 0.4, 2)]


# ----------------------------------------------------------------------------- chosen_by_score


def over_all(**rule) -> SelectionSettings:
    return SelectionSettings(**rule, per_video=False)


def test_top_percent_over_the_whole_project():
    assert chosen_by_score(MASKS, over_all(top_percent=50)) == {1, 2, 3, 4}
    assert chosen_by_score(MASKS, over_all(top_percent=25)) == {1, 3}
    assert chosen_by_score(MASKS, over_all(top_percent=100)) == set(range(1, 9))
    # 10 % of 8 is 0.8 masks: at least one is kept, the best.
    assert chosen_by_score(MASKS, over_all(top_percent=10)) == {1}


def test_top_percent_per_video():
    settings = SelectionSettings(top_percent=50, per_video=True)
    assert chosen_by_score(MASKS, settings) == {1, 3, 6, 8}
    # At least one from every video, even where the whole-project cut keeps none of it.
    assert chosen_by_score(MASKS, SelectionSettings(top_percent=10, per_video=True)) == {1, 6}
    assert chosen_by_score(MASKS, over_all(top_percent=10)) == {1}
    # Per video is the default.
    assert chosen_by_score(MASKS, SelectionSettings(top_percent=50)) == {1, 3, 6, 8}


def test_threshold_keeps_scores_strictly_above():
    assert chosen_by_score(MASKS, SelectionSettings(top_percent=None, threshold=0.5)) == {1, 2, 3, 4}
    assert chosen_by_score(MASKS, SelectionSettings(top_percent=None, threshold=0.45)) == {1, 2, 3, 4, 6}
    # per_video does not change a threshold.
    per_video = SelectionSettings(top_percent=None, threshold=0.5, per_video=True)
    assert chosen_by_score(MASKS, per_video) == {1, 2, 3, 4}
    assert chosen_by_score(MASKS, SelectionSettings(top_percent=None, threshold=0.95)) == set()


def test_ties_keep_catalog_order():
    tied = [mask(i, 0.5) for i in (10, 11, 12, 13, 14)] + [mask(20, 0.9)]
    # The best first, then the tied ones in the order they were given.
    assert chosen_by_score(tied, over_all(top_percent=50)) == {20, 10, 11}
    reordered = [mask(i, 0.5) for i in (14, 13, 12, 11, 10)] + [mask(20, 0.9)]
    assert chosen_by_score(reordered, over_all(top_percent=50)) == {20, 14, 13}
    assert list(rank_best_first(np.array([0.5, 0.9, 0.5, 0.5, 0.1]))) == [1, 0, 2, 3, 4]


def test_empty_mask_list():
    assert chosen_by_score([], SelectionSettings()) == set()
    assert chosen_by_score([], SelectionSettings(top_percent=None, threshold=0.1)) == set()


def test_n_kept_is_the_ceiling_and_at_least_one():
    assert n_kept(10, 15) == 2          # 1.5 -> 2
    assert n_kept(10, 5) == 1           # 0.5 -> 1
    assert n_kept(1, 3) == 1            # at least one
    assert n_kept(10, 10) == 1          # exactly 1, not 2
    assert n_kept(12.5, 8) == 1
    assert n_kept(12.6, 8) == 2
    assert n_kept(100, 7) == 7
    assert n_kept(10, 0) == 0
    assert n_kept(0, 10) == 0
    # Exact integer arithmetic for every whole percent: no float rounding pushes one over.
    for percent in range(1, 101):
        for n in range(1, 201):
            assert n_kept(percent, n) == max(1, -(-percent * n // 100)), (percent, n)


@pytest.mark.parametrize("kwargs", [
    dict(top_percent=10.0, threshold=0.5),
    dict(top_percent=0),
    dict(top_percent=-5),
    dict(top_percent=100.5),
])
def test_selection_settings_validation(kwargs):
    with pytest.raises(SettingsError):
        SelectionSettings(**kwargs)


def test_selection_settings_valid():
    # The default: the recipe chosen on the development data (the paper's is the top 10 % over all).
    default = SelectionSettings()
    assert (default.top_percent, default.threshold, default.per_video, default.max_per_video) == (
        20.0, None, True, 20)
    assert SelectionSettings(top_percent=100).top_percent == 100
    assert SelectionSettings(top_percent=None, threshold=0.8).threshold == 0.8
    assert SelectionSettings(top_percent=None, threshold=0.0).threshold == 0.0
    assert SelectionSettings(threshold=0.5).top_percent is None  # one given: only that one
    assert SelectionSettings(top_percent=None, threshold=None).top_percent == 20.0
    assert issubclass(SettingsError, UsslError)


# ----------------------------------------------------------------------------- a project


def fake_project(root: Path, videos: dict[str, list[float]], producer: str = "videopca@g1",
                 ) -> tuple[Project, int]:
    """A project whose masks exist in the catalog only (selection never reads arrays)."""
    project = Project.create(root)
    pid = project.ensure_producer(producer, "teacher", 1, {"n_components": 3})
    for name, scores in videos.items():
        names = [f"{i:05d}" for i in range(len(scores))]
        vid = project.add_video(name, "frames", root.parent / name, names, (32, 24), None,
                                [(0, len(scores))])
        shot = project.shots(vid)[0]
        project.commit_shot_masks(pid, shot, root / "arrays" / f"{name}.h5", scores)
    return project, pid


def frame_ids(project: Project, video: str) -> list[int]:
    return [f.id for f in project.frames(project.video_by_name(video).id)]


@pytest.fixture
def project(tmp_path):
    project, pid = fake_project(tmp_path / "p", {
        "a": [0.9, 0.1, 0.8, 0.2, 0.7],
        "b": [0.6, 0.3, 0.5, 0.4, 0.05],
    })
    yield project, pid
    project.close()


def test_select_applies_decisions_over_scores(project):
    project, pid = project
    a, b = frame_ids(project, "a"), frame_ids(project, "b")
    settings = over_all(top_percent=30)          # 3 of 10: a0, a2, a4
    by_score = {a[0], a[2], a[4]}
    assert chosen_by_score(project.masks(pid), settings) == by_score

    project.set_decision(a[2], pid, "reject", "leg cut off")      # kept by score: removed
    project.set_decision(b[4], pid, "approve", "fine after all")  # not kept: added
    project.set_decision(a[0], pid, "approve")                    # kept anyway: no change
    project.set_decision(a[1], pid, "reject")                     # not kept anyway
    project.set_decision(b[1], pid, "approve")
    project.set_decision(b[1], pid, "clear")                      # cleared: no longer approved

    result = select(project, pid, settings)
    expected = {a[0], a[4], b[4]}
    assert result.n_by_score == 3
    assert result.n_selected == 3
    assert result.n_approved_added == 1
    assert result.n_rejected_removed == 1
    active = project.active_selection()
    assert active["id"] == result.selection_id
    assert active["n_selected"] == 3 and active["method"] == "top_percent" and active["value"] == 30
    assert active["n_approved_added"] == 1 and active["n_rejected_removed"] == 1
    assert set(project.selection_members(result.selection_id)) == {(f, pid) for f in expected}

    # Even when the score keeps everything, a rejection stays out; approvals always in.
    everything = select(project, pid, SelectionSettings(top_percent=100))
    members = {f for f, _ in project.selection_members(everything.selection_id)}
    assert members == set(a + b) - {a[2], a[1]}
    assert everything.n_rejected_removed == 2 and everything.n_approved_added == 0
    assert project.active_selection()["id"] == everything.selection_id

    threshold = select(project, pid, SelectionSettings(top_percent=None, threshold=0.55))
    members = {f for f, _ in project.selection_members(threshold.selection_id)}
    assert members == {a[0], a[4], b[0], b[4]}
    assert project.active_selection()["method"] == "threshold"


def test_select_per_video(project):
    project, pid = project
    a, b = frame_ids(project, "a"), frame_ids(project, "b")
    result = select(project, pid, SelectionSettings(top_percent=40, per_video=True))
    members = {f for f, _ in project.selection_members(result.selection_id)}
    assert members == {a[0], a[2], b[0], b[2]}
    assert project.active_selection()["per_video"] == 1


# ----------------------------------------------------------------------------- decisions CSV


def test_decisions_csv_round_trip(tmp_path, project):
    project, pid = project
    a, b = frame_ids(project, "a"), frame_ids(project, "b")
    project.set_decisions([
        (a[0], pid, "approve", "clean, whole object", "2024-01-02T10:00:00"),
        (b[3], pid, "reject", 'background, "sky", leaks', "2024-01-02T10:00:05"),
        (a[4], pid, "reject", None, "2024-01-01T09:00:00"),
    ])
    path = tmp_path / "decisions.csv"
    assert export_decisions(project, path) == 3
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == DECISION_COLUMNS
    # Oldest first, names rather than ids.
    assert rows[1] == ["a", "00004", "videopca@g1", "reject", "2024-01-01T09:00:00", ""]
    assert rows[2] == ["a", "00000", "videopca@g1", "approve", "2024-01-02T10:00:00",
                       "clean, whole object"]
    assert rows[3][:4] == ["b", "00003", "videopca@g1", "reject"]
    assert rows[3][5] == 'background, "sky", leaks'

    # Into another project with the same videos and producer: the same decisions.
    other, other_pid = fake_project(tmp_path / "other", {
        "a": [0.9, 0.1, 0.8, 0.2, 0.7], "b": [0.6, 0.3, 0.5, 0.4, 0.05]})
    try:
        assert import_decisions(other, path) == 3
        names = lambda p: {f.id: (p.video(f.video_id).name, f.name) for f in p.frames()}  # noqa: E731
        mine = {(names(project)[f], d["decision"], d["reason"], d["time"])
                for (f, _), d in project.decisions(pid).items()}
        theirs = {(names(other)[f], d["decision"], d["reason"], d["time"])
                  for (f, _), d in other.decisions(other_pid).items()}
        assert mine == theirs and len(theirs) == 3
        # And back out again: byte for byte.
        again = tmp_path / "again.csv"
        export_decisions(other, again)
        assert again.read_text() == path.read_text()
    finally:
        other.close()


def test_a_spreadsheet_saved_csv_imports(tmp_path, project):
    """Saved again by a spreadsheet: a byte-order mark, CRLF line ends, padded cells."""
    project, pid = project
    a = frame_ids(project, "a")
    project.set_decisions([(a[0], pid, "approve", "clean", "2024-01-02T10:00:00")])
    path = tmp_path / "decisions.csv"
    export_decisions(project, path)
    project.set_decision(a[0], pid, "clear")
    lines = path.read_text().splitlines()
    lines[1] = ", ".join(lines[1].split(","))   # "a, 00000, videopca@g1, approve, ..."
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n")
    assert import_decisions(project, path) == 1
    assert project.decisions(pid)[(a[0], pid)]["decision"] == "approve"


def test_import_applies_clear_and_fills_missing_time(tmp_path, project):
    project, pid = project
    a = frame_ids(project, "a")
    project.set_decision(a[1], pid, "approve")
    path = tmp_path / "in.csv"
    path.write_text("video,frame,producer,decision\n"
                    "a,00001,videopca@g1,clear\n"
                    "a,00002,videopca@g1,approve\n")
    assert import_decisions(project, path) == 2
    decisions = project.decisions(pid)
    assert set(decisions) == {(a[2], pid)}
    assert decisions[(a[2], pid)]["reason"] is None
    assert decisions[(a[2], pid)]["time"]  # stamped now


GOOD_ROW = "a,00000,videopca@g1,approve,2024-01-01T00:00:00,ok\n"
HEADER = ",".join(DECISION_COLUMNS) + "\n"


@pytest.mark.parametrize("bad_row, words", [
    ("a,09999,videopca@g1,approve,,\n", ["line 3", "09999"]),
    ("zz,00000,videopca@g1,approve,,\n", ["line 3", "zz"]),
    ("a,00001,mog2@g1,approve,,\n", ["line 3", "mog2@g1"]),
    ("a,00001,videopca@g1,maybe,,\n", ["line 3", "maybe"]),
])
def test_import_bad_row_applies_nothing(tmp_path, project, bad_row, words):
    project, pid = project
    before = project.decisions()
    path = tmp_path / "bad.csv"
    path.write_text(HEADER + GOOD_ROW + bad_row + GOOD_ROW.replace("00000", "00002"))
    with pytest.raises(UsslError) as info:
        import_decisions(project, path)
    message = str(info.value)
    assert str(path) in message
    for word in words:
        assert word in message
    assert project.decisions() == before == {}


def test_import_missing_column_applies_nothing(tmp_path, project):
    project, _ = project
    path = tmp_path / "nodecision.csv"
    path.write_text("video,frame,producer,reason\na,00000,videopca@g1,ok\n")
    with pytest.raises(UsslError) as info:
        import_decisions(project, path)
    assert str(path) in str(info.value) and "decision" in str(info.value)
    assert project.decisions() == {}


def test_import_unreadable_file(tmp_path, project):
    project, _ = project
    with pytest.raises(UsslError, match="missing.csv"):
        import_decisions(project, tmp_path / "missing.csv")
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"video,frame,producer,decision\n\xff\xfe\x00\x81,1,2,3\n")
    with pytest.raises(UsslError, match="binary.csv"):
        import_decisions(project, binary)
    assert project.decisions() == {}


def test_max_per_video_caps_each_video_and_fills_from_the_others():
    def make(frame: int, video: int, score: float) -> Mask:
        return Mask(frame_id=frame, producer_id=1, score=score, shard="", row=0, video_id=video,
                    shot_id=video)

    # Video 1 holds the six best masks; video 2 the next six.
    masks = [make(i, 1, 0.9 - 0.01 * i) for i in range(6)] + [make(10 + i, 2, 0.5 - 0.01 * i) for i in range(6)]

    def chosen(**settings) -> set[int]:
        return chosen_by_score(masks, SelectionSettings(**{"per_video": False, **settings}))

    assert chosen(top_percent=100 / 3) == {0, 1, 2, 3}
    assert chosen(top_percent=100 / 3, max_per_video=2) == {0, 1, 10, 11}   # then video 2's best
    assert chosen(top_percent=100, max_per_video=3) == {0, 1, 2, 10, 11, 12}  # the caps bind
    assert chosen(top_percent=50, per_video=True, max_per_video=2) == {0, 1, 10, 11}
    assert chosen(top_percent=None, threshold=0.86, max_per_video=3) == {0, 1, 2}
    with pytest.raises(SettingsError):
        SelectionSettings(max_per_video=0)


@pytest.mark.parametrize("threshold", [-1.0, 1.0, 2.0, float("nan")])
def test_thresholds_outside_the_scores_range_are_refused(threshold):
    from ussl_core.generations import GenerationSettings

    for settings_type in (SelectionSettings, GenerationSettings):
        with pytest.raises(SettingsError, match="threshold must be in"):
            settings_type(threshold=threshold)
    with pytest.raises(SettingsError, match=r"top_percent must be in \(0, 100\], not nan"):
        SelectionSettings(top_percent=float("nan"))


def test_a_rule_that_keeps_nothing_leaves_the_active_selection(project):
    project, pid = project
    first = select(project, pid, SelectionSettings(top_percent=50))
    with pytest.raises(SettingsError, match="keeps no mask"):
        select(project, pid, SelectionSettings(threshold=0.95))
    assert project.active_selection()["id"] == first.selection_id
