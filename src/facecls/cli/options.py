"""The options of a run (train, cv, tune, lr-find), generated from the config fields'
metadata (:mod:`facecls.config_options`), and how they become a :class:`RunConfig`."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from facecls.config import ConfigError, RunConfig, device_name, imbalance_of
from facecls.config_io import from_dict, load_yaml, to_dict
from facecls.config_options import GROUPS, RunOption, run_options
from facecls.numbers import finite_float


def parsed_by(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse ``type`` from a parser that raises ConfigError: refused when parsed, before
    any work is done, with argparse's one-line usage error."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ConfigError as error:
            raise argparse.ArgumentTypeError(str(error)) from error

    return convert


def device_type(name: str) -> str:
    """argparse type of ``--device``: refused when parsed, not after the data is loaded."""
    return parsed_by(device_name)(name)


def _add_option(g: argparse._ArgumentGroup, o: RunOption) -> None:
    """One flag, its type, choices and help (with the default) from the field's metadata."""
    assert o.flag is not None
    default = o.default_text()
    # "off" is what a flag's absence says; every other default is shown
    shown = "" if default in (None, "off") else f" (default: {default})"
    how: dict[str, Any] = {"help": (o.help + shown).replace("%", "%%"), "dest": o.dest}
    if o.kind is bool:
        # bool | None: --x / --no-x (unset: the recipe's or the run's choice); bool: --x.
        how["action"] = argparse.BooleanOptionalAction if o.optional else "store_true"
        how["default"] = None  # unset options keep the config's value
    elif o.parse is not None:
        how["type"] = parsed_by(o.parse)
    elif o.kind is float:
        how["type"] = finite_float  # nan and inf refused when parsed
    elif o.kind is int:
        how["type"] = int
    if o.choices is not None:
        how["choices"] = list(o.choices)
    g.add_argument(o.flag, **how)


def add_run_options(p: argparse.ArgumentParser, command: str, config: type = RunConfig) -> None:
    """Every option of ``config`` that ``command`` takes, in its ``--help`` group; then
    ``--config`` and, except for lr-find, ``--resume``."""
    options = [o for o in run_options(config) if command in o.commands]
    for group, title in GROUPS.items():
        mine = [o for o in options if o.group == group]
        if not mine and group != "run":
            continue
        g = p.add_argument_group(title)
        if group == "run":
            g.add_argument("--config", type=Path, help="YAML config (e.g. a run's config.yaml)")
        for o in mine:
            _add_option(g, o)
        if group == "run" and command != "lr-find":
            g.add_argument(
                "--resume", nargs="?", const="", metavar="RUN_DIR",
                help="continue an interrupted run folder (or runs-dir/name with --name); "
                "finished epochs and folds are not redone and the result equals an "
                "uninterrupted run",
            )  # fmt: skip


def add_require_digest(p: argparse.ArgumentParser, default: bool = False) -> None:
    """``--require-digest``: refuse a bundle whose model.json records no weights digest."""
    if default:
        p.add_argument(
            "--require-digest", action=argparse.BooleanOptionalAction, default=True,
            help="refuse a model whose model.json records no weights digest (default: on; "
            "--no-require-digest serves it after a warning)",
        )  # fmt: skip
    else:
        p.add_argument(
            "--require-digest", action="store_true",
            help="refuse a model whose model.json records no weights digest (unverified weights)",
        )  # fmt: skip


def resume_dir(args: argparse.Namespace) -> Path | None:
    """The run folder ``--resume`` names: its value, or ``--runs-dir``/``--name``."""
    if getattr(args, "resume", None) is None:  # lr-find has no --resume
        return None
    if args.resume:
        return Path(args.resume)
    if not args.name:
        raise ConfigError("--resume needs a run folder (--resume RUN_DIR) or --name")
    return Path(args.runs_dir or "runs") / args.name


def config_from_args(args: argparse.Namespace, command: str) -> RunConfig:
    """Merge a ``--config`` file (if any) with the options given on the command line.

    With ``--resume`` the run's own ``config.yaml`` is the base, so only options that are given
    can contradict it (the library refuses those).
    """
    base = args.config
    run = resume_dir(args)
    if run is not None and base is None:
        base = run / "config.yaml"
        if not base.is_file():
            raise ConfigError(f"--resume {run}: not a facecls run folder (no config.yaml)")
    values: dict[str, Any] = to_dict(load_yaml(base)) if base else {}
    values.setdefault(
        "name", f"{command}-{args.model or values.get('train', {}).get('model', 'baseline')}"
    )
    for o in run_options():
        value = getattr(args, o.dest, None) if o.flag else None
        if value is None:  # not given (or not taken by this command): the config's value
            continue
        if o.section:
            values.setdefault(o.section, {})[o.key] = value
        else:
            values[o.key] = value
    config = from_dict(values)
    check_given(args, config, command)
    return config


def run_config(args: argparse.Namespace, command: str) -> RunConfig:
    """:func:`config_from_args`, then a ``--data`` that names nothing refused in one line: the
    options are checked first, the data before PyTorch loads."""
    from facecls.data.library_source import check_data

    config = config_from_args(args, command)
    check_data(config.data.source)
    return config


# What ``tune`` draws for each trial: the same options given would be overwritten.
SEARCHED = ("lr", "weight_decay", "imbalance", "sampler", "tau", "beta", "class_weights")


def check_given(args: argparse.Namespace, config: RunConfig, command: str) -> None:
    """Refuse, in one line, an option given on the command line that ``config`` would not use
    (a setting of another imbalance remedy, fine-tuning schedule or split; one tune searches).

    Raises:
        ConfigError: naming the option and what it belongs to.
    """
    t, remedy = config.train, imbalance_of(config.train)
    if command == "tune":
        for dest in SEARCHED:
            if getattr(args, dest, None) is not None:
                raise ConfigError(
                    f"--{dest.replace('_', '-')}: facecls tune searches it (one value per "
                    "trial); leave it out, or train with it"
                )
    rules = [
        ("unfreeze_epoch", t.freeze == "backbone-then-unfreeze", "--freeze backbone-then-unfreeze"),
        ("split_column", config.data.split_file is not None, "--split-file"),
    ]
    if command != "tune":  # a trial may draw any remedy: its settings wait for it there
        rules += [
            ("tau", remedy == "logit-adjust", "--imbalance logit-adjust"),
            ("beta", remedy in ("effective", "drw"), "--imbalance effective or drw"),
            ("drw_epoch", remedy == "drw", "--imbalance drw"),
        ]
    for dest, used, needs in rules:
        if getattr(args, dest, None) is not None and not used:
            raise ConfigError(f"--{dest.replace('_', '-')} is a setting of {needs}; without it, it "
                              "would be ignored")  # fmt: skip
