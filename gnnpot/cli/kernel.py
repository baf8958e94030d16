"""``gnnpot fit-kernel``: closed-form kernel models (:mod:`gnnpot.training.kernel`), written as model files."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from gnnpot.cli.common import ArgumentParser, guarded, parse_key_map

TYPES = ("kernel", "coulomb_krr")


def fit_kernel_main(argv: Sequence[str]) -> int:
    """``gnnpot fit-kernel --data TRAIN --out MODEL.pt``.

    Args:
        argv: the arguments after ``gnnpot fit-kernel``.
    """
    parser = ArgumentParser(
        prog="gnnpot fit-kernel",
        description="Fit a kernel model in closed form and write it as a model file (gnnpot eval, md and the "
        "calculator take it as any model). kernel: GAP-like sparse kernel regression on symmetry functions, "
        "energies and forces, inducing environments by farthest-point sampling. coulomb_krr: kernel ridge "
        "regression on Coulomb-matrix eigenvalues of molecules, energies only (forces by autograd). The "
        "validation frames (--val, or --val-fraction of --data) choose the noise level (kernel) or the kernel, "
        "width and ridge (coulomb_krr).",
    )
    parser.add_argument("--data", required=True, help="training data: extxyz (any ase.io format), ASE .db or .npz")
    parser.add_argument("--out", required=True, help="model file to write, e.g. kernel.pt")
    parser.add_argument("--type", default="kernel", choices=TYPES, help="the model (default kernel)")
    parser.add_argument("--index", default=":", help="frames of --data to train on, e.g. '0:200' (default ':')")
    parser.add_argument("--val", default=None, help="validation data (default: --val-fraction of --data)")
    parser.add_argument("--val-index", default=":", help="frames of --val to use (default ':')")
    parser.add_argument(
        "--val-fraction", type=float, default=0.1, help="without --val: share of --data held out (default 0.1)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the held-out split (default 0)")
    parser.add_argument("--key-map", type=parse_key_map, default=None, help="label names in the files")
    parser.add_argument("--cutoff", type=float, default=5.0, help="descriptor cutoff, Å (kernel; default 5.0)")
    parser.add_argument("--num-inducing", type=int, default=None, help="inducing environments M (default 500)")
    parser.add_argument("--zeta", type=float, default=None, help="kernel exponent (default 4)")
    parser.add_argument(
        "--num-channels", type=int, default=None, help="neighbour-element channels (default: number of elements)"
    )
    parser.add_argument("--sigma-energy", type=float, default=0.001, help="energy noise per atom, eV (default 0.001)")
    parser.add_argument("--sigma-forces", type=float, default=0.01, help="force noise, eV/Å (default 0.01)")
    parser.add_argument("--delta", type=float, default=1.0, help="prior energy scale per atom, eV (default 1.0)")
    parser.add_argument("--energies-only", action="store_true", help="kernel: fit energies, not forces")
    args = parser.parse_args(list(argv))
    return guarded("fit-kernel", _fit_kernel, args)


def _fit_kernel(args: argparse.Namespace) -> int:
    """Read the frames, fit, write the model file and print what was chosen with its errors."""
    from gnnpot.models import save_model
    from gnnpot.training.kernel import fit_coulomb_krr, fit_sparse_kernel

    train, val = _frames(args)
    if args.type == "coulomb_krr":
        if not val:
            raise ValueError("coulomb_krr chooses its kernel on validation frames: give --val or --val-fraction > 0")
        model, report = fit_coulomb_krr(train, val)
        chosen = f"{report['kernel']} kernel, width {report['width']:.4g}, ridge {report['ridge']:.0e}"
        errors = f"validation energy MAE {1000 * report['val_energy_mae']:.2f} meV ({len(val)} frames)"
    else:
        hparams = {
            "num_inducing": args.num_inducing,
            "zeta": args.zeta,
            "num_channels": args.num_channels or len({int(z) for atoms in train for z in atoms.numbers}),
        }
        model, report = fit_sparse_kernel(
            train,
            args.cutoff,
            sigma_energy=args.sigma_energy,
            sigma_forces=args.sigma_forces,
            delta=args.delta,
            use_forces=not args.energies_only,
            val_frames=val or None,
            **{k: v for k, v in hparams.items() if v is not None},
        )
        rep = model.potential.representation
        chosen = (
            f"M = {rep.num_features} {report['inducing_per_element']}, zeta {rep.zeta:g}, "
            f"sigma_energy {report['sigma_energy']:.2g} eV/atom, sigma_forces {report['sigma_forces']:.2g} eV/Å"
        )
        errors = f"train {_format(report['train'])}" + (f"; validation {_format(report['val'])}" if val else "")
    data = {"file": str(args.data), "index": args.index, "num_frames": len(train)}
    if args.val is not None:
        data["val"] = {"file": str(args.val), "index": args.val_index, "num_frames": len(val)}
    path = save_model(model, args.out, metadata={"kernel_fit": report, "training_data": data})
    print(f"wrote {path} ({args.type}, {len(train)} training frames; {chosen})")
    print(errors)
    return 0


def _frames(args: argparse.Namespace) -> tuple[Any, Any]:
    """Training and validation frames: ``--val``, or a random ``--val-fraction`` of ``--data``."""
    import numpy as np

    from gnnpot.data import read_frames

    require = ("energy",) if args.type == "coulomb_krr" or args.energies_only else ("energy", "forces")
    train = read_frames(args.data, index=args.index, key_map=args.key_map, require=require)
    if args.val is not None:
        return train, read_frames(args.val, index=args.val_index, key_map=args.key_map, require=require)
    if not 0.0 <= args.val_fraction < 1.0:
        raise ValueError(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    order = np.random.default_rng(args.seed).permutation(len(train))
    held_out = int(round(args.val_fraction * len(train)))
    if held_out == 0:
        return train, []
    return train.select(sorted(order[held_out:])), train.select(sorted(order[:held_out]))


def _format(errors: dict[str, float]) -> str:
    """``energy 0.91 meV/atom, forces 37.4 meV/Å``."""
    parts = []
    if "energy_per_atom_mae" in errors:
        parts.append(f"energy {errors['energy_per_atom_mae']:.2f} meV/atom")
    if "forces_mae" in errors:
        parts.append(f"forces {errors['forces_mae']:.1f} meV/Å")
    return ", ".join(parts) + " (MAE)"
