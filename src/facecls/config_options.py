"""The run options as data: each config field's flag, help, type and commands, for CLI and docs.

A field of :class:`~facecls.config.RunConfig` (or of its ``data``, ``augment`` and ``train``
sections) with :func:`~facecls.config.option` metadata is an option. ``facecls.cli.options``
turns :func:`run_options` into argparse flags, and :func:`options_markdown` is the table of
``docs/options.md`` (``scripts/options_table.py`` writes it; a test fails when they differ).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from facecls.config import RUN_COMMANDS, RunConfig

# ``--help`` groups, in the order they are shown: name -> title.
GROUPS: dict[str, str] = {
    "data": "data",
    "training": "model and training (unset values come from --recipe)",
    "processes": "several processes (start with torchrun --nproc-per-node N -m facecls …; "
    "--batch-size is the global batch)",
    "imbalance": "imbalance (one remedy per run; docs/imbalance.md)",
    "fine-tuning": "fine-tuning a pretrained backbone (docs/models.md)",
    "run": "run",
}
# The group of a section's fields that name none.
_SECTION_GROUPS = {"data": "data", "augment": "data", "train": "training", "": "run"}
_KIND_WORDS = {int: "integer", float: "number", str: "text", bool: "on/off"}


@dataclass(frozen=True)
class RunOption:
    """One option: where it lives in the config and how the command line takes it.

    Attributes:
        section: ``data``, ``augment``, ``train``, or ``""`` for a field of RunConfig itself.
        key: the field name.
        kind: ``int``, ``float``, ``str`` or ``bool``.
        optional: the field may be ``None`` (unset: filled later, e.g. from the recipe).
        default: the field's default value.
        meta: the field's :func:`~facecls.config.option` metadata.
    """

    section: str
    key: str
    kind: type
    optional: bool
    default: Any
    meta: dict[str, Any]

    @property
    def path(self) -> str:
        """The config key, e.g. ``train.lr`` (``name`` for RunConfig's own fields)."""
        return f"{self.section}.{self.key}" if self.section else self.key

    @property
    def flag(self) -> str | None:
        """``--lr``; ``None`` for a config-file-only setting (no command takes it)."""
        if not self.commands:
            return None
        return self.meta["flag"] or "--" + self.key.replace("_", "-")

    @property
    def dest(self) -> str:
        """The argparse destination of :attr:`flag`."""
        return (self.flag or self.key).lstrip("-").replace("-", "_")

    @property
    def help(self) -> str:
        return str(self.meta["help"])

    @property
    def choices(self) -> tuple[str, ...] | None:
        return self.meta["choices"]

    @property
    def commands(self) -> tuple[str, ...]:
        return tuple(self.meta["commands"])

    @property
    def group(self) -> str:
        return self.meta["group"] or _SECTION_GROUPS[self.section]

    @property
    def parse(self) -> Callable[[str], Any] | None:
        return self.meta["parse"]

    def default_text(self) -> str | None:
        """The default in words: the metadata's ``default``, else the value (``None``: none)."""
        if self.meta["default_text"] is not None:
            return str(self.meta["default_text"])
        if self.default is None:
            return None
        if self.kind is bool:
            return "on" if self.default else "off"
        return f"{self.default:g}" if isinstance(self.default, float) else str(self.default)


def _kind(annotation: Any) -> tuple[type, bool]:
    """``(int, True)`` for ``int | None``; ``(bool, False)`` for ``bool``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        concrete = [a for a in typing.get_args(annotation) if a is not type(None)]
        return concrete[0], True
    return annotation, False


def _field_options(cls: type, section: str) -> list[RunOption]:
    hints = typing.get_type_hints(cls)
    found = []
    for f in dataclasses.fields(cls):
        if "help" not in f.metadata:
            continue
        kind, optional = _kind(hints[f.name])
        found.append(RunOption(section, f.name, kind, optional, f.default, dict(f.metadata)))
    return found


def run_options(config: type = RunConfig) -> list[RunOption]:
    """Every option of ``config`` (a RunConfig class), in the order of :data:`GROUPS`, then of
    the fields: RunConfig's own, then each section's."""
    hints = typing.get_type_hints(config)
    found = _field_options(config, "")
    for f in dataclasses.fields(config):
        if dataclasses.is_dataclass(hints[f.name]):
            found += _field_options(hints[f.name], f.name)
    order = list(GROUPS)
    unknown = {o.group for o in found} - set(order)
    if unknown:
        raise ValueError(f"options name unknown --help groups {sorted(unknown)}; see GROUPS")
    return sorted(found, key=lambda o: order.index(o.group))  # sorted() keeps field order


def _cell(text: str) -> str:
    """Table-cell text: a ``|`` would end the cell, ``<…>`` would be read as an HTML tag."""
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;").replace("\n", " ")


def options_markdown(config: type = RunConfig) -> str:
    """The table of ``docs/options.md``: one section per group, one row per option."""
    lines: list[str] = []
    options = run_options(config)
    for group, title in GROUPS.items():
        rows = [o for o in options if o.group == group]
        if not rows:
            continue
        lines += [f"### {title}", "", "| flag | config key | values | default | commands | what "
                  "it does |", "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        for o in rows:
            values = ", ".join(o.choices) if o.choices else _KIND_WORDS[o.kind]
            commands = "config file only" if not o.commands else ", ".join(
                c for c in RUN_COMMANDS if c in o.commands
            )  # fmt: skip
            flag = f"`{o.flag}`" if o.flag else "—"
            if o.flag and o.kind is bool and o.optional:
                flag = f"`{o.flag}` / `--no-{o.flag[2:]}`"
            default = o.default_text()
            lines.append(
                f"| {flag} | `{o.path}` | {_cell(values)} | "
                f"{_cell(default) if default is not None else '—'} | {commands} | {_cell(o.help)} |"
            )
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
