r"""``gnnpot md`` steps/s and ``gnnpot fit`` training steps/s by thread count, idle and beside one busy process.

Each row is one system. Every number is a separate ``gnnpot md --json --compile off`` process (NVE,
float64, the CLI's own timing), so each starts with fresh OpenMP threads:

- idle: ``--threads 1`` and ``--threads 2``;
- beside one busy process (a Python loop that keeps one core busy the whole time): ``--threads 2``
  (what torch picks by itself on 2 cores, the "before") and ``--threads auto`` (the "after",
  :func:`gnnpot.calculators.threads.choose_threads`).

The idle columns set :data:`~gnnpot.calculators.threads.SMALL_SYSTEM`: below it a second thread did
not pay.

``gnnpot fit`` (``--parts fit``): the demo's recipe (``configs/painn_demo.yaml``, PaiNN on EMT Cu-Au
from ``gnnpot data generate``, batches of 8), eager, with the same four settings (``auto`` is
:func:`~gnnpot.calculators.threads.training_threads`). Each rate is (60 - 20) steps over the wall
time of a 60-step process minus that of a 20-step one, so the start-up, data loading and statistics
cancel.

Run it alone on the machine; ``--parts`` reruns one table and keeps the other on the page:

    python -m benchmarks.threads --out docs/threads.md [--parts md,fit]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from ase.build import bulk, molecule
from ase.io import write

from benchmarks.runner import DEFAULT_RMD17_DIR
from gnnpot.calculators.threads import SMALL_SYSTEM, cpu_busy
from gnnpot.data.io import read_frames

GNNPOT = [sys.executable, "-c", "import sys; from gnnpot.cli import main; sys.exit(main())"]
BUSY = [sys.executable, "-c", "while True: pass"]
REPO = Path(__file__).resolve().parents[1]
FIT_STEPS = (20, 60)
TABLES = ("md", "fit")


def _clean_env() -> dict[str, str]:
    """This environment without the thread variables, so that ``--threads`` alone decides."""
    return {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}


def systems(rmd17: Path) -> list[tuple[str, object, str, float, int]]:
    """``(name, atoms, model, timestep fs, steps)`` of each system; aspirin only with the rMD17 files."""
    out = [("ethanol", molecule("CH3CH2OH"), "schnet-rmd17-ethanol", 0.5, 400)]
    aspirin = rmd17 / "rmd17_aspirin_test_01.npz"
    if aspirin.is_file():
        atoms = read_frames(aspirin, index=0, require=())[0]
        atoms.calc = None
        out.append(("aspirin", atoms, "schnet-rmd17-aspirin", 0.5, 300))
    for repeat, steps in ((3, 100), (4, 60), (6, 20)):
        cell = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(repeat)
        cell.numbers[::4] = 79
        out.append((f"Cu-Au {len(cell)}", cell, "painn-emt-cuau", 2.0, steps))
    return out


def md_rate(structure: Path, model: str, timestep: float, steps: int, threads: str) -> float:
    """Steps/s of one ``gnnpot md`` process."""
    command = [*GNNPOT, "md", "--model", model, "--structure", str(structure), "--steps", str(steps),
               "--timestep", str(timestep), "--threads", threads, "--compile", "off",
               "--json", "--log", "-"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=_clean_env(), check=True)
    summary = json.loads(done.stdout)
    return float(summary["steps_per_second"])


def fit_seconds(data: Path, run_dir: Path, steps: int, threads: str) -> float:
    """Wall seconds of one ``gnnpot fit`` process of the demo recipe, ``steps`` optimiser steps."""
    command = [*GNNPOT, "fit", "--config", str(REPO / "configs" / "painn_demo.yaml"), "--data.train_file", str(data),
               "--trainer.max_steps", str(steps), "--trainer.accelerator", "cpu", "--trainer.limit_val_batches", "0",
               "--trainer.enable_progress_bar", "false", "--run.dir", str(run_dir), "--run.plots", "false",
               "--threads", threads]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, capture_output=True, text=True, env=_clean_env(), check=True)
    return time.perf_counter() - start


def fit_rate(data: Path, run_dir: Path, threads: str) -> float:
    """Training steps/s of the demo recipe: 40 steps over the time a 60-step run takes beyond a 20-step one."""
    short, long = (fit_seconds(data, run_dir, steps, threads) for steps in FIT_STEPS)
    return (FIT_STEPS[1] - FIT_STEPS[0]) / (long - short)


def beside_busy(measure: Callable[[str], float]) -> list[float]:
    """``measure("2")`` and ``measure("auto")`` while another process keeps one core busy."""
    busy = subprocess.Popen(BUSY)
    try:
        time.sleep(1.0)
        return [measure(t) for t in ("2", "auto")]
    finally:
        busy.kill()
        busy.wait()


def row(cells: list[str], idle: list[float], shared: list[float], digits: int) -> str:
    """One table row: the labels, idle 1 and 2 threads, beside a busy process 2 and auto, and their ratio."""
    rates = [f"{value:.{digits}f}" for value in (*idle, *shared)]
    return "| " + " | ".join([*cells, *rates, f"{shared[1] / shared[0]:.1f}x"]) + " |"


def md_table(rmd17: Path, work: Path, busy_before: str) -> list[str]:
    """The ``gnnpot md`` section, printed row by row."""
    lines = [
        "## `gnnpot md --threads`",
        "",
        f"CPU busy before the run: {busy_before}. Steps/s of `gnnpot md` (NVE, float64), one process per number. "
        f"`auto` below {SMALL_SYSTEM} atoms is one thread.",
        "",
        "| system | atoms | model | idle, 1 thread | idle, 2 threads | beside a busy process, 2 threads (before) "
        "| beside a busy process, auto (after) | after / before |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    print("\n".join(lines), flush=True)
    for name, atoms, model, timestep, steps in systems(rmd17):
        structure = work / f"{name.replace(' ', '_')}.extxyz"
        write(structure, atoms)
        idle = [md_rate(structure, model, timestep, steps, t) for t in ("1", "2")]
        shared = beside_busy(lambda t: md_rate(structure, model, timestep, steps, t))  # noqa: B023
        lines.append(row([name, str(len(atoms)), model], idle, shared, 1))
        print(lines[-1], flush=True)
    return lines


def fit_table(work: Path, busy_before: str) -> list[str]:
    """The ``gnnpot fit`` section, printed row by row."""
    data = work / "emt_cuau.xyz"
    subprocess.run([*GNNPOT, "data", "generate", "--out", str(data)], capture_output=True, env=_clean_env(), check=True)
    lines = [
        "## `gnnpot fit --threads`",
        "",
        f"CPU busy before the run: {busy_before}. Training steps/s of the demo recipe (`configs/painn_demo.yaml`: "
        "PaiNN, 32 features, EMT Cu-Au, batches of 8, eager), from the wall times of a 60-step and a 20-step "
        "`gnnpot fit` process. `auto` is `OMP_NUM_THREADS` when set (unset here), else the cores not busy now.",
        "",
        "| recipe | idle, 1 thread | idle, 2 threads | beside a busy process, 2 threads (before) "
        "| beside a busy process, auto (after) | after / before |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    print("\n".join(lines), flush=True)
    idle = [fit_rate(data, work / "runs", t) for t in ("1", "2")]
    shared = beside_busy(lambda t: fit_rate(data, work / "runs", t))
    lines.append(row(["painn_demo"], idle, shared, 2))
    print(lines[-1], flush=True)
    return lines


def main(argv: list[str] | None = None) -> int:
    """Measure the ``--parts`` and print (and with ``--out`` write) their tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rmd17-dir", default=str(DEFAULT_RMD17_DIR), help="folder of the rMD17 split files")
    parser.add_argument("--out", help="write the page here (markdown); tables not in --parts are kept from it")
    parser.add_argument("--parts", default="md,fit", help="comma list of md, fit (default both)")
    args = parser.parse_args(argv)
    parts = args.parts.split(",")
    if not parts or set(parts) - set(TABLES):
        parser.error(f"--parts takes a comma list of {', '.join(TABLES)}, got {args.parts!r}")
    busy = cpu_busy(1.0)
    busy_before = "unknown" if busy is None else f"{100 * busy:.0f} %"
    sections = dict.fromkeys(TABLES, "")
    if args.out and Path(args.out).is_file():
        sections.update(split_sections(Path(args.out).read_text()))
    with tempfile.TemporaryDirectory(prefix="gnnpot-threads-") as work:
        for part in parts:
            table = (
                md_table(Path(args.rmd17_dir), Path(work), busy_before)
                if part == "md"
                else fit_table(Path(work), busy_before)
            )
            sections[part] = "\n".join(table) + "\n"
    if args.out:
        header = (f"# Threads\n\n`python -m benchmarks.threads --out docs/threads.md`. Machine: {platform.node()}, "
                  f"{os.cpu_count()} CPUs, torch {torch.__version__}.\n")  # fmt: skip
        Path(args.out).write_text("\n".join([header, *(sections[name] for name in TABLES if sections[name])]))
    return 0


def split_sections(page: str) -> dict[str, str]:
    """The tables of a page this script wrote, by part (``## `gnnpot md`` ...), each to its section's end."""
    found = {}
    for part in TABLES:
        start = page.find(f"## `gnnpot {part} --threads`")
        if start >= 0:
            end = page.find("\n## ", start + 1)
            found[part] = page[start : len(page) if end < 0 else end + 1]
    return found


if __name__ == "__main__":
    sys.exit(main())
