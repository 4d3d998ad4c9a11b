"""One source of every default: the settings dataclasses. The CLI flags, the GUI's forms and
the demo read theirs from them, so a recipe made the default reaches every front end."""

from __future__ import annotations

import dataclasses

from ussl_core.cli import build_parser
from ussl_core.demo import DemoSettings
from ussl_core.evalseg import evalseg_settings
from ussl_core.segment import SegmentSettings
from ussl_core.training import TrainingSettings


def parsed(*argv: str):
    return build_parser().parse_args(list(argv))


def field_values(settings) -> dict:
    return dataclasses.asdict(settings)


def test_cli_training_flags_are_the_training_settings():
    args = parsed("train", "p")
    assert {k: getattr(args, k) for k in field_values(TrainingSettings())} == field_values(TrainingSettings())
    # Every field of the dataclass is a flag, with its help text.
    help_text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    for field in dataclasses.fields(TrainingSettings):
        assert "--" + field.name.replace("_", "-") in help_text
        assert field.metadata["help"].split()[0] in help_text


def test_cli_evalseg_flags_are_evalseg_settings():
    args = parsed("evalseg", "p")
    assert {k: getattr(args, k) for k in field_values(evalseg_settings())} == field_values(evalseg_settings())
    assert evalseg_settings().learning_rate != TrainingSettings().learning_rate   # its own


def test_cli_segment_flags_are_the_segment_settings():
    args = parsed("segment", "photo.jpg", "--out", "o")
    defaults = SegmentSettings()
    assert (args.ensemble, args.flip_average, args.threshold) == \
        (defaults.method, defaults.flip_average, defaults.threshold)
    assert args.model is None and args.inputs == ["photo.jpg"]


def test_the_demo_trains_with_the_recipe():
    demo = DemoSettings()
    assert demo.training() == dataclasses.replace(TrainingSettings(), epochs=demo.epochs)
    assert demo.evalseg_training() == evalseg_settings(epochs=demo.evalseg_epochs)


def test_cli_keep_rules_are_the_selection_and_generation_settings():
    from ussl_core.cli import keep_rule_from_args
    from ussl_core.generations import GenerationSettings
    from ussl_core.selection import SelectionSettings

    assert keep_rule_from_args(SelectionSettings, parsed("select", "p")) == SelectionSettings()
    assert keep_rule_from_args(GenerationSettings, parsed("next-generation", "p")) == GenerationSettings()
    # A flag changes only what it names.
    assert keep_rule_from_args(SelectionSettings, parsed("select", "p", "--no-per-video", "--max-per-video", "0")) \
        == SelectionSettings(per_video=False, max_per_video=None)
    assert keep_rule_from_args(GenerationSettings, parsed("next-generation", "p", "--threshold", "0.8")) \
        == GenerationSettings(threshold=0.8)
