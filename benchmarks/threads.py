r"""``gnnpot md`` steps/s by thread count, on an idle machine and beside one busy process.

Each row is one system. Every number is a separate ``gnnpot md --json --compile off`` process (NVE,
float64, the CLI's own timing), so each starts with fresh OpenMP threads:

- idle: ``--threads 1`` and ``--threads 2``;
- beside one busy process (a Python loop that keeps one core busy the whole time): ``--threads 2``
  (what torch picks by itself on 2 cores, the "before") and ``--threads auto`` (the "after",
  :func:`gnnpot.calculators.threads.choose_threads`).

The idle columns set :data:`~gnnpot.calculators.threads.SMALL_SYSTEM`: below it a second thread did
not pay. Run it alone on the machine:

    python -m benchmarks.threads --out docs/threads.md
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
from pathlib import Path

import torch
from ase.build import bulk, molecule
from ase.io import write

from benchmarks.runner import DEFAULT_RMD17_DIR
from gnnpot.calculators.threads import SMALL_SYSTEM, cpu_busy
from gnnpot.data.io import read_frames

GNNPOT = [sys.executable, "-c", "import sys; from gnnpot.cli import main; sys.exit(main())"]
BUSY = [sys.executable, "-c", "while True: pass"]


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
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    summary = json.loads(done.stdout)
    return float(summary["steps_per_second"])


def main(argv: list[str] | None = None) -> int:
    """Measure every system and print (and with ``--out`` write) the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rmd17-dir", default=str(DEFAULT_RMD17_DIR), help="folder of the rMD17 split files")
    parser.add_argument("--out", help="write the page here (markdown)")
    args = parser.parse_args(argv)
    busy_before = cpu_busy(1.0)
    lines = [
        f"Machine: {platform.node()}, {os.cpu_count()} CPUs, torch {torch.__version__}; CPU busy before the run: "
        f"{busy_before if busy_before is None else f'{100 * busy_before:.0f} %'}. Steps/s of `gnnpot md` (NVE, "
        "float64), one process per number. `auto` below "
        f"{SMALL_SYSTEM} atoms is one thread.",
        "",
        "| system | atoms | model | idle, 1 thread | idle, 2 threads | beside a busy process, 2 threads (before) "
        "| beside a busy process, auto (after) | after / before |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    print("\n".join(lines), flush=True)
    with tempfile.TemporaryDirectory(prefix="gnnpot-threads-") as work:
        for name, atoms, model, timestep, steps in systems(Path(args.rmd17_dir)):
            structure = Path(work) / f"{name.replace(' ', '_')}.extxyz"
            write(structure, atoms)
            idle = [md_rate(structure, model, timestep, steps, t) for t in ("1", "2")]
            busy = subprocess.Popen(BUSY)
            try:
                time.sleep(1.0)
                shared = [md_rate(structure, model, timestep, steps, t) for t in ("2", "auto")]
            finally:
                busy.kill()
                busy.wait()
            row = (f"| {name} | {len(atoms)} | {model} | {idle[0]:.1f} | {idle[1]:.1f} | {shared[0]:.1f} "
                   f"| {shared[1]:.1f} | {shared[1] / shared[0]:.1f}x |")  # fmt: skip
            lines.append(row)
            print(row, flush=True)
    if args.out:
        header = "# Threads: `gnnpot md --threads`\n\n`python -m benchmarks.threads --out docs/threads.md`\n\n"
        Path(args.out).write_text(header + "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
