"""``gnnpot benchmark``: the speed workloads, run from the command line."""

from __future__ import annotations

from collections.abc import Sequence


def benchmark_main(argv: Sequence[str]) -> int:
    """``gnnpot benchmark``: speed workloads against the peer packages (see :mod:`gnnpot.benchmark`)."""
    from gnnpot.benchmark import main as benchmark_main

    return benchmark_main(list(argv))
