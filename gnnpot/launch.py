"""The ``gnnpot`` console script: start the process with an allocator setting, then run the command.

PyTorch has no caching allocator on the CPU: each tensor is a ``malloc`` and each release a ``free``.
glibc serves a block above its mmap threshold (32 MB at most) with a fresh ``mmap`` and returns it
with ``munmap``, so every large per-edge tensor of a big system is page-faulted in again, 4 KiB at a
time, at every step. That is a large part of why the cost per atom grew with the system size. Measured
(2026-12-06, 2-core VM, one thread, the other core busy; eager, the calculator's energy + forces of
rattled fcc Cu, µs/atom/step, best of 3 steps, untrained ``small`` models; 864 -> 10,976 atoms):

============  ==================  ======================  ==========================================
family        glibc default       ``hugepages``           ``reuse``
============  ==================  ======================  ==========================================
SchNet        122 -> 360          81 -> 169               86 -> 112 (peak RSS 2.08 -> 2.45 GB)
PaiNN         566 -> 2338         426 -> 1005             505 -> 456 (peak RSS 7.2 -> 9.9 GB)
NequIP        1443 -> 3329        1114 -> 2066            924 -> 996 (peak RSS 6.4 -> 10.9 GB)
============  ==================  ======================  ==========================================

``GNNPOT_MALLOC`` picks the setting (glibc's tunables, which it reads only when a process starts;
hence the one re-exec of the process here, before torch is imported):

* ``auto`` (default): ``system``, until a model call of :data:`LARGE_SYSTEM` atoms or more (in
  :class:`~gnnpot.calculators.GNNPotCalculator`, and so the LAMMPS and i-PI drivers, in
  :func:`~gnnpot.predict` and ``gnnpot eval`` per batch, in the torch-sim model per state); then
  :func:`reuse_large_blocks` makes the process ``reuse`` from there on with glibc's ``mallopt`` (no
  restart; library users get it too);
* ``system``: leave the allocator alone;
* ``hugepages``: ``glibc.malloc.hugetlb=1``, glibc asks for transparent huge pages (``madvise``), so
  a large block faults in 2 MiB at a time. The peak RSS did not change.
* ``reuse``: ``glibc.malloc.mmap_max=0`` and a 4 GiB trim threshold: large blocks come from the heap
  and stay there for the next step. The cost per atom was flat for SchNet and NequIP (not for compiled
  PaiNN), but the heap fragments, and the peak RSS of large systems rose by 13-70 %.

Neither is the default for small systems, because they did not gain. Idle VM, compiled path (``python -m
benchmarks --scaling``, one run each): NequIP at 108 atoms 385 µs/atom/step with glibc's default, 562
with ``hugepages``, 406 with ``reuse``; MACE small W4 (Cu108, 2 threads) 4.00 calls/s with the
default, 3.48 and 3.61 with ``hugepages``. A huge page zeroes 2 MiB where a mid-sized block needs far
less, and a block that stays in the heap costs memory. At 10,976 atoms the compiled path gained
with both (µs/atom/step, default / ``hugepages`` / ``reuse``; peak RSS of the default and ``reuse``):
SchNet 63.9 / 53.7 / 44.8 (1.46 / 1.66 GB), PaiNN 366 / 243 / 264 (4.40 / 5.14 GB), NequIP 678 / 631 /
407 (4.07 / 4.61 GB). Whole table: ``docs/benchmarks.md``. From 10,976 atoms to the largest cells
that fit (97,556 atoms of SchNet, 32,000 of PaiNN and NequIP; one pinned thread, the other core busy),
and in an idle A/B at 10,976 atoms, ``reuse`` was 1.06-1.9x faster than glibc's default in every
run, at 10-42 % more peak memory: hence ``auto``'s switch at :data:`LARGE_SYSTEM` atoms.

Nothing is changed where the user already chose (``GLIBC_TUNABLES`` names a malloc tunable, a
``MALLOC_*_`` variable is set, or ``LD_PRELOAD`` holds jemalloc, tcmalloc or mimalloc), outside
glibc 2.35 or newer, and, for ``hugepages``, where transparent huge pages are not in ``madvise`` mode
(``always`` already gives them, ``never`` forbids them). The PyTorch tuning guide's remedy is an
``LD_PRELOAD`` of jemalloc or tcmalloc, which needs a library that pip does not install; Python code
that uses gnnpot as a library can set the same ``GLIBC_TUNABLES`` before it starts.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

SETTINGS = {
    "auto": "",
    "hugepages": "glibc.malloc.hugetlb=1",
    "reuse": "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=4294967296",
    "system": "",
}
VARIABLE = "GNNPOT_MALLOC"
THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")
OTHER_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")
LARGE_SYSTEM = 10_000  # atoms from which ``auto`` reuses large blocks (see the module docstring)
# mallopt's parameter numbers (glibc's malloc.h) and its largest trim threshold (an int).
M_TRIM_THRESHOLD, M_MMAP_MAX, TRIM_MAX = -1, -4, 2**31 - 1
_reusing = False  # reuse_large_blocks has switched this process


def glibc_version() -> tuple[int, int] | None:
    """(major, minor) of the C library when it is glibc, else None."""
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()  # "glibc 2.36"
        major, minor = version.split(".")[:2]
        return (int(major), int(minor)) if name == "glibc" else None
    except (AttributeError, ValueError, OSError):  # not glibc, or not Linux
        return None


def thp_mode(path: Path = THP_MODE) -> str | None:
    """The transparent huge page mode (the bracketed word of ``enabled``), None where unknown."""
    try:
        text = path.read_text()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1 : end] if 0 <= start < end else None


def allocator_environment(
    environ: Mapping[str, str], glibc: tuple[int, int] | None, thp: str | None
) -> dict[str, str] | None:
    """The environment to restart with, or None to go on as is.

    Args:
        environ: the current environment.
        glibc: :func:`glibc_version`.
        thp: :func:`thp_mode`.

    Raises:
        ValueError: ``GNNPOT_MALLOC`` is not one of :data:`SETTINGS`.
    """
    choice = _choice(environ)
    tunables = environ.get("GLIBC_TUNABLES", "")
    if not SETTINGS[choice] or _chosen_before(environ) or glibc is None or glibc < (2, 35):
        return None
    if choice == "hugepages" and thp != "madvise":
        return None
    updated = dict(environ)
    updated["GLIBC_TUNABLES"] = ":".join(part for part in (tunables, SETTINGS[choice]) if part)
    return updated


def _choice(environ: Mapping[str, str]) -> str:
    """``GNNPOT_MALLOC`` (default ``auto``); ValueError when it is not one of :data:`SETTINGS`."""
    choice = environ.get(VARIABLE, "auto")
    if choice not in SETTINGS:
        raise ValueError(f"{VARIABLE} must be one of {sorted(SETTINGS)}, got {choice!r}")
    return choice


def _chosen_before(environ: Mapping[str, str]) -> bool:
    """Whether the user already set up the allocator (a malloc tunable, ``MALLOC_*_``, another malloc)."""
    return (
        "glibc.malloc." in environ.get("GLIBC_TUNABLES", "")
        or any(name.startswith("MALLOC_") and name.endswith("_") for name in environ)
        or any(name in environ.get("LD_PRELOAD", "") for name in OTHER_ALLOCATORS)
    )


def reusing() -> bool:
    """Whether :func:`reuse_large_blocks` has switched this process to ``reuse``."""
    return _reusing


def reuse_large_blocks(
    num_atoms: int, environ: Mapping[str, str] = os.environ, mallopt: Callable[[int, int], int] | None = None
) -> bool:
    """Under ``GNNPOT_MALLOC=auto``, switch this process to ``reuse`` once a system is large; True once switched.

    From :data:`LARGE_SYSTEM` atoms on, glibc's ``mallopt`` stops serving large blocks by ``mmap``
    and raises the trim threshold to its largest value (2 GiB), what the ``reuse`` tunables do at
    start-up. Nothing changes for smaller systems, another ``GNNPOT_MALLOC``, an allocator the user
    chose (as :func:`allocator_environment`), or outside glibc.

    Args:
        num_atoms: atoms of the system about to be computed.
        environ: the environment.
        mallopt: glibc's ``mallopt`` (default: from the C library); for tests.
    """
    global _reusing
    if _reusing or num_atoms < LARGE_SYSTEM:  # first, and cheap: callers call at every step
        return _reusing
    try:
        auto = _choice(environ) == "auto"
    except ValueError:  # the console script reports a bad choice; a library call leaves it be
        return False
    if not auto or _chosen_before(environ) or glibc_version() is None:
        return False
    if mallopt is None:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    _reusing = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_MAX))
    return _reusing


def main(execve: Callable[..., None] = os.execve) -> None:
    """Console script entry: restart with :func:`allocator_environment` when it says so, else run the CLI."""
    try:
        environment = allocator_environment(os.environ, glibc_version(), thp_mode())
    except ValueError as err:
        print(f"gnnpot: error: {err}", file=sys.stderr)
        sys.exit(2)
    if environment is not None:
        execve(sys.executable, sys.orig_argv, environment)  # does not return; the new process comes back here
        return
    from gnnpot.cli import main as cli_main

    sys.exit(cli_main())
