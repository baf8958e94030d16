"""How many intra-op threads a model evaluation should use: ``--threads auto`` of the CLI.

PyTorch starts with one OpenMP thread per core, and OpenMP threads spin while they wait for each
other. On a machine where another process already occupies a core, a spinning thread and that
process take turns on it, and each step waits for the slowest thread: ``gnnpot md`` on aspirin ran
at 10.5 steps/s with 2 threads beside one busy process against 99.7 with one. Small graphs also
gain little from a second thread. ``auto`` therefore takes

* one thread for systems below :data:`SMALL_SYSTEM` atoms, where the measurement in
  ``docs/threads.md`` (``python -m benchmarks.threads``) found a second thread not worth it;
* otherwise the cores this process may use that are not busy now (:func:`free_cores`): the usable
  cores minus what the rest of the machine keeps busy over a 0.2 s look at ``/proc/stat`` (at least
  one).

Training (``gnnpot fit --threads auto``, :func:`training_threads`) skips the small-system rule, since
a training batch is one large graph, and keeps ``OMP_NUM_THREADS`` where the user set it.

PyTorch and OpenMP offer no such choice themselves; it is written here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path

import torch

SMALL_SYSTEM = 100  # atoms; see docs/threads.md


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def cpu_busy(interval_s: float = 1.0) -> float | None:
    """The busy share of all CPUs over ``interval_s`` (0 idle, 1 all cores busy), from ``/proc/stat``.

    Unlike the load average, which lags a minute behind, this tells whether something else is
    running now. None where there is no ``/proc/stat``.
    """

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields[:8]), idle

    try:
        total0, idle0 = sample()
        time.sleep(interval_s)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    total = total1 - total0
    return round(1.0 - (idle1 - idle0) / total, 3) if total > 0 else None


def busy_cores(interval_s: float = 0.2) -> float:
    """How many cores other processes keep busy now.

    :func:`cpu_busy` over ``interval_s`` (this process sleeps meanwhile) times the machine's cores;
    the 1-minute load average where ``/proc/stat`` is missing.
    """
    busy = cpu_busy(interval_s)
    if busy is not None:
        return busy * (os.cpu_count() or 1)
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return 0.0


def free_cores() -> int:
    """The usable cores that other processes do not keep busy now, rounded, at least 1."""
    return max(1, min(usable_cores(), int(usable_cores() - busy_cores() + 0.5)))


def _positive(requested: int | str) -> int:
    """``requested`` as a positive thread count; ValueError otherwise."""
    try:
        threads = int(requested)
    except (TypeError, ValueError):
        threads = 0
    if threads < 1 or str(threads) != str(requested).strip():
        raise ValueError(f"threads must be 'auto' or a positive integer, got {requested!r}")
    return threads


def choose_threads(num_atoms: int, requested: int | str = "auto") -> int:
    """The intra-op thread count for a system of ``num_atoms`` (see the module docstring).

    Args:
        num_atoms: atoms per model call.
        requested: a positive number of threads, or ``"auto"``.

    Raises:
        ValueError: ``requested`` is neither ``"auto"`` nor a positive integer.
    """
    if requested != "auto":
        return _positive(requested)
    return 1 if num_atoms < SMALL_SYSTEM else free_cores()


def training_threads(requested: int | str = "auto", environ: Mapping[str, str] = os.environ) -> int:
    """The intra-op thread count of a training process (``gnnpot fit --threads``).

    ``"auto"`` is ``OMP_NUM_THREADS`` when the environment sets it to a positive integer, else
    :func:`free_cores`: beside one busy process, the demo recipe trained at 3.45 steps/s with two
    threads and 7.84 with ``auto`` (docs/threads.md).

    Args:
        requested: a positive number of threads, or ``"auto"``.
        environ: the environment that may set ``OMP_NUM_THREADS``.

    Raises:
        ValueError: ``requested`` is neither ``"auto"`` nor a positive integer.
    """
    if requested != "auto":
        return _positive(requested)
    try:
        return _positive(environ["OMP_NUM_THREADS"])
    except (KeyError, ValueError):
        return free_cores()


def set_threads(num_atoms: int, requested: int | str = "auto") -> int:
    """Choose (:func:`choose_threads`) and set torch's intra-op thread count; returns it."""
    threads = choose_threads(num_atoms, requested)
    torch.set_num_threads(threads)
    return threads
