"""The light modules must not pull in TensorFlow, Keras or Qt (worker processes and the CLI
start fast; ussl_core never imports Qt)."""

from __future__ import annotations

import json
import subprocess
import sys

LIGHT_MODULES = [
    "ussl_core.media",
    "ussl_core.store",
    "ussl_core.store.model_files",
    "ussl_core.teacher",
    "ussl_core.teacher.runner",
    "ussl_core.selection",
    "ussl_core.purity",
    "ussl_core.metrics",
    "ussl_core.postprocess",
    "ussl_core.ingest",
    "ussl_core.generations",
    "ussl_core.segment",
    "ussl_core.builtin",
    "ussl_core.cli",
    "ussl_core.names",
    "ussl_core.steps",
    "ussl_core.jobs",
    "ussl_core.settings",
    "ussl_core.cluster",
    "ussl_core.multiworker",
    "ussl_core.views.videos",
    "ussl_core.views.audit",
    "ussl_core.views.predict",
    "ussl_core.views.browse",
]
HEAVY = ["tensorflow", "keras", "PySide6", "distributed"]

PROBE = """
import importlib, json, sys
heavy = {heavy!r}
report = {{}}
for name in {modules!r}:
    importlib.import_module(name)
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in heavy)
    report[name] = loaded
    if loaded:
        break
print(json.dumps(report))
"""


def run_probe(modules: list[str], heavy: list[str]) -> dict[str, list[str]]:
    code = PROBE.format(modules=modules, heavy=heavy)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_light_modules_do_not_import_tensorflow_keras_or_qt():
    report = run_probe(LIGHT_MODULES, HEAVY)
    culprits = {name: loaded for name, loaded in report.items() if loaded}
    assert not culprits, f"first module that pulled in a heavy package: {culprits}"
    assert list(report) == LIGHT_MODULES  # every module was imported


def test_the_probe_sees_a_heavy_import():
    # The same probe reports a package that the imported module does load (here numpy, via
    # ussl_core.metrics), so an empty report above means something.
    report = run_probe(["ussl_core.metrics"], ["numpy"])
    assert report["ussl_core.metrics"] and "numpy" in report["ussl_core.metrics"]
