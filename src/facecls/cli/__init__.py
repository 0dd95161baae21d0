"""Command line: parse arguments, call one library function, return an exit code. No logic here.

Each group of commands lives in a module of this package with ``COMMANDS`` (their names),
``add_commands(sub)`` (their parsers) and ``run(args, log, progress)`` (the library calls);
this module builds the parser from them, dispatches, and turns errors into one line.

Exit codes: 0 done; 1 a run failed (disk full, non-finite loss); 2 bad input (options, data,
model files); 130 / 143 stopped by Ctrl-C / SIGTERM after saving (resume with ``--resume``).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

from facecls.cli import comfort, library, match, people, runs, use, weights
from facecls.cli.options import config_from_args, resume_dir
from facecls.config import ConfigError

# The command groups, in the order ``facecls --help`` lists them.
GROUPS: tuple[ModuleType, ...] = (runs, use, comfort, match, weights, library, people)

__all__ = ["build_parser", "config_from_args", "main", "resume_dir"]


def build_parser() -> argparse.ArgumentParser:
    """The ``facecls`` argument parser with one sub-command per library call."""
    parser = argparse.ArgumentParser(
        prog="facecls",
        description="Train, cross-validate and evaluate CNN face-identity classifiers.",
    )
    parser.add_argument("--quiet", action="store_true", help="print only errors and results")
    _add_comfort_options(parser)
    parser.add_argument(
        "--debug", action="store_true",
        help="show the Python traceback of an unexpected error (or set FACECLS_DEBUG=1)",
    )  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.add_commands(sub)
    p = sub.add_parser("completion", help="print a shell completion script (bash or zsh)")
    p.add_argument("shell", choices=["bash", "zsh"])
    return parser


# Commands whose --data is a source given as it is (no run options checked before it is read).
DATA_COMMANDS = ("demo", "evaluate", "enroll", "calibrate")


def _run(args: argparse.Namespace) -> int:
    model = getattr(args, "model", None)  # a Path where a command takes a trained model
    if isinstance(model, Path):  # a mistyped one is told before the 4 s PyTorch import
        from facecls.report.run_data import check_run_folder

        check_run_folder(model, "run folder or model")
    if args.command in DATA_COMMANDS and isinstance(args.data, str):  # (train, cv, tune and
        from facecls.data.library_source import check_data  # lr-find: options.run_config)

        check_data(args.data)
    log, progress = _console(args)
    for group in GROUPS:
        if args.command in group.COMMANDS:
            group.run(args, log, progress)
            return 0
    raise AssertionError(f"no command group runs {args.command!r}")  # build_parser and GROUPS agree


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``facecls`` command; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)  # before the imports below: --help, --version need no torch
    if args.command == "models":  # a static table: answers without importing torch
        runs.list_models()
        return 0
    if args.command == "completion":  # the shell waits on it: no torch (tests/test_startup.py)
        import shtab

        print(shtab.complete(parser, shell=args.shell))
        return 0
    # Light imports only: a command that needs no network (people, cluster, weights list) must
    # not pay for torch's import here (tests/test_startup.py). BundleError is a ValueError.
    from facecls.atomic import WriteError
    from facecls.data.sources import DataError
    from facecls.training.interrupt import Interrupted

    try:
        with _process_group(), warnings.catch_warnings():  # the latter restores showwarning
            warnings.showwarning = _one_line_warning(warnings.showwarning)
            return _run(args)
    except (
        WriteError, ConfigError, DataError, FileNotFoundError, ValueError, ImportError
    ) as error:  # fmt: skip
        print(f"facecls: error: {error}", file=sys.stderr)
        # a run that failed (a full disk, a loss gone non-finite) is 1; bad input is 2
        failed = (WriteError, *_loaded("facecls.training.fold", "NonFiniteError"))
        return 1 if isinstance(error, failed) else 2
    except Interrupted as stopped:
        print(
            f"facecls: {stopped}; the last completed epoch is saved. Resume with: "
            f"facecls {stopped.command} --resume {stopped.run_dir}",
            file=sys.stderr,
        )
        return stopped.exit_code
    except KeyboardInterrupt:
        print("facecls: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of the results went away (… | head -1): not an error
        from facecls.logs import silence_stdout

        silence_stdout()
        return 0
    except Exception as error:  # the backstop: one line, the traceback only when asked for
        return _unexpected(error, getattr(args, "debug", False))


def _loaded(module: str, name: str) -> tuple[type, ...]:
    """``(module.name,)`` when ``module`` has been imported, else ``()``: an error of a module
    never imported was never raised, and importing it to find out would load torch."""
    found = sys.modules.get(module)
    return (getattr(found, name),) if found is not None else ()


@contextmanager
def _process_group() -> Iterator[None]:
    """The CLI owns the process: a process group a command started (``torchrun``) ends with it.
    Only a command that imported the distributed module can have started one."""
    if "torch.distributed" in sys.modules:  # a group may run already: the library's guard
        from facecls.training.distributed import process_group

        with process_group():
            yield
        return
    try:
        yield
    except BaseException:
        _end_group(failed=True)
        raise
    _end_group(failed=False)


def _end_group(failed: bool) -> None:
    distributed = sys.modules.get("facecls.training.distributed")
    if distributed is not None:
        distributed.end_group(failed)


def _one_line_warning(show: Any) -> Any:
    """``warnings.showwarning`` that prints facecls's own warnings (an unverified bundle) as one
    ``facecls: warning:`` line and leaves other libraries' warnings to ``show``."""

    def shown(message: Any, category: type, *args: Any, **kwargs: Any) -> None:
        if category.__module__.startswith("facecls"):
            print(f"facecls: warning: {message}", file=sys.stderr)
        else:
            show(message, category, *args, **kwargs)

    return shown


def _unexpected(error: Exception, debug: bool) -> int:
    """Report an error no command anticipated: one line, or the traceback with ``--debug``."""
    debug = debug or os.environ.get("FACECLS_DEBUG", "") not in ("", "0")
    if debug:
        traceback.print_exception(error)
    where = "" if debug else "; run with --debug (or FACECLS_DEBUG=1) for the traceback"
    print(f"facecls: error: {type(error).__name__}: {error}{where}", file=sys.stderr)
    return 1


class _Version(argparse.Action):
    """``--version``: the installed version, looked up only when asked (the lookup scans every
    installed distribution: tens of milliseconds that shell completion should not wait for)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_args: Any, **_kwargs: Any) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            installed = version("facecls")
        except PackageNotFoundError:  # run from a source tree that was never installed
            installed = "unknown (not installed)"
        print(f"facecls {installed}")  # on stdout, as argparse's own version action
        parser.exit()


def _add_comfort_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action=_Version, help="show the version and exit")
    parser.add_argument(
        "--verbose", action="store_true", help="also print debug detail (always in run.log)"
    )


def _console(args: argparse.Namespace) -> tuple[Any, bool]:
    """The ``log`` callable (records of the ``facecls`` logger) and whether to show progress."""
    from facecls.logs import configure_console, log_to

    configure_console(quiet=args.quiet, verbose=getattr(args, "verbose", False))
    return log_to(), not args.quiet
