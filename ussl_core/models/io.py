"""Saving and loading `.keras` models safely."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from ussl_core.diskspace import ensure_space
from ussl_core.errors import UsslError
from ussl_core.testhooks import write_fault


def save_model_atomic(model, path: Path) -> None:
    """Save to a temporary name in the same folder, then rename: never a half-written model."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.keras")
    # Weights and, for a checkpoint, the optimizer's two moments: float32 each.
    ensure_space(path.parent, 3 * 4 * model.count_params(), f"the model {path.name}")
    write_fault("model", tmp)
    model.save(tmp)
    os.replace(tmp, path)


def load_model(path: Path, compile: bool = False):
    """Load a `.keras` model with safe_mode=True: a Lambda layer (arbitrary code) is refused."""
    import keras

    import ussl_core.models.layers  # noqa: F401  registers the custom layers

    path = Path(path)
    if not path.exists():
        raise UsslError(f"{path}: model file does not exist")
    if not zipfile.is_zipfile(path):   # Keras would say "File not found" of an empty or cut file
        raise UsslError(f"{path}: not a .keras model (empty, truncated or another kind of file)")
    try:
        return keras.models.load_model(path, compile=compile, safe_mode=True)
    except ValueError as exc:
        text = str(exc)
        if "Lambda" in text or "safe_mode" in text or "unsafe" in text.lower():
            raise UsslError(f"{path}: refused: the model contains a Lambda layer (arbitrary Python "
                            "code); ussl loads only models made of registered layers") from None
        raise UsslError(f"{path}: not a loadable ussl model ({text.splitlines()[0]})") from None
    except (OSError, KeyError, zipfile.BadZipFile, TypeError, AttributeError) as exc:
        raise UsslError(f"{path}: not a readable .keras model ({exc})") from None
