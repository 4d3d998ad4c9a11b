"""Packaging: the PyInstaller spec loads and names files that exist, the icons and the desktop
entry are valid, and what the frozen bundle relies on (`--job` dispatch, `--smoke-test`) works
on the unfrozen path. The bundle itself is built and smoke-tested by packaging/build.py."""

from __future__ import annotations

import configparser
import importlib.util
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402

from app.main import JOB_FLAG, main  # noqa: E402
from app.workers import JobWorker, job_command  # noqa: E402
from ussl_core.sample import SampleSpec, write_sample_davis  # noqa: E402
from ussl_core.store import Project  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "packaging" / "ussl.spec"
LAUNCHER = ROOT / "packaging" / "launcher.py"
DESKTOP = ROOT / "resources" / "ussl.desktop"


def load_module(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_spec() -> dict[str, SimpleNamespace]:
    """Execute the spec with stand-ins for PyInstaller's classes; what each was called with."""
    calls: dict[str, SimpleNamespace] = {}

    def stand_in(kind: str):
        def record(*args, **kwargs):
            calls[kind] = SimpleNamespace(args=args, kwargs=kwargs, pure=[], scripts=[],
                                          binaries=[], datas=[], zipfiles=[])
            return calls[kind]
        return record

    namespace = {"__name__": "__main__", "__file__": str(SPEC), "SPECPATH": str(SPEC.parent),
                 **{kind: stand_in(kind) for kind in ("Analysis", "PYZ", "EXE", "COLLECT")}}
    exec(compile(SPEC.read_text(encoding="utf-8"), str(SPEC), "exec"), namespace)
    return calls


def test_spec_loads_and_names_files_that_exist():
    calls = run_spec()
    assert set(calls) == {"Analysis", "PYZ", "EXE", "COLLECT"}
    analysis = calls["Analysis"]
    assert [Path(s) for s in analysis.args[0]] == [LAUNCHER] and LAUNCHER.is_file()
    assert str(ROOT) in analysis.kwargs["pathex"]
    # The resources and the models shipped with ussl travel with the app.
    assert analysis.kwargs["datas"] == [(str(ROOT / "resources"), "resources"),
                                        (str(ROOT / "ussl_core" / "builtin"), "ussl_core/builtin")]
    assert (ROOT / "resources" / "ussl.desktop").is_file()
    assert (ROOT / "ussl_core" / "builtin" / "card.json").is_file()
    hidden = analysis.kwargs["hiddenimports"]
    for name in ("ussl_core.jobs", "ussl_core.teacher.runner", "ussl_core.training",
                 "ussl_core.models.layers", "app.main", "app.panels.registry"):
        assert name in hidden
    assert analysis.kwargs["module_collection_mode"]["ussl_core"] == "py+pyz"  # AutoGraph reads sources
    missing = [name for name in hidden if importlib.util.find_spec(name) is None]
    assert missing == []
    exe = calls["EXE"].kwargs
    assert exe["name"] == "ussl-gui" and exe["console"] is False and exe["exclude_binaries"]
    assert Path(exe["icon"]).is_file()
    assert calls["COLLECT"].kwargs["name"] == "ussl"


def test_icons_are_rendered_at_every_size():
    make_icons = load_module(ROOT / "packaging" / "make_icons.py")
    for size in make_icons.SIZES:
        data = make_icons.png_path(size).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert struct.unpack(">II", data[16:24]) == (size, size)  # IHDR width, height
    ico = make_icons.ICO.read_bytes()
    reserved, kind, count = struct.unpack("<HHH", ico[:6])
    assert (reserved, kind, count) == (0, 1, len(make_icons.SIZES))


def test_desktop_entry_is_valid():
    validator = shutil.which("desktop-file-validate")
    if validator:
        result = subprocess.run([validator, str(DESKTOP)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
        problems = [line for line in (result.stdout + result.stderr).splitlines()
                    if ": error:" in line or ": warning:" in line]
        assert problems == []
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # keys are case-sensitive
    parser.read(DESKTOP, encoding="utf-8")
    entry = parser["Desktop Entry"]
    for key in ("Type", "Name", "Exec", "Icon"):
        assert entry.get(key, "").strip(), f"{DESKTOP}: no {key}"
    assert entry["Type"] == "Application"
    assert entry["Categories"].endswith(";")
    # The entry runs the GUI command the bundle and `pip install` both provide, with our icon.
    assert entry["Exec"].split()[0] == run_spec()["EXE"].kwargs["name"] == "ussl-gui"
    assert 'ussl-gui = "app.main:main"' in (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert entry["Icon"] == "ussl"
    assert (ROOT / "resources" / "icons" / "hicolor" / "48x48" / "apps" / "ussl.png").is_file()


def test_job_command_uses_the_bundle_executable_when_frozen(monkeypatch):
    spec = {"kind": "add", "project": "/p", "sources": ["/v"]}
    assert job_command(spec) == [sys.executable, "-m", "ussl_core.jobs", json.dumps(spec)]
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", "/opt/ussl/ussl-gui")
    assert job_command(spec) == ["/opt/ussl/ussl-gui", JOB_FLAG, json.dumps(spec)]


def test_job_flag_runs_the_job_runner_not_the_gui(tmp_path, capsys):
    saved = signal.getsignal(signal.SIGTERM)  # the job runner turns SIGTERM into a cancel
    try:
        code = main([JOB_FLAG, json.dumps({"kind": "nope", "project": str(tmp_path)})])
    finally:
        signal.signal(signal.SIGTERM, saved)
    assert code == 2
    assert "unknown step 'nope'" in json.loads(capsys.readouterr().out.splitlines()[-1])["error"]


def test_frozen_job_worker_runs_a_job_through_the_launcher(qapp, tmp_path, monkeypatch):
    """JobWorker as in the bundle: sys.frozen set, sys.executable the bundle's launcher."""
    fake_bundle = tmp_path / "ussl-gui"
    fake_bundle.write_text(f"#!{sys.executable}\nimport runpy, sys\nsys.path.insert(0, {str(ROOT)!r})\n"
                           f"runpy.run_path({str(LAUNCHER)!r}, run_name='__main__')\n")
    fake_bundle.chmod(0o755)
    data = write_sample_davis(tmp_path / "davis", n_videos=1, spec=SampleSpec(n_frames=6, width=64, height=48))
    project = tmp_path / "project"
    Project.create(project).close()
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", str(fake_bundle))
    worker = JobWorker({"kind": "add", "project": str(project), "sources": [str(data)], "davis": True})
    results, errors = [], []
    worker.result.connect(results.append)
    worker.error.connect(lambda message, details: errors.append(message + "\n" + details))
    worker.run()  # in this thread: the child is the fake bundle with --job
    assert errors == [] and results == ["done"]
    assert worker.process.args[1] == JOB_FLAG
    with Project.open(project) as opened:
        assert [v.name for v in opened.videos()] == ["sample-00"]


def run_smoke_test(*args: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess, dict]:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_CONFIG_HOME": str(tmp_path / "config")}
    result = subprocess.run([sys.executable, "-m", "app", *args, "--smoke-test"], capture_output=True,
                            text=True, env=env, timeout=120, cwd=ROOT)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    return result, (json.loads(lines[-1]) if lines else {})


def test_smoke_test_flag_opens_the_project_and_exits(tmp_path):
    from app.panels.registry import PANELS

    project = tmp_path / "project"
    Project.create(project).close()
    result, report = run_smoke_test(str(project), tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert report["opened"] == str(project.resolve())
    assert report["panels"] == [panel.title for panel in PANELS]
    assert 0 < report["startup_s"] < 120 and report["frozen"] is False
    assert not (tmp_path / "config" / "ussl").exists()  # the user's recent projects untouched


def test_smoke_test_flag_fails_fast_on_a_folder_that_is_no_project(tmp_path):
    result, report = run_smoke_test(str(tmp_path / "nothing"), tmp_path=tmp_path)
    assert result.returncode == 1 and report["opened"] is None and report["error"]


@pytest.mark.parametrize("argv", [["--help"]])
def test_help_lists_the_smoke_test_flag(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0 and "--smoke-test" in capsys.readouterr().out


def test_a_plain_install_carries_the_shipped_models(tmp_path):
    """`pip install .` (not editable) installs ussl_core/builtin: the wheel holds every model
    and card that the card names."""
    import json
    import subprocess
    import sys
    import zipfile

    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "-q", "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    wheel = next(tmp_path.glob("ussl-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    card = json.loads(zipfile.ZipFile(wheel).read("ussl_core/builtin/card.json"))
    for model in [*card["students"], card["evalseg"]]:
        assert f"ussl_core/builtin/{model}.keras" in names
        assert f"ussl_core/builtin/{model}.json" in names
