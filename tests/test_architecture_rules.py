"""Rules of the architecture that a reader can rely on (docs/architecture.md), checked on the
source: each concept has one owner."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sources(*folders: str) -> dict[str, str]:
    return {str(p.relative_to(ROOT)): p.read_text() for folder in folders
            for p in sorted((ROOT / folder).rglob("*.py"))}


def offenders(pattern: str, files: dict[str, str], allowed: tuple[str, ...] = ()) -> list[str]:
    regex = re.compile(pattern)
    return [name for name, text in files.items() if not name.startswith(allowed) and regex.search(text)]


def test_only_model_files_names_card_and_checkpoint_files():
    """Cards (<name>.json beside a model) and checkpoints (*.ckpt.*): ussl_core.store.model_files."""
    pattern = r"\.ckpt|with_suffix\(\"\.json\"\)|glob\(\"\*\.json\"\)"
    assert offenders(pattern, sources("ussl_core", "app"), ("ussl_core/store/model_files.py",)) == []


def test_raw_sql_only_inside_the_store():
    pattern = r"\.conn\b|\bexecute\(|\bsqlite3\b"
    assert offenders(pattern, sources("ussl_core", "app"), ("ussl_core/store/",)) == []


def test_the_gui_never_reads_hdf5_itself():
    """Pixels of frames and masks come from ussl_core (the views' functions), never from shards
    read in a panel."""
    pattern = r"\bh5py\b|\bread_shard\b|\.read_masks\(|\.read_frames\("
    assert offenders(pattern, sources("app")) == []


def test_panels_are_thin():
    """A panel module keeps widgets and wiring (about 500 lines at most); its state lives in
    ussl_core/views."""
    long = {name: text.count("\n") for name, text in sources("app").items() if text.count("\n") > 520}
    assert long == {}


def test_background_results_are_not_guarded_by_hand():
    """Stale results are dropped by app.background.BackgroundCalls, not by token counters."""
    assert offenders(r"self\._\w*token\s*(\+=|=\s*0)", sources("app")) == []


def test_the_rules_see_what_they_forbid():
    """The checks above find a violation when there is one."""
    fake = {"ussl_core/x.py": 'rows = project.conn.execute("SELECT 1")\npath.with_suffix(".json")\n'}
    assert offenders(r"\.conn\b|\bexecute\(", fake, ("ussl_core/store/",)) == ["ussl_core/x.py"]
    assert offenders(r"with_suffix\(\"\.json\"\)", fake) == ["ussl_core/x.py"]
    gui = {"app/panels/x.py": "self._token += 1\nframes = read_shard(path, 'frames', rows)\n"}
    assert offenders(r"\bread_shard\b", gui) == ["app/panels/x.py"]
    assert offenders(r"self\._\w*token\s*(\+=|=\s*0)", gui) == ["app/panels/x.py"]
