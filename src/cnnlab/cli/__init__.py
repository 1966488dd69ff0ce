"""The `cnnlab` command: flags in, one API call, lines out; no logic of its own.

Each command is one `Command` unit (cli.parsing) in the module of its family:
info (presets, summary), training (train, evaluate, predict), data (data,
data get), studies (study, search, runs, report), interop (import, export,
export-study). This module only
dispatches, and gives every command the same ending for bad input (one `error:`
line, exit 2) and for Ctrl-C and SIGTERM (one `interrupted` line, 130 or 143).

It imports nothing heavy itself: `main` puts the signal handlers in place first,
so a Ctrl-C while PyTorch loads ends in the same one line as any other.
"""

from __future__ import annotations

import argparse
import atexit
import io
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from cnnlab.errors import CnnlabError
from cnnlab.util.interrupts import (
    EXIT_SIGINT,
    EXIT_SIGTERM,
    exit_code,
    raised_interrupt,
    signal_name,
    signals_as_interrupts,
)
from cnnlab.util.terminal import PipeSafe, shown

EXIT_USAGE = 2  # bad input of any kind: flags, files, data

# Name -> what runs it: filled from the command units on first use. A test may
# put its own function here for one call.
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command_units() -> tuple[Any, ...]:
    """Every command, in `--help` order."""
    from cnnlab.cli import data, info, interop, studies, training

    return (
        *info.COMMANDS,
        training.TRAIN,
        studies.STUDY,
        studies.SEARCH,
        studies.RUNS,
        studies.REPORT,
        training.EVALUATE,
        training.PREDICT,
        data.DATA,
        *interop.COMMANDS,
    )


def build_parser() -> argparse.ArgumentParser:
    from cnnlab.cli.parsing import Parser

    parser = Parser(
        prog="cnnlab",
        description="Design, train and compare convolutional networks on image "
        "data. Architectures are YAML files in Keras's layer vocabulary, or the "
        "notebook's nine built-in presets.",
        epilog="Example: cnnlab train conv5-medium --epochs 2. "
        "Bad input exits with code 2, Ctrl-C with 130, SIGTERM with 143.",
    )
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks on errors"
    )
    # --debug may also follow the command; SUPPRESS keeps a top-level one from reset.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show tracebacks",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    parser.commands = {}  # type: ignore[attr-defined]
    for unit in command_units():
        p = sub.add_parser(
            unit.name,
            parents=[common],
            help=unit.help,
            description=unit.description,
            epilog=unit.epilog,
        )
        unit.arguments(p)
        parser.commands[unit.name] = p  # type: ignore[attr-defined]
        COMMANDS.setdefault(unit.name, unit)
    return parser


def _usable_streams() -> str | None:
    """Why output cannot be written (standard output closed), else None; and
    streams that cannot encode a character ('±', a name) show an escape for it."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    if sys.stdout is None:
        return (
            "standard output is closed (>&-), so nothing could be shown. "
            "Run the command with an output, e.g. > out.txt or > /dev/null."
        )
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    problem = _usable_streams()
    if problem is not None:
        if sys.stderr is not None:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = PipeSafe(sys.stdout), PipeSafe(sys.stderr)
    args: argparse.Namespace | None = None
    code: int | None = None
    try:
        # As the console script (argv None) the process ends after this: a signal
        # after the command finished is then ignored, not a death by signal.
        with signals_as_interrupts(restore=argv is not None):
            try:
                parser = build_parser()  # imports the commands: inside the handlers
            except Exception as err:  # an interrupt left an import half done
                cause = interrupt_in(err) or raised_interrupt()
                if cause is None:
                    raise
                raise cause from err
            args, extra = parser.parse_known_args(argv)
            if extra:  # unknown flags, reported against the command's own flags
                parser.commands[args.command].error(  # type: ignore[attr-defined]
                    f"unrecognized arguments: {' '.join(extra)}"
                )
            code = _run(args)
    except KeyboardInterrupt as err:
        # The signal came outside `_run`'s own handling: while the commands loaded,
        # while it printed an error, or after the command returned but before the
        # handlers were put back.
        if code is None:
            if args is not None and args.debug:
                raise
            code = _interrupted(args, err)
    finally:
        sys.stdout, sys.stderr = streams
    assert code is not None  # set by `_run` or by the interrupt it missed
    if argv is None and code in (EXIT_SIGINT, EXIT_SIGTERM):
        # A KeyboardInterrupt that passed through C code (an import, say) can leave
        # CPython set to end the process by SIGINT after main returns, whatever the
        # code: exit now with the code the line promised, after the exit handlers
        # a normal exit runs (multiprocessing's semaphores, loggers' last writes:
        # skipped, the pool's resource tracker would warn of leaks after our line).
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _run(args: argparse.Namespace) -> int:
    """The command, with bad input and interrupts each ending in one line."""
    try:
        return COMMANDS[args.command](args)
    except CnnlabError as err:
        if args.debug:
            raise
        print(f"error: {shown(str(err), one_line=True)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as err:
        if args.debug:
            raise
        return _interrupted(args, err)
    except Exception as err:
        # Python wraps an interrupt raised in some places in another error (a
        # signal during a class's creation, as an import runs, becomes
        # "RuntimeError: Error calling __set_name__"): it is still the interrupt.
        # An interrupt can also leave a library half imported, so that the error
        # that ends the command is the library's, with no link to the interrupt.
        cause = interrupt_in(err) or raised_interrupt()
        if cause is None or args.debug:
            raise
        return _interrupted(args, cause)


def interrupt_in(err: BaseException) -> KeyboardInterrupt | None:
    """The KeyboardInterrupt (or SIGTERM's) that `err` was raised from, if any."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _interrupted(args: argparse.Namespace | None, err: KeyboardInterrupt) -> int:
    """Say what an interrupt left and how to go on; the exit code it ends with."""
    unit = None if args is None else COMMANDS.get(args.command)
    after = getattr(unit, "after_interrupt", None)
    text = after(args) if after is not None else "nothing was written."
    print(f"interrupted ({signal_name(err)}): {text}", file=sys.stderr)
    return exit_code(err)
