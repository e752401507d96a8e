"""The entry point: parse, dispatch to a command, turn errors into exit codes.

Exit codes: 0 success; 2 bad usage or input (one line on stderr); 1 a
diverging run, Ctrl-C, standard output gone (``| head``, a full disk) or an
unexpected failure; 143 SIGTERM; 129 SIGHUP.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .. import __version__
from ..errors import DivergenceError, XpnetError
from ..terminal import printable
from .common import Exit, end_bar_line, print_json
from .option_pairs import refuse_idle_options
from .parser import _Parser, build_parser


class _Unset(list):  # type: ignore[type-arg, unused-ignore]
    """The marker of :func:`_given_options`: a list, because an ``append``
    option (``xpnet bench --batch-sizes-for``) appends to a copy of what the
    namespace holds (a plain ``object()`` made it crash)."""


def _given_options(
    parser: argparse.ArgumentParser, argv: list[str], parsed: argparse.Namespace
) -> set[str]:
    """The destinations of the options that ``argv`` sets explicitly.

    argparse fills in a default only where the namespace lacks the attribute,
    so parsing into a namespace pre-filled with a marker leaves exactly the
    options the user typed changed.
    """
    marker = _Unset()
    probe = argparse.Namespace(**{key: marker for key in vars(parsed)})
    parser.parse_known_args(argv, namespace=probe)
    return {key for key, value in vars(probe).items() if value is not marker}


def _json_report(args: argparse.Namespace, code: int, error: str | None) -> None:
    """The --json line of a run that ends with ``code`` (and ``error``)."""
    if getattr(args, "json", False):
        print_json(
            {
                "command": args.command,
                "xpnet_version": __version__,
                **args.report,
                **({"error": error} if error is not None else {}),
                "exit_code": code,
            }
        )


class _PrintableFormatter(logging.Formatter):
    """Library notices as one line each, file names in them escaped."""

    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record))


def _fail(args: argparse.Namespace, message: str, code: int) -> int:
    # One line whatever the message quotes from files (names, paths).
    print(f"xpnet: error: {printable(message)}", file=sys.stderr)
    _json_report(args, code, message)
    return code


def _refuse_options_before_the_command(parser: _Parser, argv: list[str]) -> None:
    """``xpnet --epochs 1 train``: argparse would call '1' an invalid command."""
    first = argv[0]
    if first.startswith("-") and first.split("=")[0] not in (
        "-h",
        "--help",
        "--version",
    ):
        command = next((a for a in argv if a in parser.commands), None)
        where = f"xpnet {command} {first} ..." if command else "xpnet COMMAND ..."
        parser.error(f"{first} goes after the command: {where}")


def _a_rank_other_than_0(argv: list[str]) -> bool:
    """Whether this is rank 1, 2, ... of ``mpiexec ... --distributed``."""
    from .distributed import launched_as_rank_other_than_0

    return "--distributed" in argv and launched_as_rank_other_than_0()


def main(argv: list[str] | None = None) -> int:
    from ..interrupts import Terminated, install
    from ..stdio import guard_standard_streams

    restore_streams = guard_standard_streams()
    restore_handlers = install()

    def restore_signals() -> None:
        restore_handlers()
        restore_streams()

    # Notices from the library (e.g. the auto device's fallback) as one line each.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_PrintableFormatter("xpnet: %(message)s"))
    logger = logging.getLogger("xpnet")
    saved_logging = logger.handlers, logger.propagate
    logger.handlers = [handler]
    logger.propagate = False

    def restore_logging() -> None:
        logger.handlers, logger.propagate = saved_logging

    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        parser.print_help()
        restore_signals()
        restore_logging()
        return 0
    _Parser.silent = _a_rank_other_than_0(argv)
    try:
        _refuse_options_before_the_command(parser, argv)
        args, unknown = parser.parse_known_args(argv)
        command = parser.commands[args.command]
        if unknown:
            # Name the command's own --help, not the top-level one.
            command.error(f"unrecognized arguments: {' '.join(unknown)}")
    except SystemExit as exc:
        restore_signals()
        restore_logging()
        if (
            exc.code == 2
            and "--json" in argv
            and parser.last_error
            and not (_Parser.silent)
        ):
            print_json({"error": parser.last_error, "exit_code": 2})
        raise
    rest = argv[argv.index(args.command) + 1 :]
    args.given = _given_options(command, rest, args)
    if "device" not in args.given:
        # The auto device's fallback notice is for those who asked for auto;
        # the default's choice is in the run's first line.
        handler.addFilter(lambda r: not getattr(r, "auto_device_notice", False))
    args.report = {}
    args.cleanup = [restore_signals, restore_logging]
    try:
        refuse_idle_options(args)
        return int(args.func(args) or 0)
    except Exit as exc:
        _json_report(args, exc.code, None)
        return exc.code
    except DivergenceError as exc:
        return _fail(args, str(exc), 1)
    except XpnetError as exc:
        return _fail(args, str(exc), 2)
    except MemoryError as exc:
        return _fail(
            args,
            f"out of memory ({exc or 'no details'}): use a smaller model, batch or "
            "dataset",
            2,
        )
    except (KeyboardInterrupt, Terminated) as exc:
        how = str(exc) if isinstance(exc, Terminated) else "interrupted"
        saved = getattr(args, "describe_saved", None)
        code = exc.exit_code if isinstance(exc, Terminated) else 1
        message = how + (f"; {saved()}" if saved else "")
        print(f"{end_bar_line()}xpnet: {printable(message)}", file=sys.stderr)
        _json_report(args, code, message)
        return code
    except BrokenPipeError:
        return 1
    except Exception as exc:  # the last resort: one line, details on request
        if os.environ.get("XPNET_DEBUG"):
            raise
        return _fail(
            args,
            f"unexpected error: {type(exc).__name__}: {exc} "
            "(set XPNET_DEBUG=1 for the traceback)",
            1,
        )
    finally:
        for release in reversed(args.cleanup):
            release()
