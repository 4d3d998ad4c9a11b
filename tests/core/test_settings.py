"""Every option is declared once (default, help, range) and checked the same way wherever its
value comes from: the library, the CLI, a job's spec, a GUI form."""

from __future__ import annotations

import dataclasses
import math

import pytest

from ussl_core.errors import SettingsError
from ussl_core.generations import GenerationSettings
from ussl_core.media import ShotSettings
from ussl_core.postprocess import BoxSettings
from ussl_core.segment import SegmentSettings
from ussl_core.selection import SelectionSettings
from ussl_core.settings import Range, field_help, field_range
from ussl_core.teacher.mog2 import MOG2Settings
from ussl_core.teacher.videopca import VideoPCASettings
from ussl_core.training import TrainingSettings

SETTINGS = [TrainingSettings, SelectionSettings, GenerationSettings, SegmentSettings, BoxSettings,
            ShotSettings, VideoPCASettings, MOG2Settings]


def test_ranges_read_as_a_person_writes_them():
    assert str(Range(0, 1, high_open=True)) == "in [0, 1)"
    assert str(Range(0, 100, low_open=True)) == "in (0, 100]"
    assert str(Range(low=1)) == "at least 1"
    assert str(Range(low=0, low_open=True)) == "positive"
    assert 0 in Range(0, 1, high_open=True) and 1 not in Range(0, 1, high_open=True)
    assert 0 not in Range(low=0, low_open=True) and 1e-9 in Range(low=0, low_open=True)


@pytest.mark.parametrize("settings_type", SETTINGS, ids=lambda t: t.__name__)
def test_every_number_declares_its_range_and_every_option_its_help(settings_type):
    for item in dataclasses.fields(settings_type):
        assert item.metadata.get("help"), f"{settings_type.__name__}.{item.name} has no help"
        default = getattr(settings_type(), item.name)
        if isinstance(default, (int, float)) and not isinstance(default, bool) and item.name != "seed":
            assert field_range(item) is not None, f"{settings_type.__name__}.{item.name} has no range"
            assert default in field_range(item)
            assert str(field_range(item)) in field_help(item)


def _out_of_range(bounds: Range) -> list[float]:
    values = [math.nan, math.inf]
    if bounds.low is not None:
        values.append(bounds.low if bounds.low_open else bounds.low - 1)
    if bounds.high is not None:
        values.append(bounds.high if bounds.high_open else bounds.high + 1)
    return values


@pytest.mark.parametrize("settings_type", SETTINGS, ids=lambda t: t.__name__)
def test_a_value_outside_its_range_is_refused_with_the_range_in_the_message(settings_type):
    tried = 0
    for item in dataclasses.fields(settings_type):
        bounds = field_range(item)
        if bounds is None:
            continue
        whole = isinstance(getattr(settings_type(), item.name), int)
        for value in _out_of_range(bounds):
            if whole and not math.isfinite(value):
                continue
            value = int(value) if whole else value
            with pytest.raises(SettingsError) as refused:
                settings_type(**{item.name: value})
            assert str(refused.value) == f"{item.name} must be {bounds}, not {value!r}"
            tried += 1
    assert tried >= 2


def test_values_of_the_wrong_kind_are_refused():
    with pytest.raises(SettingsError, match="n_components must be a whole number, not '3'"):
        VideoPCASettings(n_components="3")
    with pytest.raises(SettingsError, match="epochs must be a whole number, not 2.5"):
        TrainingSettings(epochs=2.5)
    with pytest.raises(SettingsError, match="flip must be true or false, not 1"):
        TrainingSettings(flip=1)
    with pytest.raises(SettingsError, match="loss must be one of mse, bce, not 'l1'"):
        TrainingSettings(loss="l1")
    with pytest.raises(SettingsError, match="mode must be one of largest, all"):
        BoxSettings(mode="biggest")
    assert VideoPCASettings(blur_sigma=4).blur_sigma == 4      # a whole number is a number


def test_rules_across_fields_stay():
    with pytest.raises(SettingsError, match="min_crop_fraction must be at most crop_fraction"):
        TrainingSettings(crop_fraction=0.5, min_crop_fraction=0.6)
    with pytest.raises(SettingsError, match="hysteresis_low must be at most hysteresis_high"):
        VideoPCASettings(hysteresis_low=0.9, hysteresis_high=0.8)
    with pytest.raises(SettingsError, match="blur_ksize must be an odd number"):
        VideoPCASettings(blur_ksize=4)
    with pytest.raises(SettingsError, match="one of top_percent and threshold"):
        SelectionSettings(top_percent=10, threshold=0.5)
    assert SelectionSettings(max_per_video=None).max_per_video is None


def test_the_cli_shows_each_range_in_its_help(capsys):
    from ussl_core.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Adam's learning rate (the paper's 1e-3); in (0, 1); default 0.001" in text
    assert "in [0, 1); default 0.15" in text
