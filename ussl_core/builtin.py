"""The models shipped inside the package: ussl's own compact students and EvalSeg-Net.

They were trained by ussl's own pipeline (`benchmarks/train_builtin.py`) on unlabeled video
only; `builtin/card.json` names the data and its licences, the settings and the figures. They
segment images when no project (or a project without models) is at hand, and they can be a
user's generation-1 teacher: `install_as_teacher` copies them into a project as its generation
1, so that the project's generation 2 needs no training first. No TensorFlow here: paths and cards.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ussl_core.errors import NoModelsError, ProjectError, UsslError
from ussl_core.store import model_files

BUILTIN_DIR = Path(__file__).with_name("builtin")
CARD_NAME = "card.json"


def builtin_dir() -> Path:
    """Where the shipped models are: the package's own folder, or $USSL_BUILTIN_DIR (another
    set of models in that layout, as tests and site installations may provide)."""
    return Path(os.environ.get("USSL_BUILTIN_DIR") or BUILTIN_DIR)


def builtin_available() -> bool:
    folder = builtin_dir()
    return (folder / CARD_NAME).is_file() and any(folder.glob("*.keras"))


def builtin_card() -> dict:
    """The card of the shipped models (data, licences, settings, figures, versions)."""
    card = builtin_dir() / CARD_NAME
    if not builtin_available():
        raise NoModelsError(f"{builtin_dir()}: this installation has no built-in models; name a "
                            "model or project with --model, or reinstall ussl")
    try:
        return json.loads(card.read_text())
    except (OSError, ValueError) as exc:
        raise UsslError(f"{card}: unreadable card of the built-in models ({exc})") from None


def builtin_models() -> tuple[list[Path], Path | None]:
    """The shipped students and EvalSeg-Net (in the order the card lists them)."""
    card, folder = builtin_card(), builtin_dir()
    students = [folder / f"{name}.keras" for name in card["students"]]
    evalseg = folder / f"{card['evalseg']}.keras" if card.get("evalseg") else None
    missing = [p for p in [*students, evalseg] if p is not None and not p.is_file()]
    if missing:
        raise UsslError(f"{missing[0]}: a built-in model named by {CARD_NAME} is missing; reinstall ussl")
    return students, evalseg


def builtin_fingerprint() -> tuple:
    """Changes when a shipped model or card changes (what a loaded built-in Segmenter depends on)."""
    return model_files.revision(builtin_dir())


def install_as_teacher(project) -> list[Path]:
    """Copy the shipped students and EvalSeg-Net into `project`'s models folder as its
    generation 1 (`g1_<architecture>_builtin`, cards marked built-in). Refused when the project
    is past generation 1 or already has generation-1 models. Returns the copied model paths."""
    project.require_writable()
    if int(project.meta("generation", "1")) != 1:
        raise ProjectError(f"{project.root}: the built-in models can only be generation 1, and this "
                           f"project is at generation {project.meta('generation')}")
    students, evalseg = model_files.generation_models(project, 1)
    existing = [*students, *([evalseg] if evalseg else [])]
    if existing and all(_is_builtin_copy(p) for p in existing):
        return existing   # installed by an earlier, interrupted run
    if existing:
        raise ProjectError(f"{project.root}: generation 1 already has models "
                           f"({', '.join(p.stem for p in existing)}); "
                           "use them as the teacher (without --teacher builtin)")
    card = builtin_card()
    shipped, shipped_evalseg = builtin_models()
    copied = []
    for source in [*shipped, *([shipped_evalseg] if shipped_evalseg else [])]:
        model_card = model_files.read_card(source)
        if "architecture" not in model_card:
            raise UsslError(f"{model_files.card_path(source)}: the card of a built-in model is missing "
                            "or unreadable; reinstall ussl")
        name = model_files.default_model_name(model_card["architecture"], "builtin", 1)
        target = model_files.model_paths(project.root, name)["model"]
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{name}.tmp.keras")
        shutil.copyfile(source, tmp)
        tmp.replace(target)
        model_card.update(name=name, generation=1, builtin=True,
                          builtin_source={"name": source.stem, "generation": model_card.get("generation"),
                                          "data": card.get("data")})
        model_files.write_card(target, model_card)
        copied.append(target)
    return copied


def _is_builtin_copy(model: Path) -> bool:
    return bool(model_files.read_card(model).get("builtin"))
