"""The one module that knows how models live on disk (ussl_core.store.model_files)."""

from __future__ import annotations

import json
from pathlib import Path

from ussl_core.store import Project
from ussl_core.store import model_files as mf


def fake_model(folder: Path, name: str, card: dict | None, text: str | None = None) -> Path:
    """A model file (its bytes do not matter here) and, unless None, its card."""
    folder.mkdir(parents=True, exist_ok=True)
    model = folder / f"{name}.keras"
    model.write_bytes(b"model")
    if text is not None:
        mf.card_path(model).write_text(text)
    elif card is not None:
        mf.write_card(model, {"name": name, **card})
    return model


def test_layout_names_and_folders(tmp_path):
    paths = mf.model_paths(tmp_path / "p", "g1_basic_unet_compact")
    assert paths["model"] == tmp_path / "p" / "models" / "g1_basic_unet_compact.keras"
    assert paths["card"].name == "g1_basic_unet_compact.json"
    assert paths["checkpoint"].name == "g1_basic_unet_compact.ckpt.keras"
    assert paths["state"].name == "g1_basic_unet_compact.ckpt.json"
    assert mf.default_model_name("dense_unet", "paper", 2) == "g2_dense_unet_paper"
    # A project, its root or its models folder all mean the same folder.
    with Project.create(tmp_path / "p") as project:
        (tmp_path / "p" / "models").mkdir(exist_ok=True)
        assert mf.models_folder(project) == mf.models_folder(tmp_path / "p") \
            == mf.models_folder(tmp_path / "p" / "models") == tmp_path / "p" / "models"


def test_listing_generations_and_what_is_left_out(tmp_path):
    models = tmp_path / "models"
    a = fake_model(models, "g1_a", {"architecture": "basic_unet", "generation": 1, "preset": "compact"})
    b = fake_model(models, "g1_b", {"architecture": "lowres", "generation": 1, "preset": "compact"})
    e = fake_model(models, "g1_e", {"architecture": "evalseg", "generation": 1})
    c = fake_model(models, "g2_c", {"architecture": "lowres", "generation": 2, "preset": "paper"})
    fake_model(models, "broken", None, text="{not json")          # an unreadable card
    fake_model(models, "cardless", None)                          # no card at all
    (models / "orphan.json").write_text(json.dumps({"architecture": "lowres"}))   # no model
    (models / "g3_x.ckpt.json").write_text(json.dumps({"epoch": 4, "architecture": "dense_unet",
                                                       "preset": "compact"}))
    (models / "g3_old_unet_compact.ckpt.json").write_text(json.dumps({"epoch": 2}))
    (models / "g3_bad.ckpt.json").write_text("garbage")

    assert [c_["path"] for c_ in mf.trained_cards(models)] == [a, b, e, c]
    assert mf.generation_models(models, 1) == ([a, b], e)
    assert mf.generation_models(models, 2) == ([c], None)
    assert mf.model_generations(models) == [1, 2] and mf.latest_generation(models) == 2
    assert mf.generation_preset(models, 2) == "paper" and mf.generation_preset(models, 3) is None
    assert mf.read_card(tmp_path / "models" / "broken.keras") == {}
    assert mf.interrupted_runs(models) == [
        {"name": "g3_old_unet_compact", "epoch": 2, "architecture": "old_unet", "preset": None},
        {"name": "g3_x", "epoch": 4, "architecture": "dense_unet", "preset": "compact"}]
    assert mf.trained_cards(tmp_path / "nowhere") == [] and mf.interrupted_runs(tmp_path / "nowhere") == []


def test_revision_changes_with_every_model_or_card_write(tmp_path):
    models = tmp_path / "models"
    first = mf.revision(models)
    model = fake_model(models, "g1_a", {"architecture": "lowres", "generation": 1})
    second = mf.revision(models)
    assert second != first
    mf.write_card(model, {"name": "g1_a", "architecture": "lowres", "generation": 1, "note": "longer"})
    third = mf.revision(models)
    assert third != second
    (models / "unrelated.txt").write_text("x")
    assert mf.revision(models) == third
