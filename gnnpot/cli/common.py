"""What several ``gnnpot`` commands share: the error guard and the ``--key-map`` parser."""

from __future__ import annotations

import argparse
import json
import sys
import tarfile
from collections.abc import Callable
from typing import Any, NoReturn

from gnnpot.data import DataError
from gnnpot.data.io import LABEL_NAMES


class ArgumentParser(argparse.ArgumentParser):
    """argparse with gnnpot's error format: one line naming the command and the problem, exit status 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``<prog>: error: <message> (see <prog> -h)`` without the usage text and exit with status 2."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} -h)\n")


# Exceptions whose message is written for the user: bad input, refused files, bad values.
USER_ERRORS = (DataError, OSError, ValueError, RuntimeError, KeyError, tarfile.TarError)
DEBUG_FLAG = "--debug"
_debug = False


def set_debug(on: bool) -> None:
    """``--debug``: errors propagate with their traceback instead of becoming one line."""
    global _debug
    _debug = on


def is_debug() -> bool:
    """Whether ``--debug`` was given."""
    return _debug


def error_line(command: str, err: BaseException) -> str:
    """``gnnpot <command>: error: <message>`` on one line.

    Args:
        command: the command's words after ``gnnpot`` (``"data stats"``).
        err: the exception; one that is not among :data:`USER_ERRORS` is an internal error, named
            with its type and a pointer to ``--debug``.
    """
    message = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    message = "; ".join(line.strip() for line in message.splitlines() if line.strip()) or type(err).__name__
    if not isinstance(err, USER_ERRORS):
        message = f"{type(err).__name__}: {message} (unexpected; run again with {DEBUG_FLAG} for the traceback)"
    return f"gnnpot {command}: error: {message}"


def guarded(command: str, run: Callable[[Any], int], args: argparse.Namespace | None) -> int:
    """Run a subcommand; an error becomes one line on stderr and exit status 1 (unless ``--debug``).

    Args:
        command: the command's words after ``gnnpot`` (``"data stats"``), for the error line.
        run: the subcommand, called with ``args``; returns the exit status.
        args: the parsed arguments.

    Returns:
        The exit status of ``run``, or 1 when it raised (see :func:`error_line`).
    """
    try:
        return run(args)
    except Exception as err:
        if is_debug():
            raise
        print(error_line(command, err), file=sys.stderr)
        return 1


def parse_key_map(text: str) -> dict[str, str]:
    """``--key-map``: ``'energy=REF_energy,forces=DFT_forces'`` or a JSON object to a dict.

    Args:
        text: the option's value.

    Returns:
        Label name (among :data:`gnnpot.data.io.LABEL_NAMES`) to the key in the file.

    Raises:
        argparse.ArgumentTypeError: malformed pairs or a name that is not a label.
    """
    text = text.strip()
    if text.startswith("{"):
        mapping = json.loads(text)
    else:
        pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
        if any(len(pair) != 2 for pair in pairs):
            raise argparse.ArgumentTypeError(f"expected name=key pairs separated by commas, got {text!r}")
        mapping = {name.strip(): key.strip() for name, key in pairs}
    unknown = sorted(set(mapping) - set(LABEL_NAMES))
    if unknown:
        raise argparse.ArgumentTypeError(f"key map names must be among {list(LABEL_NAMES)}, got {unknown}")
    return mapping
