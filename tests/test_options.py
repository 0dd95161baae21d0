"""One place per option: the config fields' metadata makes the CLI flags and the docs table."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
from pathlib import Path

import pytest

from facecls.cli import build_parser
from facecls.cli.options import add_run_options, config_from_args
from facecls.config import (
    RUN_COMMANDS,
    AugmentConfig,
    ConfigError,
    DataConfig,
    RunConfig,
    TrainConfig,
    option,
)
from facecls.config_io import from_dict
from facecls.config_options import RunOption, options_markdown, run_options
from facecls.config_rules import RECIPES

REPO = Path(__file__).resolve().parents[1]


def _script():
    """``scripts/options_table.py`` (a script, not a package)."""
    path = REPO / "scripts" / "options_table.py"
    spec = importlib.util.spec_from_file_location("options_table", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {s for action in parser._actions for s in action.option_strings}


def _command_parser(command: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


def test_the_docs_table_is_the_metadata() -> None:
    script = _script()
    page = (REPO / "docs" / "options.md").read_text(encoding="utf-8")
    assert script.with_table(page, options_markdown()) == page, (
        "docs/options.md differs from the config fields' metadata: "
        "run python scripts/options_table.py"
    )


def test_the_docs_check_fails_on_a_stale_table() -> None:
    script = _script()
    page = (REPO / "docs" / "options.md").read_text(encoding="utf-8")
    stale = page.replace("`train.lr`", "`train.learning_rate`")
    assert stale != page and script.with_table(stale, options_markdown()) != stale


def test_every_setting_is_an_option_with_help() -> None:
    """Every field of the three sections and RunConfig's own names are documented options."""
    documented = {o.path for o in run_options()}
    for section, cls in (("data", DataConfig), ("augment", AugmentConfig), ("train", TrainConfig)):
        for f in dataclasses.fields(cls):
            assert f"{section}.{f.name}" in documented, f"{section}.{f.name} has no help"
    assert {"name", "runs_dir"} <= documented
    assert all(o.help.strip() for o in run_options())
    assert len({o.flag for o in run_options() if o.flag}) == len(
        [o for o in run_options() if o.flag]
    )


@pytest.mark.parametrize("command", RUN_COMMANDS)
def test_each_command_takes_the_flags_its_metadata_names(command: str) -> None:
    flags = _flags(_command_parser(command))
    for o in run_options():
        if o.flag is None:
            continue
        assert (o.flag in flags) == (command in o.commands), (command, o.flag)
    assert "--config" in flags and ("--resume" in flags) == (command != "lr-find")


def _sample(o: RunOption) -> tuple[list[str], object]:
    """Arguments that set ``o`` to a valid value other than its default, and that value."""
    if o.kind is bool:
        return [o.flag], True
    if o.choices:
        value = [c for c in o.choices if c != o.default][-1]
        return [o.flag, value], value
    if o.kind is int:
        value = (o.default or 1) + 1
        return [o.flag, str(value)], value
    if o.kind is float:
        return [o.flag, "0.5"], 0.5
    return [o.flag, "cpu"], "cpu"  # a valid device, and text for every other text option


# The options that belong to another one's setting (refused without it: test_option_modes.py).
_NEEDS = {
    "train.tau": ["--imbalance", "logit-adjust"], "train.beta": ["--imbalance", "effective"],
    "train.drw_epoch": ["--imbalance", "drw"],
    "train.unfreeze_epoch": ["--freeze", "backbone-then-unfreeze"],
    "train.freeze": ["--model", "facenet"],  # the sample, top, is FaceNet's
    "data.split_column": ["--split-file", "splits.csv"],
}  # fmt: skip


@pytest.mark.parametrize("option", [o for o in run_options() if o.flag], ids=lambda o: o.path)
def test_every_flag_lands_in_its_config_key(option: RunOption) -> None:
    argv, value = _sample(option)
    argv += _NEEDS.get(option.path, [])
    args = build_parser().parse_args(["train" if "train" in option.commands else "cv", *argv])
    config = config_from_args(args, args.command)
    section = getattr(config, option.section) if option.section else config
    assert getattr(section, option.key) == value


def test_choices_are_refused_on_the_command_line_and_in_a_config(
    capsys: pytest.CaptureFixture,
) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--optimizer", "sgd"])
    assert "invalid choice: 'sgd'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="train.optimizer must be one of adam, adamw"):
        from_dict({"train": {"optimizer": "sgd"}})
    with pytest.raises(
        ConfigError, match="data.faces must be one of centre, align, box, arcface, detect"
    ):
        from_dict({"data": {"faces": "eyes"}})


def test_the_recipes_are_the_recipe_choices() -> None:
    recipe = next(o for o in run_options() if o.path == "train.recipe")
    assert set(recipe.choices) == set(RECIPES)


@dataclasses.dataclass(frozen=True)
class _Train(TrainConfig):
    """TrainConfig with the one field a new option is (docs/architecture.md's example)."""

    warmup_epochs: int = dataclasses.field(
        default=0, metadata=option("epochs of linear learning-rate warm-up before the schedule")
    )


@dataclasses.dataclass(frozen=True)
class _Run(RunConfig):
    train: _Train = dataclasses.field(default_factory=_Train)


def test_a_new_training_option_is_one_dataclass_field() -> None:
    """The worked example of docs/architecture.md: one field with metadata gives the flag (type,
    help with its default, the commands that take it) and the docs row."""
    parser = argparse.ArgumentParser()
    add_run_options(parser, "cv", _Run)
    args = parser.parse_args(["--warmup-epochs", "3"])
    assert args.warmup_epochs == 3
    assert "epochs of linear learning-rate warm-up before the schedule (default: 0)" in " ".join(
        parser.format_help().split()
    )
    row = "| `--warmup-epochs` | `train.warmup_epochs` | integer | 0 | train, cv, tune, lr-find |"
    assert row in options_markdown(_Run)
    assert row not in options_markdown()
