"""What several ``gnnpot`` commands share: the error guard and the ``--key-map`` parser."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from gnnpot.data import DataError
from gnnpot.data.io import LABEL_NAMES


def guarded(command: str, run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a subcommand; bad input becomes one error line and exit status 1.

    Args:
        command: the command's words after ``gnnpot`` (``"data stats"``), for the error line.
        run: the subcommand, called with ``args``; returns the exit status.
        args: the parsed arguments.

    Returns:
        The exit status of ``run``, or 1 when it raised an input error (``DataError``, ``OSError``,
        ``ValueError``, ``RuntimeError`` or ``KeyError``).
    """
    try:
        return run(args)
    except (DataError, OSError, ValueError, RuntimeError, KeyError) as err:
        print(f"gnnpot {command}: error: {err}", file=sys.stderr)
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
