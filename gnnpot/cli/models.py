"""``gnnpot eval``, ``export``, ``deploy`` and ``pretrained``: trained models, measured and written."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from gnnpot.cli.common import ArgumentParser, guarded, parse_key_map

# --- gnnpot eval ------------------------------------------------------------------------------


def eval_main(argv: Sequence[str]) -> int:
    """``gnnpot eval --model MODEL --data FILE``: energy, force and stress errors in meV.

    Args:
        argv: the arguments after ``gnnpot eval``.
    """
    parser = ArgumentParser(
        prog="gnnpot eval",
        description="Metrics of a trained model (a model file, a Lightning checkpoint of a gnnpot run, a run "
        "folder or a pretrained name; read with weights_only=True) on a labelled dataset: energy per atom "
        "and per structure, forces, stress.",
    )
    parser.add_argument("--model", required=True, help="e.g. runs/painn/version_0/checkpoints/best.ckpt")
    parser.add_argument("--data", default=None, help="extxyz (or any ase.io format), ASE .db or MD17/rMD17 .npz")
    parser.add_argument("--split", default=None, help="a run's split.json: evaluate the frames of --subset")
    parser.add_argument("--subset", default="test", choices=("train", "val", "test"), help="split entry (default test)")
    parser.add_argument("--index", default=":", help="frames of --data to use, e.g. ':' or '0:100' (default ':')")
    parser.add_argument("--key-map", type=parse_key_map, default=None, help="label names in the file")
    parser.add_argument("--batch-size", type=int, default=16, help="frames per batch (default 16)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument(
        "--dtype",
        default=None,
        choices=("float32", "float64"),
        help="evaluate the model in this float dtype (default: the model's own); data are read in float64",
    )
    parser.add_argument("--plot", default=None, help="write a parity plot to this PNG")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(list(argv))
    return guarded("eval", _eval, args)


def _eval(args: argparse.Namespace) -> int:
    """Evaluate ``args.model`` on ``--data`` or on a split entry; print a table or JSON."""
    from gnnpot.models import load_model
    from gnnpot.training.evaluate import evaluate_file, split_entry
    from gnnpot.training.metrics import METRIC_UNITS
    from gnnpot.training.plots import parity_plot

    if (args.data is None) == (args.split is None):
        raise ValueError("give exactly one of --data FILE and --split split.json")
    model = load_model(args.model, map_location=args.device)
    if args.dtype is not None:
        import torch

        model = model.to(getattr(torch, args.dtype))
    indices = None
    if args.split is not None:
        path, indices = split_entry(args.split, args.subset)
    else:
        path = args.data
    summary, predictions = evaluate_file(
        model, path, indices=indices, index=args.index, key_map=args.key_map, batch_size=args.batch_size
    )
    plot = str(parity_plot(predictions, args.plot, Path(path).name)) if args.plot else None
    metrics = summary["metrics"]
    info = {k: model.metadata.get(k) for k in ("representation", "cutoff", "elements", "e0", "scale", "weights")}
    result = {
        "model": str(args.model),
        "subset": args.subset if args.split else None,
        **summary,
        "units": {name: METRIC_UNITS[name] for name in metrics},
        "model_info": info,
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "plot": plot,
    }
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return 0
    weights = f", {info['weights'].replace('ema', 'EMA')} weights" if info["weights"] else ""
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    print(f"model   {args.model} ({info['representation']}, cutoff {info['cutoff']} Å{weights}, {dtype})")
    print(
        f"data    {path}{f' [{args.subset} split]' if args.split else ''}: "
        f"{summary['num_frames']} frames, {summary['num_atoms']} atoms ({summary['seconds']:.1f} s)"
    )
    print(format_metrics(metrics))
    for name, gap in summary["left_out"].items():
        examples = "; ".join(gap["examples"]) + (", ..." if gap["frames"] > len(gap["examples"]) else "")
        print(f"left out of {name}: {gap['frames']} frames ({gap['atoms']} atoms), {gap['why']}: {examples}")
    if plot:
        print(f"plot    {plot}")
    return 0


def format_metrics(metrics: dict[str, float]) -> str:
    """A table of MAE and RMSE per quantity, in meV units.

    Args:
        metrics: ``{"<quantity>_mae": ..., "<quantity>_rmse": ...}`` in the units of
            :data:`gnnpot.training.metrics.METRIC_UNITS` (meV/atom, meV, meV/Å, meV/Å³).

    Returns:
        The table, one line per quantity present.
    """
    from gnnpot.training.metrics import METRIC_UNITS

    rows = [f"{'quantity':18s} {'MAE':>10s} {'RMSE':>10s}  unit"]
    for name, label in (
        ("energy_per_atom", "energy per atom"),
        ("energy", "energy"),
        ("forces", "forces"),
        ("stress", "stress"),
    ):
        if f"{name}_mae" in metrics:
            unit = METRIC_UNITS[f"{name}_mae"]
            rows.append(f"{label:18s} {metrics[f'{name}_mae']:10.3f} {metrics[f'{name}_rmse']:10.3f}  {unit}")
    if len(rows) == 1:
        rows.append("(no labels in the data: nothing to compare)")
    return "\n".join(rows)


# --- gnnpot export / pretrained ------------------------------------------------------------------


def export_main(argv: Sequence[str]) -> int:
    """``gnnpot export RUN_OR_CKPT OUT``: a run's model (EMA weights) as a model file.

    Args:
        argv: the arguments after ``gnnpot export``.
    """
    parser = ArgumentParser(
        prog="gnnpot export",
        description="Write a training run's model as a model file (config + weights + metadata; no pickled "
        "objects). The metadata gets the run's config.yaml as its recipe, the training-data hash and the "
        "test metrics, measured on --test-data or on the run's test split.",
    )
    parser.add_argument("source", help="run folder (uses checkpoints/best.ckpt) or a checkpoint")
    parser.add_argument("out", help="model file to write, e.g. model.pt")
    parser.add_argument("--test-data", default=None, help="labelled file for the test metrics")
    parser.add_argument("--no-eval", action="store_true", help="do not measure test metrics")
    args = parser.parse_args(list(argv))
    return guarded("export", _export, args)


def _export(args: argparse.Namespace) -> int:
    """Write the model file and print its size, family and test metrics."""
    from gnnpot.training.evaluate import export_model

    path, metadata = export_model(args.source, args.out, test_data=args.test_data, evaluate=not args.no_eval)
    size = path.stat().st_size
    print(
        f"wrote {path} ({size / 2**20:.2f} MiB, {metadata['num_parameters']:,} parameters, "
        f"{metadata['representation']}, cutoff {metadata['cutoff']} Å, {metadata.get('weights', '')} weights)"
    )
    if "test_metrics" in metadata:
        print(f"test metrics on {metadata['test_data']['file']} ({metadata['test_data']['num_frames']} frames):")
        print(format_metrics(metadata["test_metrics"]))
    return 0


def deploy_main(argv: Sequence[str]) -> int:
    """``gnnpot deploy MODEL OUT``: a model as a TorchScript file that needs torch alone.

    Args:
        argv: the arguments after ``gnnpot deploy``.
    """
    parser = ArgumentParser(
        prog="gnnpot deploy",
        description="Write a model (a model file, a Lightning checkpoint of a gnnpot run, a run folder or a "
        "pretrained name) as one TorchScript file that torch.jit.load reads without gnnpot, for MD engines "
        "(OpenMM-Torch, LAMMPS). Its forward(pos, z, cell, pbc, edge_index, edge_shift) returns energy (eV), "
        "forces (eV/Å) and virial (eV, -dE/dstrain: ASE stress = -virial/volume); the file's extra file "
        "gnnpot.json holds elements, cutoff, units, dtype and the I/O conventions (see gnnpot.models.deploy).",
    )
    parser.add_argument("model", help="e.g. model.pt, runs/painn/version_0 or painn-emt-cuau")
    parser.add_argument("out", help="TorchScript file to write, e.g. deployed.pt")
    parser.add_argument(
        "--dtype",
        default=None,
        choices=("float32", "float64"),
        help="float dtype of the deployed model (default: the model's own)",
    )
    args = parser.parse_args(list(argv))
    return guarded("deploy", _deploy, args)


def _deploy(args: argparse.Namespace) -> int:
    """Write the deployed file and print its size, family, elements, cutoff and dtype."""
    from gnnpot.models import load_model
    from gnnpot.models.deploy import DTYPES, deploy_model, load_deployed

    model = load_model(args.model)
    dtype = DTYPES[args.dtype] if args.dtype else None
    path = deploy_model(model, args.out, dtype=dtype, metadata=model.metadata)
    _, info = load_deployed(path)  # read back: what was written loads
    print(
        f"wrote {path} ({path.stat().st_size / 2**20:.2f} MiB TorchScript, {info['family']}, "
        f"elements {' '.join(info['elements'])}, cutoff {info['cutoff']} Å, {info['dtype']})"
    )
    return 0


def pretrained_main(argv: Sequence[str]) -> int:
    """``gnnpot pretrained``: names, descriptions and test metrics of the shipped models.

    Args:
        argv: the arguments after ``gnnpot pretrained``.
    """
    parser = ArgumentParser(prog="gnnpot pretrained", description="The pretrained models.")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(list(argv))
    return guarded("pretrained", _pretrained, args)


def _pretrained(args: argparse.Namespace) -> int:
    """Print the pretrained models with their test energy (meV/atom) and force (meV/Å) MAE."""
    from gnnpot.models.io import read_metadata
    from gnnpot.models.pretrained import PRETRAINED, list_pretrained, pretrained_path

    rows = []
    for name in list_pretrained():
        entry = PRETRAINED[name]
        metrics = {}
        if "file" in entry:  # hosted ones are not fetched just to list them
            metrics = read_metadata(pretrained_path(name)).get("test_metrics", {})
        rows.append({"name": name, "description": entry["description"], "test_metrics": metrics})
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    print(f"{'name':24s} {'E meV/atom':>10s} {'F meV/Å':>8s}  description")
    for row in rows:
        m = row["test_metrics"]
        energy, forces = m.get("energy_per_atom_mae", float("nan")), m.get("forces_mae", float("nan"))
        print(f"{row['name']:24s} {energy:10.3f} {forces:8.2f}  {row['description']}")
    return 0
