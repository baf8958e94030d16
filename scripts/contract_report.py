"""Print each family's parameter count and the largest errors of the physics contract.

Parameter counts at the default size; contract errors in float64 at tiny widths, as quoted in
closing notes and the README.

    python scripts/contract_report.py [--cutoff 5.0]
"""

from __future__ import annotations

import argparse

import torch
from ase.build import molecule

from gnnpot import REGISTRY, build_model, testing


def main() -> None:
    """Print each family's parameter count and its largest contract errors."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cutoff", type=float, default=5.0)
    args = parser.parse_args()
    cell = testing.triclinic_cell()
    rows = []
    for name in sorted(REGISTRY):
        torch.manual_seed(0)
        default = build_model(name, cutoff=args.cutoff, elements=["Cu", "Au"])
        num_params = sum(p.numel() for p in default.parameters())
        model = (
            build_model(name, cutoff=4.0, elements=["H", "C", "O", "Cu", "Au"], **testing.tiny_hparams(name))
            .double()
            .eval()
        )
        ethanol = molecule("CH3CH2OH")
        ethanol.rattle(0.05, seed=0)
        invariance = max(testing.check_invariance(model, s) for s in (ethanol, cell))
        forces = max(testing.check_forces_fd(model, s) for s in (ethanol, cell))
        stress = testing.check_stress_fd(model, cell)
        rows.append((name, num_params, invariance, forces, stress))
    print(f"{'family':<10}{'params (default)':>18}{'invariance':>14}{'forces FD':>12}{'stress FD':>12}")
    for name, num_params, invariance, forces, stress in rows:
        print(f"{name:<10}{num_params:>18,}{invariance:>14.1e}{forces:>12.1e}{stress:>12.1e}")


if __name__ == "__main__":
    main()
