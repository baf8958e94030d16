"""``gnnpot benchmark``: the speed benchmark of a source checkout (``python -m benchmarks``)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import gnnpot


def benchmark_main(argv: Sequence[str]) -> int:
    """``gnnpot benchmark``: run ``python -m benchmarks`` of the source checkout gnnpot is imported from.

    The speed benchmark lives in the source repository (``benchmarks/`` beside ``gnnpot/``), not in
    the installed package: outside a checkout this says so on stderr and returns 2.

    Args:
        argv: the benchmark's arguments (see ``python -m benchmarks --help``).

    Returns:
        The benchmark's exit status, or 2 outside a source checkout.
    """
    repo = Path(gnnpot.__file__).resolve().parents[1]
    if not (repo / "benchmarks" / "__main__.py").is_file():
        print(
            "gnnpot benchmark: the speed benchmark lives in the gnnpot source repository (benchmarks/), not in the "
            "installed package; run `python -m benchmarks` in a checkout",
            file=sys.stderr,
        )
        return 2
    pythonpath = os.pathsep.join(p for p in (str(repo), os.environ.get("PYTHONPATH", "")) if p)
    command = [sys.executable, "-m", "benchmarks", *argv]
    return subprocess.call(command, env=dict(os.environ, PYTHONPATH=pythonpath))
