"""``gnnpot md`` and ``gnnpot relax``: dynamics and optimisation with a model or a committee."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ase import Atoms

from gnnpot.cli.common import ArgumentParser, guarded
from gnnpot.data.io import read_frames

if TYPE_CHECKING:
    from gnnpot.calculators import GNNPotCalculator


def _add_structure_arguments(parser: argparse.ArgumentParser, committee: bool) -> None:
    """The options ``md`` and ``relax`` share: model(s), start structure, dtype, device, skin, compile.

    Args:
        parser: the command's parser.
        committee: ``--model`` takes several models (a committee) when True.
    """
    nargs = "+" if committee else None
    help_model = "model file, checkpoint, run folder or pretrained name" + (
        "; several make a committee (mean and std)" if committee else ""
    )
    parser.add_argument("--model", required=True, nargs=nargs, help=help_model)
    parser.add_argument("--structure", required=True, help="start structure: extxyz (any ase.io format), .db or .npz")
    parser.add_argument("--index", default="-1", help="frame of --structure to start from (default -1, the last)")
    parser.add_argument("--dtype", default="float64", choices=("float32", "float64"), help="(default float64)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--skin", type=float, default=0.5, help="neighbour-list skin, Å; 0 rebuilds every step")
    parser.add_argument(
        "--compile",
        default="auto",
        nargs="?",
        const="on",
        choices=("auto", "on", "off"),
        help="compiled model (torch.compile): slower start, faster steps. auto (default): md compiles after "
        "25 eager steps when the run is long enough to repay it; relax and serve stay eager. --compile = on",
    )
    parser.add_argument(
        "--threads",
        default="auto",
        help="torch intra-op threads, or auto: 1 below 100 atoms, else the cores not busy now (default auto; "
        "see docs/threads.md)",
    )


def _read_structure(path: str, index: str) -> Atoms:
    """One frame of any file :func:`read_frames` takes (extxyz, ASE db, rMD17 npz), checked, without labels.

    Args:
        path: the structure file.
        index: the frame, an integer as text (``"-1"`` for the last).
    """
    frames = read_frames(path, index=int(index), require=())
    atoms = frames[0]
    atoms.calc = None
    return atoms


def _structure_and_calculator(args: argparse.Namespace) -> tuple[Atoms, GNNPotCalculator]:
    """The start structure and the calculator that the options of :func:`_add_structure_arguments` name."""
    from gnnpot.calculators import GNNPotCalculator
    from gnnpot.calculators.threads import set_threads

    atoms = _read_structure(args.structure, args.index)
    args.threads_used = set_threads(len(atoms), args.threads)
    calc = GNNPotCalculator(
        args.model, dtype=args.dtype, device=args.device, skin=args.skin, compile=args.compile == "on"
    )
    return atoms, calc


def md_main(argv: Sequence[str]) -> int:
    """``gnnpot md``: NVE, NVT or NPT with ASE's integrators.

    Args:
        argv: the arguments after ``gnnpot md``.

    Returns:
        The exit status: 0, 1 for bad input, 2 for bad arguments (argparse exits), 3 when the run
        stopped early (atoms too close or the committee's force std too large).
    """
    parser = ArgumentParser(
        prog="gnnpot md",
        description="Molecular dynamics through ASE: nve (velocity Verlet), nvt (Langevin), npt (isotropic "
        "MTK). Logs time, temperature, E_pot, E_kin, E_tot and the drift of E_tot; stops early when atoms "
        "come closer than --min-distance or the committee's force std passes --max-force-std.",
    )
    _add_structure_arguments(parser, committee=True)
    parser.add_argument("--ensemble", default="nve", choices=("nve", "nvt", "npt"), help="(default nve)")
    parser.add_argument("--temperature", type=float, default=300.0, help="K (default 300)")
    parser.add_argument("--timestep", type=float, default=0.5, help="fs (default 0.5)")
    parser.add_argument("--steps", type=int, default=1000, help="number of steps (default 1000)")
    parser.add_argument("--out", default=None, help="trajectory: .traj (ASE) or extxyz (any other name)")
    parser.add_argument("--log", default="-", help="log table file, '-' for stdout (default)")
    parser.add_argument("--interval", type=int, default=10, help="steps between log lines and frames (default 10)")
    parser.add_argument("--friction", type=float, default=0.01, help="Langevin friction, 1/fs (default 0.01)")
    parser.add_argument("--pressure", type=float, default=0.0, help="NPT pressure, GPa (default 0)")
    parser.add_argument("--tdamp", type=float, default=100.0, help="NPT thermostat time, fs (default 100)")
    parser.add_argument("--pdamp", type=float, default=1000.0, help="NPT barostat time, fs (default 1000)")
    parser.add_argument("--max-force-std", type=float, default=None, help="stop above this committee std, eV/Å")
    parser.add_argument("--min-distance", type=float, default=0.5, help="stop below this distance, Å (default 0.5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the velocities and noise (default 0)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(list(argv))
    return guarded("md", _md, args)


def _md(args: argparse.Namespace) -> int:
    """Run the dynamics and print the drift summary (or JSON)."""
    from gnnpot.calculators import run_md

    atoms, calc = _structure_and_calculator(args)
    log = sys.stdout if args.log == "-" and not args.json else (None if args.log == "-" else args.log)
    result = run_md(
        atoms,
        calc,
        ensemble=args.ensemble,
        temperature=args.temperature,
        timestep=args.timestep,
        steps=args.steps,
        trajectory=args.out,
        logfile=log,
        interval=args.interval,
        friction=args.friction,
        pressure=args.pressure,
        tdamp=args.tdamp,
        pdamp=args.pdamp,
        max_force_std=args.max_force_std,
        min_distance=args.min_distance,
        seed=args.seed,
        auto_compile=args.compile == "auto",
    )
    summary = {"structure": args.structure, "num_atoms": len(atoms), "ensemble": args.ensemble,
               "threads": args.threads_used, **result.as_dict()}  # fmt: skip
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        conserved = "" if args.ensemble == "nve" else " (thermostatted: E_tot is not conserved)"
        print(
            f"{result.steps} steps, {result.time_ps:.3f} ps of {args.ensemble.upper()}, {len(atoms)} atoms, "
            f"{result.steps_per_second:.1f} steps/s on {args.threads_used} thread(s), "
            f"{result.neighbor_list_builds} neighbour-list builds\n"
            f"energy drift{conserved}: max |E_tot - E_tot(0)| = {result.max_abs_drift_mev_per_atom:.4f} meV/atom, "
            f"rate {result.drift_rate_mev_per_atom_ps:+.4f} meV/atom/ps, mean T {result.mean_temperature:.1f} K"
        )
        if result.compiled_at is not None:
            print(f"compiled the model at step {result.compiled_at} (--compile auto: the run repays it)")
        if args.out:
            print(f"trajectory {args.out}")
    if result.stopped:
        print(f"gnnpot md: {result.stopped}", file=sys.stderr)
        return 3
    return 0


def relax_main(argv: Sequence[str]) -> int:
    """``gnnpot relax``: FIRE/BFGS/LBFGS on positions, and on the cell with --cell.

    Args:
        argv: the arguments after ``gnnpot relax``.

    Returns:
        The exit status: 0 when converged, 1 for bad input, 2 for bad arguments (argparse exits),
        3 when not converged within ``--steps``.
    """
    parser = ArgumentParser(
        prog="gnnpot relax", description="Relax a structure (positions, and the cell with --cell) with ASE."
    )
    _add_structure_arguments(parser, committee=False)
    parser.add_argument("--fmax", type=float, default=0.05, help="force criterion, eV/Å (default 0.05)")
    parser.add_argument("--steps", type=int, default=1000, help="maximum steps (default 1000)")
    parser.add_argument("--cell", action="store_true", help="relax the cell too (FrechetCellFilter)")
    parser.add_argument("--optimizer", default="fire", choices=("fire", "bfgs", "lbfgs"), help="(default fire)")
    parser.add_argument("--out", default=None, help="write the relaxed structure (extxyz, with its results)")
    parser.add_argument("--trajectory", default=None, help="ASE .traj of the optimisation")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(list(argv))
    return guarded("relax", _relax, args)


def _relax(args: argparse.Namespace) -> int:
    """Relax, write ``--out`` and print the summary (or JSON)."""
    from ase.io import write

    from gnnpot.calculators import relax

    atoms, calc = _structure_and_calculator(args)
    result = relax(
        atoms, calc, fmax=args.fmax, steps=args.steps, cell=args.cell, optimizer=args.optimizer,
        trajectory=args.trajectory, logfile="-" if not args.json else None,
    )  # fmt: skip
    if args.out:
        write(args.out, atoms, format="extxyz")
    if args.json:
        print(json.dumps({"structure": args.structure, **result.as_dict(), "out": args.out}, indent=2))
    else:
        state = "converged" if result.converged else "NOT converged"
        print(
            f"{state} in {result.steps} steps ({result.seconds:.1f} s): E {result.initial_energy:.6f} -> "
            f"{result.final_energy:.6f} eV, max force {result.final_max_force:.4f} eV/Å"
        )
        if args.out:
            print(f"relaxed structure {args.out}")
    return 0 if result.converged else 3
