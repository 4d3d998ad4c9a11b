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


def test_the_rules_see_what_they_forbid():
    """The checks above find a violation when there is one."""
    fake = {"ussl_core/x.py": 'rows = project.conn.execute("SELECT 1")\npath.with_suffix(".json")\n'}
    assert offenders(r"\.conn\b|\bexecute\(", fake, ("ussl_core/store/",)) == ["ussl_core/x.py"]
    assert offenders(r"with_suffix\(\"\.json\"\)", fake) == ["ussl_core/x.py"]
