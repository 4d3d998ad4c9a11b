"""The `ussl` command end to end on generated sample videos: outputs, files, and bad inputs."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from tests.conftest import make_davis, run_ussl, stderr_lines
from ussl_core.sample import SampleSpec, generate_video, write_frame_folder
from ussl_core.store import Project

PRODUCER = "videopca@g1"
N_VIDEOS, N_FRAMES = 2, 20
VIDEOS = ["sample-00", "sample-01"]
STATUS_KEYS = {"project", "videos", "videos_with_ground_truth", "frames", "shots", "producers",
               "selection", "decisions", "models", "running_job", "lock_holder"}
METRIC_KEYS = {"n_images", "max_fbeta", "max_fbeta_threshold", "mae", "max_mean_iou",
               "max_mean_iou_threshold", "corloc", "precision", "jaccard", "n_missing_predictions"}


# ----------------------------------------------------------------------------- helpers


def ok(*args, **kwargs) -> subprocess.CompletedProcess:
    result = run_ussl(*args, **kwargs)
    assert result.returncode == 0, f"ussl {' '.join(map(str, args))}:\n{result.stderr}"
    return result


def one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Assert exit 2 with exactly one stderr line `ussl: error: ...` holding the fragments."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = stderr_lines(result)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ussl: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def status(root: Path) -> dict:
    return json.loads(ok("status", root, "--json").stdout)


def write_decisions(path: Path, rows: list[tuple[str, str, str, str, str]]) -> None:
    """rows of (video, frame, decision, time, reason) for the teacher's masks."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["video", "frame", "producer", "decision", "time", "reason"])
        for video, frame, decision, time_, reason in rows:
            writer.writerow([video, frame, PRODUCER, decision, time_, reason])


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def mask_scores(root: Path) -> dict[tuple[str, str], float]:
    with Project.open(root) as p:
        videos = {v.id: v.name for v in p.videos()}
        frames = {f.id: f.name for f in p.frames()}
        return {(videos[m.video_id], frames[m.frame_id]): m.score
                for m in p.masks(p.producer(PRODUCER).id)}


def active_members(root: Path) -> set[tuple[str, str]]:
    with Project.open(root) as p:
        videos = {v.id: v.name for v in p.videos()}
        frames = {f.id: (videos[f.video_id], f.name) for f in p.frames()}
        selection = p.active_selection()
        return {frames[f] for f, _ in p.selection_members(selection["id"])}


def copy_base(base: Path, dest: Path) -> Path:
    """A private copy of data + project (sources are stored relative to the project)."""
    shutil.copytree(base, dest)
    return dest


@pytest.fixture(scope="module")
def taught(tmp_path_factory) -> Path:
    """BASE with davis/ (two sample videos with ground truth) and proj/ after the teacher."""
    base = tmp_path_factory.mktemp("cli")
    make_davis(base / "davis", n_videos=N_VIDEOS)
    root = base / "proj"
    ok("init", root)
    ok("add", root, base / "davis", "--davis", "--quiet")
    ok("teacher", root, "--workers", "1", "--quiet")
    return base


@pytest.fixture
def taught_copy(taught: Path, tmp_path: Path) -> Path:
    """A writable copy of the taught project; returns its project folder."""
    return copy_base(taught, tmp_path / "copy") / "proj"


# ----------------------------------------------------------------------------- init / add / status / teacher


def test_init_add_status_teacher(sample_davis, tmp_path):
    root = tmp_path / "proj"
    result = ok("init", root)
    assert f"created project {root.resolve()}" in result.stdout
    assert (root / "project.sqlite").is_file()
    one_line_error(run_ussl("init", root), str(root.resolve()), "already exists")

    empty = status(root)
    assert set(empty) == STATUS_KEYS
    assert (empty["videos"], empty["frames"], empty["shots"], empty["producers"]) == (0, 0, 0, [])

    result = ok("add", root, sample_davis, "--davis", "--quiet")
    assert f"{N_VIDEOS} video(s), {N_VIDEOS * N_FRAMES} frames in the project" in result.stdout
    added = status(root)
    assert set(added) == STATUS_KEYS
    assert added["project"] == str(root.resolve())
    assert (added["videos"], added["videos_with_ground_truth"], added["frames"], added["shots"]) == \
        (N_VIDEOS, N_VIDEOS, N_VIDEOS * N_FRAMES, N_VIDEOS)
    assert added["selection"] is None and added["lock_holder"] is None
    assert added["decisions"] == {"approve": 0, "reject": 0}
    # Adding the same sources again is harmless.
    ok("add", root, sample_davis, "--davis", "--quiet")
    assert status(root)["videos"] == N_VIDEOS

    result = ok("teacher", root, "--workers", "1", "--quiet")
    assert f"videopca: masks for {N_VIDEOS * N_FRAMES} of {N_VIDEOS * N_FRAMES} frames" in result.stdout
    taught = status(root)
    assert taught["producers"] == [{"name": PRODUCER, "kind": "teacher", "generation": 1,
                                    "masks": N_VIDEOS * N_FRAMES}]
    assert taught["running_job"] is None
    text = ok("status", root).stdout
    assert f"{N_VIDEOS} shots, {N_VIDEOS * N_FRAMES} frames" in text and PRODUCER in text


def test_teacher_rerun_skips_completed_shots(taught_copy):
    root = taught_copy
    shards = sorted((root / "arrays").rglob("*.h5"))
    before = [p.stat().st_mtime_ns for p in shards]
    result = ok("teacher", root, "--workers", "1")  # with its progress bar
    assert f"0 of {N_VIDEOS} shots to do" in result.stderr
    assert "(nothing left to do)" in result.stdout
    assert sorted((root / "arrays").rglob("*.h5")) == shards
    assert [p.stat().st_mtime_ns for p in shards] == before  # nothing recomputed
    with Project.open(root) as p:
        job = p.jobs(1)[0]
        assert (job["kind"], job["status"]) == ("teacher", "done")
        assert f"{PRODUCER}: 0 of {N_VIDEOS} shots to do" in p.abspath(job["log"]).read_text()


# ----------------------------------------------------------------------------- purity


def test_purity_from_ground_truth(taught, tmp_path):
    root = taught / "proj"
    data = json.loads(ok("purity", root, "--json").stdout)
    assert {"percent", "mean_iou", "corloc", "n_kept", "source"} <= set(data)
    assert data["source"] == "ground_truth"
    assert data["producer"] == PRODUCER
    assert data["percent"] == list(range(1, 101))
    n_kept = data["n_kept"]
    assert len(n_kept) == 100 and all(a <= b for a, b in zip(n_kept, n_kept[1:]))
    assert n_kept[0] >= 1 and n_kept[-1] == N_VIDEOS * N_FRAMES
    assert all(0.0 <= v <= 1.0 for v in data["mean_iou"] + data["corloc"])
    # The teacher is good on the sample, and its best-scored masks are not worse than all.
    assert data["mean_iou"][-1] > 0.5
    assert "approved_share" not in data

    plot, per_video = tmp_path / "curve.png", tmp_path / "per_video.csv"
    text = ok("purity", root, "--plot", plot, "--per-video", per_video).stdout
    assert "from ground truth" in text and "top  10%" in text
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(plot) as image:
        assert image.size[0] > 100 and image.size[1] > 100
    rows = read_csv(per_video)
    assert sorted({r["video"] for r in rows}) == VIDEOS
    for video in VIDEOS:
        mine = [r for r in rows if r["video"] == video]
        assert [int(r["percent"]) for r in mine] == list(range(1, 101))
        assert int(mine[-1]["n_kept"]) == N_FRAMES
        assert all(r["source"] == "ground_truth" and 0 <= float(r["mean_iou"]) <= 1 for r in mine)


def test_purity_and_decisions_without_ground_truth(sample_davis, tmp_path):
    root = tmp_path / "proj"
    ok("init", root)
    frames = sample_davis / "JPEGImages" / "72p"
    ok("add", root, frames / "sample-00", frames / "sample-01", "--quiet")
    ok("teacher", root, "--workers", "1", "--quiet")
    assert status(root)["videos_with_ground_truth"] == 0
    other = tmp_path / "other"  # the same project, for an import of the export below
    shutil.copytree(root, other)

    before = json.loads(ok("purity", root, "--json").stdout)
    assert before["source"] == "decisions"
    assert before["n_audited"][-1] == 0 and before["approved_share"][-1] is None

    rows = [("sample-00", "00003", "approve", "2024-05-01T10:00:00", "clean"),
            ("sample-00", "00011", "reject", "2024-05-01T10:00:01", "half the background"),
            ("sample-01", "00007", "approve", "2024-05-01T10:00:02", "")]
    decisions = tmp_path / "decisions.csv"
    write_decisions(decisions, rows)
    assert "imported 3 decisions" in ok("decisions", root, "--import", decisions).stdout
    assert status(root)["decisions"] == {"approve": 2, "reject": 1}

    data = json.loads(ok("purity", root, "--json").stdout)
    assert data["source"] == "decisions"
    assert {"percent", "n_kept", "approved_share", "n_audited"} <= set(data)
    assert data["percent"] == list(range(1, 101))
    assert all(a <= b for a, b in zip(data["n_kept"], data["n_kept"][1:]))
    assert all(a <= b for a, b in zip(data["n_audited"], data["n_audited"][1:]))
    assert data["n_audited"][-1] == 3
    assert data["approved_share"][-1] == pytest.approx(2 / 3)
    text = ok("purity", root).stdout
    assert "from decisions" in text and "audited" in text

    # Export gives back what was imported; importing the export elsewhere gives it again.
    exported = tmp_path / "exported.csv"
    assert "exported 3 decisions" in ok("decisions", root, "--export", exported).stdout
    expected = sorted(rows)
    got = sorted((r["video"], r["frame"], r["decision"], r["time"], r["reason"])
                 for r in read_csv(exported))
    assert got == expected
    assert all(r["producer"] == PRODUCER for r in read_csv(exported))

    assert status(other)["decisions"] == {"approve": 0, "reject": 0}
    ok("decisions", other, "--import", exported)
    again = tmp_path / "again.csv"
    ok("decisions", other, "--export", again)
    assert read_csv(again) == read_csv(exported)

    # A clear removes a decision; a bad CSV is refused whole, with the line named.
    write_decisions(decisions, [("sample-00", "00003", "clear", "2024-05-02T00:00:00", "")])
    ok("decisions", root, "--import", decisions)
    assert status(root)["decisions"] == {"approve": 1, "reject": 1}
    write_decisions(decisions, [("sample-00", "00004", "approve", "", ""),
                                ("sample-00", "99999", "approve", "", "")])
    one_line_error(run_ussl("decisions", root, "--import", decisions), "line 3", "99999")
    assert status(root)["decisions"] == {"approve": 1, "reject": 1}


# ----------------------------------------------------------------------------- selection


def test_select_top_percent_and_threshold(taught_copy):
    root = taught_copy
    scores = mask_scores(root)
    n = len(scores)
    result = ok("select", root, "--top-percent", "10", "--no-per-video")
    expected = int(np.ceil(0.10 * n))
    assert f"selected {expected} masks of {PRODUCER} ({expected} by score, +0 approved, -0 rejected)" \
        in result.stdout
    members = active_members(root)
    assert len(members) == expected
    worst_kept = min(scores[m] for m in members)
    assert all(scores[k] <= worst_kept for k in scores if k not in members)
    sel = status(root)["selection"]
    assert (sel["method"], sel["value"], sel["size"], sel["per_video"]) == \
        ("top_percent", 10.0, expected, False)

    ok("select", root, "--top-percent", "10", "--per-video")
    members = active_members(root)
    for video in VIDEOS:
        assert sum(1 for v, _ in members if v == video) == int(np.ceil(0.10 * N_FRAMES))

    # No rule given: the settings' default, the top 20 % of each video, at most 20 of one.
    ok("select", root)
    members, sel = active_members(root), status(root)["selection"]
    assert (sel["method"], sel["value"], sel["per_video"]) == ("top_percent", 20.0, True)
    for video in VIDEOS:
        assert sum(1 for v, _ in members if v == video) == min(20, int(np.ceil(0.20 * N_FRAMES)))
    ok("select", root, "--top-percent", "100", "--max-per-video", "3")
    assert len(active_members(root)) == 3 * len(VIDEOS)

    threshold = float(np.median(list(scores.values())))
    ok("select", root, "--threshold", repr(threshold))
    assert active_members(root) == {k for k, s in scores.items() if s > threshold}
    assert status(root)["selection"]["method"] == "threshold"


def test_decisions_override_selection(taught_copy, tmp_path):
    root = taught_copy
    scores = mask_scores(root)
    ok("select", root, "--top-percent", "1", "--no-per-video")
    (top,) = active_members(root)  # 1 percent of 40 masks: the single best one
    low = min(scores, key=scores.get)
    assert scores[low] < scores[top]
    decisions = tmp_path / "d.csv"
    write_decisions(decisions, [(*low, "approve", "", "good despite its score"),
                                (*top, "reject", "", "")])
    ok("decisions", root, "--import", decisions)

    result = ok("select", root, "--top-percent", "1", "--no-per-video")
    assert "(1 by score, +1 approved, -1 rejected)" in result.stdout
    assert active_members(root) == {low}
    sel = status(root)["selection"]
    assert (sel["size"], sel["approved_added"], sel["rejected_removed"]) == (1, 1, 1)

    # Also with every mask kept by score: the rejected one is still out.
    ok("select", root, "--top-percent", "100", "--max-per-video", "0")
    members = active_members(root)
    assert low in members and top not in members and len(members) == len(scores) - 1


# ----------------------------------------------------------------------------- export / evaluate


def test_export_masks_and_evaluate(taught, tmp_path):
    root, out = taught / "proj", tmp_path / "masks"
    result = ok("export", root, "--masks", out, "--quiet")
    assert f"exported {N_VIDEOS * N_FRAMES} masks of {PRODUCER}" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == VIDEOS
    for video in VIDEOS:
        files = sorted((out / video).iterdir())
        assert [f.name for f in files] == [f"{i:05d}.png" for i in range(N_FRAMES)]
        for f in files[:3]:
            with Image.open(f) as image:
                assert image.mode == "L"            # 8-bit grey
                assert image.size == (96, 72)       # the frames' original size, not 300x300
            array = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
            assert array.dtype == np.uint8 and array.shape == (72, 96)
            assert array.max() > 128  # a mask, not an empty image

    data = json.loads(ok("evaluate", "--pred", out, "--gt", taught / "davis" / "Annotations" / "72p",
                         "--json").stdout)
    assert set(data) == METRIC_KEYS
    assert data["n_images"] == N_VIDEOS * N_FRAMES and data["n_missing_predictions"] == 0
    assert data["max_mean_iou"] > 0.5
    assert 0.0 <= data["mae"] < 0.2
    text = ok("evaluate", "--pred", out, "--gt", taught / "davis" / "Annotations" / "72p").stdout
    assert "max_mean_iou" in text

    # A missing prediction counts as an empty mask rather than being skipped.
    (out / VIDEOS[0] / "00000.png").unlink()
    fewer = json.loads(ok("evaluate", "--pred", out, "--gt",
                          taught / "davis" / "Annotations" / "72p", "--json").stdout)
    assert fewer["n_missing_predictions"] == 1 and fewer["n_images"] == N_VIDEOS * N_FRAMES
    one_line_error(run_ussl("evaluate", "--pred", tmp_path / "nope", "--gt", out),
                   str(tmp_path / "nope"))


# ----------------------------------------------------------------------------- bad inputs


def _truncated_avi(path: Path) -> Path:
    frames, _ = generate_video(SampleSpec(n_frames=30, width=96, height=72))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (96, 72))
    assert writer.isOpened()
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.4)])
    return path


def _cut(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _bad_source(kind: str, where: Path) -> tuple[Path, str]:
    """A bad source of the given kind and the words its error must contain."""
    if kind == "missing":
        return where / "no such video.mp4", "does not exist"
    if kind == "empty-mp4":
        path = where / "empty.mp4"
        path.write_bytes(b"")
        return path, "empty"
    if kind == "text-mp4":
        path = where / "notes.mp4"
        path.write_text("these are my notes, not a video\n" * 20)
        return path, "not a readable video"
    if kind == "truncated-avi":
        return _truncated_avi(where / "cut.avi"), "truncated"
    if kind == "no-images":
        folder = where / "no images"
        folder.mkdir()
        (folder / "readme.txt").write_text("nothing to see")
        return folder, "no frames"
    if kind == "truncated-jpeg":
        frames, _ = generate_video(SampleSpec(n_frames=8, width=96, height=72))
        folder = where / "frames with a cut jpeg"
        write_frame_folder(folder, frames)
        _cut(folder / "00005.jpg")
        return folder, "truncated"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["missing", "empty-mp4", "text-mp4", "truncated-avi",
                                  "no-images", "truncated-jpeg"])
def test_add_bad_source_is_one_line_error(taught_copy, tmp_path, kind):
    root = taught_copy
    before = status(root)
    with Project.open(root) as p:
        before_jobs = p.jobs()
    source, words = _bad_source(kind, tmp_path)
    line = one_line_error(run_ussl("add", root, source), str(source), words)
    if kind == "truncated-jpeg":
        assert "00005.jpg" in line
    after = status(root)
    assert (after["videos"], after["frames"], after["shots"], after["producers"]) == \
        (before["videos"], before["frames"], before["shots"], before["producers"])
    with Project.open(root, write=True) as p:  # still opens for writing: lock released
        assert [v.name for v in p.videos()] == VIDEOS
        # Refused before anything was read: not even a failed job is left in the history.
        assert [job["kind"] for job in p.jobs()] == [job["kind"] for job in before_jobs]


def test_bad_source_among_good_ones_keeps_the_good_ones_added_before(taught_copy, tmp_path):
    root = taught_copy
    extra = tmp_path / "extra"
    frames, _ = generate_video(SampleSpec(n_frames=6, width=96, height=72, seed=7))
    write_frame_folder(extra, frames)
    missing = tmp_path / "missing"
    one_line_error(run_ussl("add", root, extra, missing, "--quiet"), str(missing))
    assert status(root)["videos"] == N_VIDEOS + 1


def test_truncated_jpeg_found_by_the_teacher(sample_davis, tmp_path):
    root = tmp_path / "proj"
    ok("init", root)
    ok("add", root, sample_davis, "--davis", "--quiet")
    # A shorter third video, so that the teacher does it last; it is cut after adding.
    late = tmp_path / "late"
    frames, _ = generate_video(SampleSpec(n_frames=10, width=96, height=72, seed=9))
    write_frame_folder(late, frames)
    ok("add", root, late, "--quiet")
    _cut(late / "00006.jpg")

    result = run_ussl("teacher", root, "--workers", "1", "--quiet")
    one_line_error(result, str(late / "00006.jpg"), "truncated")
    st = status(root)
    assert st["producers"][0]["masks"] == N_VIDEOS * N_FRAMES  # the shots before are kept
    with Project.open(root) as p:
        assert len(p.completed_shots(p.producer(PRODUCER).id)) == N_VIDEOS
        assert p.jobs(1)[0]["status"] == "failed"
    # The same one-line error when the worker processes meet it.
    result = run_ussl("teacher", root, "--workers", "2", "--quiet", timeout=120)
    one_line_error(result, str(late / "00006.jpg"), "truncated")
    assert status(root)["producers"][0]["masks"] == N_VIDEOS * N_FRAMES

    write_frame_folder(late, frames)  # repaired: the re-run does the missing shot only
    ok("teacher", root, "--workers", "1", "--quiet")
    assert status(root)["producers"][0]["masks"] == N_VIDEOS * N_FRAMES + 10


def test_bad_arguments_are_one_line_errors(taught_copy, tmp_path):
    root = taught_copy
    one_line_error(run_ussl("select", root, "--top-percent", "0"), "top_percent must be in (0, 100]", "0")
    one_line_error(run_ussl("select", root, "--top-percent", "150"), "top_percent must be in (0, 100]")
    one_line_error(run_ussl("teacher", root, "--workers", "1", "--settings", '{"bogus": 1}'),
                   "bogus")
    one_line_error(run_ussl("teacher", root, "--workers", "1", "--settings", "{not json"),
                   "--settings")
    one_line_error(run_ussl("status", tmp_path / "nowhere"), str(tmp_path / "nowhere"))
    one_line_error(run_ussl("purity", root, "--producer", "nobody"), "nobody")
    empty = tmp_path / "empty"
    ok("init", empty)
    one_line_error(run_ussl("select", empty, "--top-percent", "10"), "no teacher masks")
    # None of these changed the project.
    st = status(root)
    assert st["selection"] is None
    assert st["producers"][0]["masks"] == N_VIDEOS * N_FRAMES


def test_console_script_is_installed():
    exe = shutil.which("ussl")
    if exe is None:
        pytest.skip("the ussl console script is not on PATH (package not installed)")
    result = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("ussl ")
