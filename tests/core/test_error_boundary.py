"""The CLI's error boundary: errors of the operating system and of libraries end in one line
`ussl: error: <path>: <cause>` and exit 2 (the traceback only with --debug); a closed pipe
ends quietly."""

from __future__ import annotations

import errno
import signal
import subprocess
import sys

import pytest

from ussl_core import cli
from ussl_core.errors import describe_os_error
from ussl_core.store import Project


@pytest.mark.parametrize("code, cause", [(errno.ENOSPC, "the disk is full"), (errno.EROFS, "read-only"),
                                         (errno.EACCES, "permission denied"), (errno.ENOENT, "not found"),
                                         (errno.ELOOP, "link loop")])
def test_os_errors_name_the_path_and_the_cause(code, cause):
    line = describe_os_error(OSError(code, "raw text", "/data/out/a.png"))
    assert line.startswith("/data/out/a.png: ") and cause in line
    assert describe_os_error(OSError(errno.EXDEV, "Invalid cross-device link", "/a", None, "/b")) == \
        "/a -> /b: Invalid cross-device link"


def failing(exc: BaseException):
    def command(args):
        raise exc
    return command


@pytest.mark.parametrize("exc, fragment", [
    (OSError(errno.ENOSPC, "No space left on device", "/p/arrays/x.h5"), "/p/arrays/x.h5: the disk is full"),
    (PermissionError(errno.EACCES, "Permission denied", "/p/models"), "/p/models: permission denied"),
])
def test_main_turns_os_errors_into_one_line(monkeypatch, capsys, tmp_path, exc, fragment):
    Project.create(tmp_path / "p").close()
    monkeypatch.setattr(cli, "cmd_status", failing(exc))
    assert cli.main(["status", str(tmp_path / "p")]) == cli.EXIT_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"ussl: error: {fragment}" + err[0].split(fragment, 1)[1]] and len(err) == 1
    # --debug keeps the traceback for a bug report, then the same line.
    assert cli.main(["--debug", "status", str(tmp_path / "p")]) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith(f"ussl: error: {fragment}")


def test_a_closed_pipe_ends_quietly(tmp_path):
    Project.create(tmp_path / "p").close()
    child = subprocess.Popen([sys.executable, "-m", "ussl_core.cli", "status", str(tmp_path / "p")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child.stdout.close()            # the reader is gone before anything is written
    _, err = child.communicate(timeout=60)
    assert child.returncode == cli.EXIT_BROKEN_PIPE and err == b""


@pytest.mark.parametrize("argv, fragment", [
    (["teacher", "{p}", "--settings", '{"n_components": -1}'], "n_components must be at least 1"),
    (["teacher", "{p}", "--settings", "[1, 2]"], "must be a JSON object"),
    (["teacher", "{p}", "--settings", '{"blur_sigma": "wide"}'], "videopca settings"),
    (["teacher", "{p}", "--settings", '{"var_threshold": 0}', "--teacher", "mog2"], "var_threshold"),
    (["select", "{p}", "--threshold", "nan"], "threshold must be in [0, 1)"),
    (["select", "{p}", "--threshold", "2"], "threshold must be in [0, 1)"),
])
def test_bad_settings_are_one_line_and_change_nothing(tmp_path, capsys, argv, fragment):
    Project.create(tmp_path / "p").close()
    before = (tmp_path / "p" / "project.sqlite").read_bytes()
    assert cli.main([a.replace("{p}", str(tmp_path / "p")) for a in argv]) == cli.EXIT_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ussl: error: ") and fragment in err[0]
    assert (tmp_path / "p" / "project.sqlite").read_bytes() == before


@pytest.mark.parametrize("argv", [["teacher", "p", "--workers", "-2"], ["add", "p", "v.mp4", "--max-shot-length", "0"],
                                  ["next-generation", "p", "--workers", "0"]])
def test_counts_below_one_are_refused_by_the_parser(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2 and "must be at least 1" in capsys.readouterr().err


def test_the_job_child_reports_os_errors_as_one_line(monkeypatch, capsys):
    import json

    from ussl_core import jobs

    def full_disk(spec, emit, cancel):
        raise OSError(errno.ENOSPC, "No space left on device", "/p/arrays/masks/x.h5")

    monkeypatch.setattr(jobs, "run_job", full_disk)
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGUSR1)}   # main() sets them
    try:
        assert jobs.main([json.dumps({"kind": "teacher", "project": "/p"})]) == 2
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last == {"error": "/p/arrays/masks/x.h5: the disk is full; free some space and run the same "
                             "command again"}


@pytest.mark.parametrize("content", [b"", b"garbage bytes, not a zip", "truncated"])
def test_a_broken_model_file_says_what_it_is(tmp_path, capsys, content):
    from tests.tiny_models import save_tiny_models

    model = tmp_path / "broken.keras"
    if content == "truncated":
        whole = save_tiny_models(tmp_path / "models")["unet"].read_bytes()
        model.write_bytes(whole[: len(whole) // 2])
    else:
        model.write_bytes(content)
    photo = tmp_path / "a.png"
    import cv2
    import numpy as np

    cv2.imwrite(str(photo), np.zeros((20, 30, 3), np.uint8))
    assert cli.main(["segment", str(photo), "--model", str(model), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"ussl: error: {model}: not a ")
    assert "File not found" not in err[0]


def test_a_keras_model_that_is_not_a_segmenter_is_refused(tmp_path, capsys):
    import keras

    other = keras.Sequential([keras.Input((10,)), keras.layers.Dense(2)])
    other.save(tmp_path / "classifier.keras")
    photo = tmp_path / "a.png"
    import cv2
    import numpy as np

    cv2.imwrite(str(photo), np.zeros((20, 30, 3), np.uint8))
    assert cli.main(["segment", str(photo), "--model", str(tmp_path / "classifier.keras"),
                     "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a ussl segmentation model" in err[0]


def test_a_frame_folder_of_mixed_sizes_is_refused_but_an_image_folder_is_not(tmp_path, capsys):
    import cv2
    import numpy as np

    folder = tmp_path / "frames"
    folder.mkdir()
    for i, height in enumerate((20, 20, 20, 24)):
        cv2.imwrite(str(folder / f"{i:05d}.jpg"), np.zeros((height, 30, 3), np.uint8))
    Project.create(tmp_path / "p").close()
    assert cli.main(["add", str(tmp_path / "p"), str(folder), "--quiet"]) == cli.EXIT_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{folder / '00003.jpg'}: is 30x24, but the first frame" in err[0]
    # Unrelated images are allowed their own sizes.
    assert cli.main(["add", str(tmp_path / "p"), str(folder), "--images", "--quiet"]) == 0


def test_evaluating_against_photographs_is_refused(tmp_path, capsys):
    import cv2
    import numpy as np

    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir()
    gt.mkdir()
    rng = np.random.default_rng(0)
    cv2.imwrite(str(pred / "a.png"), np.zeros((20, 30), np.uint8))
    cv2.imwrite(str(gt / "a.png"), rng.integers(0, 256, (20, 30, 3), dtype=np.uint8))   # a "photograph"
    assert cli.main(["evaluate", "--pred", str(pred), "--gt", str(gt)]) == cli.EXIT_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{gt / 'a.png'}: not a ground-truth mask" in err[0]


def test_a_symbolic_link_loop_is_one_line(tmp_path, capsys):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    assert cli.main(["status", str(tmp_path / "a")]) == cli.EXIT_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"ussl: error: {tmp_path / 'a'}: too many symbolic links (a link loop?)"]


def test_a_catalog_error_says_its_cause_from_sqlites_own_code(tmp_path):
    import sqlite3

    from ussl_core.errors import describe_catalog_error

    catalog = tmp_path / "project.sqlite"
    sqlite3.connect(catalog).execute("CREATE TABLE t (x)")
    read_only = sqlite3.connect(f"{catalog.as_uri()}?mode=ro", uri=True)
    with pytest.raises(sqlite3.Error) as refused:
        read_only.execute("INSERT INTO t VALUES (1)")
    assert describe_catalog_error(catalog, refused.value) == \
        f"{catalog}: read-only (the disk, the folder or the file)"
    other = tmp_path / "other.sqlite"
    other.write_bytes(b"not a database, but long enough to be read as one" * 40)
    with pytest.raises(sqlite3.Error) as foreign:
        sqlite3.connect(other).execute("SELECT * FROM sqlite_master")
    assert describe_catalog_error(other, foreign.value) == f"{other}: not a ussl catalog (another kind of file)"
