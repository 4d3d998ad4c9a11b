"""Models on disk: the one place that knows how trained models, their cards and interrupted runs
are laid out in a project's `models/` folder. Everything else asks here.

    models/<name>.keras        a finished model (no optimizer state)
    models/<name>.json         its card: architecture, preset, generation, settings, losses, versions
    models/<name>.ckpt.keras   an interrupted run's last checkpoint (with optimizer state)
    models/<name>.ckpt.json    that run's state: epochs done, loss history, architecture, preset
    models/<name>.ckpt.pending.json  the state of a checkpoint being saved (adopted on resume)

A default name is g<generation>_<architecture>_<preset> (g1_basic_unet_compact). The card, not
the name, is the truth about a model: names are the user's to choose. No TensorFlow here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ussl_core.atomic import write_text_atomic

MODELS_FOLDER = "models"
MODEL_SUFFIX = ".keras"
CARD_SUFFIX = ".json"
CHECKPOINT_SUFFIX = ".ckpt.keras"
STATE_SUFFIX = ".ckpt.json"
# The state of a checkpoint being written, renamed to STATE_SUFFIX once the checkpoint is.
PENDING_STATE_SUFFIX = ".ckpt.pending.json"
EVALSEG = "evalseg"


def models_folder(where) -> Path:
    """The models folder of a Project, of a project root, or the models folder itself."""
    if not isinstance(where, (str, os.PathLike)):   # a Project
        return Path(where.root) / MODELS_FOLDER
    path = Path(where)
    is_project_root = (path / "project.sqlite").exists() or (path / MODELS_FOLDER).is_dir()
    return path / MODELS_FOLDER if is_project_root else path


def default_model_name(arch: str, preset: str, generation: int) -> str:
    return f"g{generation}_{arch}_{preset}"


def model_paths(project_root: Path, name: str) -> dict[str, Path]:
    """Where the model `name` of a project, its card, checkpoint, run state and logs go."""
    models = Path(project_root) / MODELS_FOLDER
    return {"model": models / f"{name}{MODEL_SUFFIX}", "card": models / f"{name}{CARD_SUFFIX}",
            "checkpoint": models / f"{name}{CHECKPOINT_SUFFIX}", "state": models / f"{name}{STATE_SUFFIX}",
            "pending_state": models / f"{name}{PENDING_STATE_SUFFIX}",
            "tensorboard": Path(project_root) / "logs" / "tensorboard" / name}


def is_trained(project_root: Path, name: str) -> bool:
    return model_paths(project_root, name)["model"].is_file()


def card_path(model: Path) -> Path:
    """The card beside a model file."""
    return Path(model).with_suffix(CARD_SUFFIX)


def read_card(model: Path) -> dict:
    """A model's card; {} when it has none or it cannot be read (the model then goes by its name)."""
    try:
        card = json.loads(card_path(model).read_text())
    except (OSError, ValueError):
        return {}
    return card if isinstance(card, dict) else {}


def write_card(model: Path, card: dict) -> Path:
    """Write a model's card atomically (a temporary name, then a rename)."""
    target = card_path(model)
    write_text_atomic(target, json.dumps(card, indent=2, default=str) + "\n", point="card")
    return target


def _is_finished_card(path: Path) -> bool:
    return (not path.name.endswith(STATE_SUFFIX) and path.suffix == CARD_SUFFIX
            and path.with_suffix(MODEL_SUFFIX).is_file())


def trained_cards(where) -> list[dict]:
    """The cards of the finished models in a models folder (or a project's), each with its
    model's "path", by name. A model whose card is missing or unreadable is left out."""
    folder = models_folder(where)
    if not folder.is_dir():
        return []
    cards = []
    for path in sorted(folder.glob(f"*{CARD_SUFFIX}")):
        if _is_finished_card(path):
            card = read_card(path)
            if card:
                cards.append({**card, "path": path.with_suffix(MODEL_SUFFIX)})
    return cards


def generation_models(where, generation: int) -> tuple[list[Path], Path | None]:
    """The students and the EvalSeg-Net of one generation (of a project or a models folder)."""
    cards = [c for c in trained_cards(where) if c.get("generation", 1) == generation]
    students = [c["path"] for c in cards if c.get("architecture") != EVALSEG]
    evalseg = next((c["path"] for c in cards if c.get("architecture") == EVALSEG), None)
    return students, evalseg


def model_generations(where) -> list[int]:
    """Generations with at least one trained student, oldest first."""
    return sorted({int(c.get("generation", 1)) for c in trained_cards(where)
                   if c.get("architecture") != EVALSEG})


def latest_generation(where) -> int | None:
    generations = model_generations(where)
    return generations[-1] if generations else None


def architecture_from_name(name: str, presets: tuple[str, ...] = ("compact", "paper", "builtin")) -> str | None:
    """g1_basic_unet_compact -> basic_unet: for runs whose state predates the stored architecture."""
    parts = name.split("_")
    if len(parts) >= 3 and parts[0].startswith("g") and parts[0][1:].isdigit() and parts[-1] in presets:
        return "_".join(parts[1:-1])
    return None


def interrupted_runs(where) -> list[dict]:
    """Runs with a checkpoint but no finished model: name, epochs done, architecture, preset."""
    folder = models_folder(where)
    runs = []
    for state_path in sorted(folder.glob(f"*{STATE_SUFFIX}")) if folder.is_dir() else []:
        name = state_path.name[: -len(STATE_SUFFIX)]
        try:
            state = json.loads(state_path.read_text())
            epoch = int(state.get("epoch", 0))
        except (OSError, ValueError, AttributeError, TypeError):
            continue
        runs.append({"name": name, "epoch": epoch,
                     "architecture": state.get("architecture") or architecture_from_name(name),
                     "preset": state.get("preset")})
    return runs


def generation_preset(where, generation: int) -> str | None:
    """The preset of a generation's students, as their cards say."""
    return next((c.get("preset") for c in trained_cards(where)
                 if c.get("generation", 1) == generation and c.get("architecture") != EVALSEG
                 and c.get("preset")), None)


def revision(where) -> tuple:
    """Changes whenever a model or card is written, replaced or removed (names, sizes, times)."""
    folder = models_folder(where)
    stats = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if path.suffix in (MODEL_SUFFIX, CARD_SUFFIX):
            try:
                info = path.stat()
            except OSError:
                continue
            stats.append((path.name, info.st_size, info.st_mtime_ns))
    return (str(folder), tuple(stats))


def remove_temporaries(where) -> int:
    """Delete what a killed or failed save left in a models folder (*.tmp.keras, *.tmp: a model,
    checkpoint or card never renamed into place); returns how many. Only the project's writer
    may call this."""
    folder = models_folder(where)
    removed = 0
    for pattern in (f"*.tmp{MODEL_SUFFIX}", "*.tmp"):
        for path in folder.glob(pattern) if folder.is_dir() else []:
            path.unlink(missing_ok=True)
            removed += 1
    return removed
