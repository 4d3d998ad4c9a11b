"""Build the one-folder bundle with PyInstaller, then smoke-test it; prints one JSON summary.

    python packaging/build.py [--dist DIR] [--work DIR] [--clean] [--skip-build] [--no-train]

1. Installs PyInstaller (the `packaging` extra) when it is missing, renders the icons when they
   are missing (packaging/make_icons.py) and runs PyInstaller on packaging/ussl.spec: the bundle
   lands in DIST/ussl (default packaging/dist/ussl; build files in packaging/build).
2. Smoke-tests the bundle on a small generated project, using nothing of this interpreter but
   the project's creation and the selection step:
   - job children through the bundle's `--job`: add (the generated videos), teacher (VideoPCA,
     two spawned worker processes, so multiprocessing works frozen), and, unless --no-train,
     train (one epoch of the compact LowRes-Net: TensorFlow and Keras load from the bundle),
     then a longer train job stopped by SIGTERM at its first progress event (the app's Cancel);
   - the GUI with QT_QPA_PLATFORM=offscreen and `--smoke-test PROJECT`, twice: exit code 0, the
     project opened, the panels there.
Exits 0 when every check passed. The JSON has bundle_size_mb, build_s, startup_s (process start
to the window up with the project open, as the app measures it, on the second start; the
first is startup_first_s: cold only if the bundle was not in the page cache), each job's
seconds, and the checks.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "packaging" / "ussl.spec"
EXE_NAME = "ussl-gui"


def ensure_pyinstaller() -> None:
    if importlib.util.find_spec("PyInstaller") is None:
        subprocess.run([sys.executable, "-m", "pip", "install", "pyinstaller>=6.11"], check=True)


def build(dist: Path, work: Path, clean: bool = False) -> float:
    ensure_pyinstaller()
    subprocess.run([sys.executable, str(ROOT / "packaging" / "make_icons.py")], check=True)
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN",
                    *(["--clean"] if clean else []),
                    "--distpath", str(dist), "--workpath", str(work), str(SPEC)],
                   check=True, cwd=ROOT)
    return time.monotonic() - start


def folder_size_mb(folder: Path) -> float:
    total = sum(p.lstat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
    return round(total / 2**20, 1)


def run_job(exe: Path, spec: dict, timeout: float) -> tuple[float, dict]:
    """Run one job child through the bundle's `--job`; its closing JSON line and the seconds."""
    from ussl_core.jobs import child_environment

    start = time.monotonic()
    result = subprocess.run([str(exe), "--job", json.dumps(spec)], capture_output=True, text=True,
                            env=child_environment(1), timeout=timeout)
    seconds = round(time.monotonic() - start, 1)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    outcome = json.loads(lines[-1]) if lines else {}
    if result.returncode != 0 or outcome.get("result") != "done":
        raise SystemExit(f"{spec['kind']} job from the bundle failed (exit {result.returncode}):\n"
                         f"{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return seconds, outcome


def cancel_job(exe: Path, spec: dict, timeout: float) -> float:
    """Start a job through `--job`, SIGTERM it at its first progress event (what the app's
    Cancel does): it must stop cooperatively with {"cancelled": true}. Seconds to stop."""
    from ussl_core.jobs import child_environment

    process = subprocess.Popen([str(exe), "--job", json.dumps(spec)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=child_environment(1))
    assert process.stdout is not None
    try:
        for line in process.stdout:
            if line.startswith('{"progress"'):
                break
        process.terminate()
        start = time.monotonic()
        rest, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise SystemExit(f"{spec['kind']} job from the bundle did not stop on SIGTERM") from None
    lines = [line for line in rest.splitlines() if line.startswith("{")]
    if process.returncode != 130 or not lines or json.loads(lines[-1]) != {"cancelled": True}:
        raise SystemExit(f"cancelling a {spec['kind']} job from the bundle failed "
                         f"(exit {process.returncode}):\n{rest[-2000:]}\n{stderr[-4000:]}")
    return round(time.monotonic() - start, 1)


def smoke_gui(exe: Path, project: Path, settings_home: Path) -> dict:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_CONFIG_HOME": str(settings_home)}
    start = time.monotonic()
    result = subprocess.run([str(exe), str(project), "--smoke-test"], capture_output=True,
                            text=True, env=env, timeout=300)
    wall = round(time.monotonic() - start, 2)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    report = json.loads(lines[-1]) if lines else {}
    if result.returncode != 0 or report.get("opened") != str(project.resolve()) \
            or not report.get("panels"):
        raise SystemExit(f"GUI smoke test failed (exit {result.returncode}): {report}\n"
                         f"{result.stderr[-4000:]}")
    return {**report, "wall_s": wall}


def smoke_test(exe: Path, train: bool) -> dict:
    sys.path.insert(0, str(ROOT))
    from ussl_core.sample import SampleSpec, write_sample_davis
    from ussl_core.selection import SelectionSettings, select
    from ussl_core.store import Project
    from ussl_core.teacher.runner import producer_name

    checks: dict = {}
    with tempfile.TemporaryDirectory(prefix="ussl-smoke-") as tmp:
        tmp = Path(tmp)
        data = write_sample_davis(tmp / "sample-data", n_videos=2,
                                  spec=SampleSpec(n_frames=16, width=96, height=72))
        project = tmp / "project"
        Project.create(project).close()
        checks["add_s"], _ = run_job(exe, {"kind": "add", "project": str(project),
                                           "sources": [str(data)], "davis": True}, 300)
        checks["teacher_s"], _ = run_job(exe, {"kind": "teacher", "project": str(project),
                                               "teacher": "videopca", "workers": 2}, 600)
        with Project.open(project, write=True, holder="ussl smoke test") as store:
            checks["videos"] = len(store.videos())
            producer = store.producer(producer_name("videopca"))
            checks["teacher_masks"] = store.mask_count(producer.id)
            if train:
                select(store, producer.id, SelectionSettings(top_percent=50))
        if checks["videos"] != 2 or not checks["teacher_masks"]:
            raise SystemExit(f"the bundle's jobs left an unexpected project: {checks}")
        if train:
            checks["train_s"], _ = run_job(exe, {
                "kind": "train", "project": str(project), "archs": ["lowres"], "preset": "compact",
                "settings": {"epochs": 1, "batch_size": 4}}, 600)
            models = sorted(p.name for p in (project / "models").glob("*.keras"))
            if not models:
                raise SystemExit("the bundle's train job saved no model")
            checks["models"] = models
            checks["cancel_s"] = cancel_job(exe, {
                "kind": "train", "project": str(project), "archs": ["fconv"], "preset": "compact",
                "settings": {"epochs": 50, "batch_size": 4}}, 120)
        first = smoke_gui(exe, project, tmp / "config")
        again = smoke_gui(exe, project, tmp / "config")
    checks["gui"] = again
    checks["startup_first_s"] = first["startup_s"]
    checks["startup_s"] = again["startup_s"]
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dist", type=Path, default=ROOT / "packaging" / "dist")
    parser.add_argument("--work", type=Path, default=ROOT / "packaging" / "build")
    parser.add_argument("--clean", action="store_true",
                        help="build from scratch (PyInstaller's caches in --work are dropped)")
    parser.add_argument("--skip-build", action="store_true", help="smoke-test the existing bundle")
    parser.add_argument("--no-train", action="store_true", help="skip the TensorFlow train job")
    args = parser.parse_args(argv)
    bundle = args.dist.resolve() / "ussl"
    summary: dict = {"bundle": str(bundle)}
    if not args.skip_build:
        if bundle.exists():
            shutil.rmtree(bundle)
        summary["build_s"] = round(build(args.dist.resolve(), args.work.resolve(), args.clean), 1)
    exe = bundle / EXE_NAME
    if not exe.exists():
        raise SystemExit(f"{exe}: no bundle; build it first (without --skip-build)")
    summary["bundle_size_mb"] = folder_size_mb(bundle)
    summary.update(smoke_test(exe, train=not args.no_train))
    summary["ok"] = True
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
