"""MD speed with neighbour-list reuse (skin) against rebuilding the list at every step.

Runs the same NVE trajectory with ``skin=0`` (fresh vesin list every step) and with a skin,
alternating, and prints steps/s, neighbour-list builds and the largest difference between the
trajectories' total energies: skin against rebuild, and rebuild against rebuild (the noise floor:
with more than one thread, float32 sums are not bitwise reproducible and MD amplifies the last-bit
differences; with one thread all runs agree exactly). One JSON line per run.

    python scripts/md_speed.py --model schnet-rmd17-aspirin --structure rmd17_aspirin_test_01.npz
    python scripts/md_speed.py --model painn-emt-cuau --structure cu --repeat 6
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from ase import Atoms
from ase.build import bulk

from gnnpot import GNNPotCalculator
from gnnpot.calculators import run_md
from gnnpot.data import read_frames


def structure(kind: str, repeat: int) -> Atoms:
    """'cu': an fcc Cu3Au cell of ``repeat``^3 cubic cells; else frame 0 of a file (rMD17 npz included)."""
    if kind == "cu":
        atoms = bulk("Cu", "fcc", a=3.7, cubic=True).repeat(repeat)
        atoms.numbers[::4] = 79
        return atoms
    atoms = read_frames(kind, index="0:1", require=())[0]
    atoms.calc = None
    return atoms


def main() -> None:
    """Time MD steps with and without the skin neighbour list and print the rates."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model file, run, checkpoint or pretrained name")
    parser.add_argument("--structure", default="cu", help="'cu' (fcc Cu3Au cell) or a structure file (frame 0)")
    parser.add_argument("--repeat", type=int, default=4, help="cubic cells per side for 'cu' (default 4)")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--timestep", type=float, default=1.0, help="fs")
    parser.add_argument("--temperature", type=float, default=300.0)
    parser.add_argument("--skin", type=float, default=0.5)
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of (rebuild, skin)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = structure(args.structure, args.repeat)
    energies: dict[tuple[int, float], np.ndarray] = {}
    for round_ in range(args.rounds):
        for skin in (0.0, args.skin):
            atoms = start.copy()
            calc = GNNPotCalculator(args.model, dtype=args.dtype, skin=skin)
            result = run_md(atoms, calc, temperature=args.temperature, timestep=args.timestep, steps=args.steps,
                            interval=10, min_distance=None, seed=0)  # fmt: skip
            energies[round_, skin] = np.array([row[4] for row in result.log])
            record = {
                "model": args.model,
                "num_atoms": len(atoms),
                "skin": skin,
                "round": round_,
                "steps": result.steps,
                "steps_per_second": round(result.steps_per_second, 2),
                "neighbor_list_builds": result.neighbor_list_builds,
                "max_abs_drift_mev_per_atom": round(result.max_abs_drift_mev_per_atom, 5),
            }
            print(json.dumps(record), flush=True)
    skin_vs_rebuild = max(np.abs(energies[r, 0.0] - energies[r, args.skin]).max() for r in range(args.rounds))
    rebuild_vs_rebuild = max(np.abs(energies[0, 0.0] - energies[r, 0.0]).max() for r in range(args.rounds))
    print(json.dumps({"max_dE_tot_skin_vs_rebuild_eV": float(skin_vs_rebuild),
                      "max_dE_tot_rebuild_vs_rebuild_eV": float(rebuild_vs_rebuild)}))  # fmt: skip


if __name__ == "__main__":
    main()
