"""The ``gnnpot`` command line.

::

    gnnpot data generate [--out FILE] [--seed N] [--num-frames N]
    gnnpot data stats FILE [--json] [--cutoff R] [--key-map MAP] [--index I]
                           [--isolated-atoms FILE] [--e0 {auto,isolated,lstsq}]
    gnnpot data download rmd17 [--out DIR] [--molecules M ...] [--url URL] [--sha256 HEX]
    gnnpot fit|validate|test --config FILE [--trainer.* ...] [--model.* ...] [--data.* ...]
    gnnpot eval --model MODEL (--data FILE | --split split.json) [--json] [--plot PNG]
    gnnpot export RUN_OR_CKPT OUT [--test-data FILE | --no-eval]
    gnnpot md --model MODEL [MODEL ...] --structure FILE --ensemble nve|nvt|npt --temperature K
              --timestep FS --steps N [--out TRAJ] [--log FILE] [--max-force-std X] [--min-distance R]
    gnnpot relax --model MODEL --structure FILE [--fmax F] [--cell] [--out FILE]
    gnnpot pretrained [--json]
    gnnpot benchmark [--models ...] [--sizes ...] [--peers ...] [--markdown docs/benchmarks.md]

MODEL is a model file, a Lightning checkpoint of a run, a run folder or a pretrained name.

:func:`main` dispatches on the first word. ``data``, ``eval``, ``export``, ``md``, ``relax`` and
``pretrained`` are handled here with argparse; ``fit``, ``validate`` and ``test`` go to the LightningCLI subclass
:class:`gnnpot.training.cli.GNNPotCLI` through :func:`_training_main`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ase import Atoms

from gnnpot.data.atomic_data import DataError
from gnnpot.data.io import LABEL_NAMES, read_frames, write_frames

DEFAULT_DATASET = "data/emt_cuau.xyz"
TRAINING_COMMANDS = ("fit", "validate", "test")

USAGE = """usage: gnnpot <command> ...

commands:
  data generate   write the embedded EMT Cu-Au dataset (no network)
  data stats      frames, elements, E0, energy and force scales, neighbours of a dataset
  data download   fetch a reference dataset (rMD17) and write its official splits
  fit, validate, test
                  train and evaluate with a config: gnnpot fit --config configs/painn_demo.yaml
                  (LightningCLI: --trainer.*, --model.*, --data.*, --ckpt_path; see gnnpot fit -h)
  eval            metrics of a trained model on any dataset (rMD17 npz, extxyz, ASE db)
  export          write a training run as a model file (config + weights + metadata, test metrics)
  md              molecular dynamics (NVE, NVT, NPT) with a model or a committee
  relax           geometry (and cell) optimisation
  pretrained      the pretrained models shipped with gnnpot
  benchmark       speed workloads (training step, MD latency, batches, periodic Cu) against peers

MODEL arguments take a model file, a run's checkpoint, a run folder or a pretrained name.

Run `gnnpot <command> -h` for details."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gnnpot`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command in COMMANDS:
        return COMMANDS[command](rest)
    if command in TRAINING_COMMANDS:
        return _training_main(argv)
    print(f"{USAGE}\n\ngnnpot: error: unknown command {command!r}", file=sys.stderr)
    return 2


def _training_main(argv: list[str]) -> int:
    """Dispatch point for ``fit|validate|test``: hand ``argv`` to the LightningCLI subclass."""
    from gnnpot.training.cli import training_main

    return training_main(argv)


# --- gnnpot data ------------------------------------------------------------------------------


def data_main(argv: Sequence[str]) -> int:
    """``gnnpot data {generate,stats,download}``."""
    args = _data_parser().parse_args(list(argv))
    return _guarded(f"data {args.subcommand}", args.run, args)


def _data_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gnnpot data", description="Datasets: generate and inspect.")
    sub = parser.add_subparsers(dest="subcommand", required=True)

    generate = sub.add_parser(
        "generate",
        help="write the embedded EMT Cu-Au dataset",
        description="Generate the default dataset: fcc Cu-Au bulk, vacancies, strained cells and a "
        "(111) slab, sampled by Langevin MD and labelled by ASE's EMT (energy, forces, stress).",
    )
    generate.add_argument("--out", default=DEFAULT_DATASET, help=f"extxyz file to write (default {DEFAULT_DATASET})")
    generate.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    generate.add_argument("--num-frames", type=int, default=1000, help="number of frames (default 1000)")
    generate.set_defaults(run=_generate)

    stats = sub.add_parser(
        "stats",
        help="statistics of a dataset",
        description="Frames, elements, per-element E0, per-atom energy std after E0, force RMS and "
        "mean neighbour count, in eV and Å.",
    )
    stats.add_argument("file", help="extxyz (or any ase.io format), ASE .db or MD17/rMD17 .npz")
    stats.add_argument("--json", action="store_true", help="print JSON")
    stats.add_argument("--cutoff", type=float, default=5.0, help="neighbour radius, Å (default 5.0)")
    stats.add_argument(
        "--key-map",
        type=_parse_key_map,
        default=None,
        help="label names in the file: 'energy=REF_energy,forces=DFT_forces' or a JSON object",
    )
    stats.add_argument("--index", default=":", help="frames to use, e.g. ':' or '0:100' (default ':')")
    stats.add_argument("--isolated-atoms", default=None, help="extra file of isolated-atom frames for E0")
    stats.add_argument(
        "--e0",
        choices=("auto", "isolated", "lstsq"),
        default="auto",
        help="E0 from isolated atoms, least squares, or isolated when they cover every element (default)",
    )
    stats.set_defaults(run=_stats)

    download = sub.add_parser(
        "download",
        help="fetch rMD17 and write its official splits",
        description="Download the rMD17 archive and write rmd17_<molecule>_<train|test>_0N.npz.",
    )
    download.add_argument("dataset", choices=("rmd17",), help="dataset to fetch")
    download.add_argument("--out", default="data/rmd17", help="folder to write (default data/rmd17)")
    download.add_argument("--molecules", nargs="+", default=None, help="molecules (default: all ten)")
    download.add_argument("--splits", nargs="+", type=int, default=[1], help="official split numbers (default 1)")
    download.add_argument("--url", default=None, help="archive URL (https:// or file://) instead of figshare")
    download.add_argument("--sha256", default=None, help="expected sha256 of the archive")
    download.set_defaults(run=_download)
    return parser


def _download(args: argparse.Namespace) -> int:
    from gnnpot.data.download import RMD17_MOLECULES, RMD17_URL, download_rmd17

    written = download_rmd17(
        args.out,
        molecules=args.molecules or RMD17_MOLECULES,
        splits=args.splits,
        url=args.url or RMD17_URL,
        sha256=args.sha256,
    )
    for path in written:
        print(path)
    return 0


def _generate(args: argparse.Namespace) -> int:
    from gnnpot.data.generate import generate_emt_dataset

    start = time.perf_counter()
    frames = generate_emt_dataset(num_frames=args.num_frames, seed=args.seed)
    write_frames(args.out, frames)
    seconds = time.perf_counter() - start
    size = Path(args.out).stat().st_size
    print(f"wrote {len(frames)} frames ({size / 2**20:.2f} MiB) to {args.out} in {seconds:.1f} s")
    return 0


def _stats(args: argparse.Namespace) -> int:
    from gnnpot.data.stats import dataset_stats, format_stats

    frames = read_frames(args.file, index=args.index, key_map=args.key_map, require=("energy",))
    data = list(frames)
    if args.isolated_atoms:
        data += list(read_frames(args.isolated_atoms, key_map=args.key_map, require=("energy",)))
    stats = {"source": frames.source, "isolated_atoms_file": args.isolated_atoms}
    stats.update(dataset_stats(data, cutoff=args.cutoff, e0_method=args.e0))
    if args.json:
        print(json.dumps(stats, indent=2, ensure_ascii=False))
        for warning in stats["warnings"]:
            print(f"WARNING: {warning}", file=sys.stderr)
    else:
        print(f"source            {frames.source}")
        print(format_stats(stats))
    return 0


def _parse_key_map(text: str) -> dict[str, str]:
    """``'energy=REF_energy,forces=DFT_forces'`` or a JSON object to a dict."""
    text = text.strip()
    if text.startswith("{"):
        mapping = json.loads(text)
    else:
        pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
        if any(len(pair) != 2 for pair in pairs):
            raise argparse.ArgumentTypeError(f"expected name=key pairs separated by commas, got {text!r}")
        mapping = {name.strip(): key.strip() for name, key in pairs}
    unknown = sorted(set(mapping) - set(LABEL_NAMES))
    if unknown:
        raise argparse.ArgumentTypeError(f"key map names must be among {list(LABEL_NAMES)}, got {unknown}")
    return mapping


# --- gnnpot eval ------------------------------------------------------------------------------


def eval_main(argv: Sequence[str]) -> int:
    """``gnnpot eval --model MODEL --data FILE``: energy, force and stress errors in meV."""
    parser = argparse.ArgumentParser(
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
    parser.add_argument("--key-map", type=_parse_key_map, default=None, help="label names in the file")
    parser.add_argument("--batch-size", type=int, default=16, help="frames per batch (default 16)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--plot", default=None, help="write a parity plot to this PNG")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(list(argv))
    return _guarded("eval", _eval, args)


def _guarded(command: str, run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a subcommand; bad input becomes one error line and exit status 1."""
    try:
        return run(args)
    except (DataError, OSError, ValueError, RuntimeError, KeyError) as err:
        print(f"gnnpot {command}: error: {err}", file=sys.stderr)
        return 1


def _eval(args: argparse.Namespace) -> int:
    from gnnpot.models import load_model
    from gnnpot.training.evaluate import evaluate_file, split_entry
    from gnnpot.training.metrics import METRIC_UNITS
    from gnnpot.training.plots import parity_plot

    if (args.data is None) == (args.split is None):
        raise ValueError("give exactly one of --data FILE and --split split.json")
    model = load_model(args.model, map_location=args.device)
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
        "plot": plot,
    }
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return 0
    weights = f", {info['weights'].replace('ema', 'EMA')} weights" if info["weights"] else ""
    print(f"model   {args.model} ({info['representation']}, cutoff {info['cutoff']} Å{weights})")
    print(
        f"data    {path}{f' [{args.subset} split]' if args.split else ''}: "
        f"{summary['num_frames']} frames, {summary['num_atoms']} atoms ({summary['seconds']:.1f} s)"
    )
    print(format_metrics(metrics))
    if plot:
        print(f"plot    {plot}")
    return 0


def format_metrics(metrics: dict[str, float]) -> str:
    """A table of MAE and RMSE per quantity, in meV units."""
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
    """``gnnpot export RUN_OR_CKPT OUT``: a run's model (EMA weights) as a model file."""
    parser = argparse.ArgumentParser(
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
    return _guarded("export", _export, args)


def _export(args: argparse.Namespace) -> int:
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


def pretrained_main(argv: Sequence[str]) -> int:
    """``gnnpot pretrained``: names, descriptions and test metrics of the shipped models."""
    parser = argparse.ArgumentParser(prog="gnnpot pretrained", description="The pretrained models.")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(list(argv))
    return _guarded("pretrained", _pretrained, args)


def _pretrained(args: argparse.Namespace) -> int:
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


# --- gnnpot md / relax --------------------------------------------------------------------------


def _add_structure_arguments(parser: argparse.ArgumentParser, committee: bool) -> None:
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
        "--compile", action="store_true", help="compiled model (torch.compile): slower start, faster steps"
    )


def _read_structure(path: str, index: str) -> Atoms:
    """One frame of any file :func:`read_frames` takes (extxyz, ASE db, rMD17 npz), checked, without labels."""
    frames = read_frames(path, index=int(index), require=())
    atoms = frames[0]
    atoms.calc = None
    return atoms


def md_main(argv: Sequence[str]) -> int:
    """``gnnpot md``: NVE, NVT or NPT with ASE's integrators."""
    parser = argparse.ArgumentParser(
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
    return _guarded("md", _md, args)


def _md(args: argparse.Namespace) -> int:
    from gnnpot.calculators import GNNPotCalculator, run_md

    atoms = _read_structure(args.structure, args.index)
    calc = GNNPotCalculator(args.model, dtype=args.dtype, device=args.device, skin=args.skin, compile=args.compile)
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
    )
    summary = {"structure": args.structure, "num_atoms": len(atoms), "ensemble": args.ensemble, **result.as_dict()}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        conserved = "" if args.ensemble == "nve" else " (thermostatted: E_tot is not conserved)"
        print(
            f"{result.steps} steps, {result.time_ps:.3f} ps of {args.ensemble.upper()}, {len(atoms)} atoms, "
            f"{result.steps_per_second:.1f} steps/s, {result.neighbor_list_builds} neighbour-list builds\n"
            f"energy drift{conserved}: max |E_tot - E_tot(0)| = {result.max_abs_drift_mev_per_atom:.4f} meV/atom, "
            f"rate {result.drift_rate_mev_per_atom_ps:+.4f} meV/atom/ps, mean T {result.mean_temperature:.1f} K"
        )
        if args.out:
            print(f"trajectory {args.out}")
    if result.stopped:
        print(f"gnnpot md: {result.stopped}", file=sys.stderr)
        return 3
    return 0


def relax_main(argv: Sequence[str]) -> int:
    """``gnnpot relax``: FIRE/BFGS/LBFGS on positions, and on the cell with --cell."""
    parser = argparse.ArgumentParser(
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
    return _guarded("relax", _relax, args)


def _relax(args: argparse.Namespace) -> int:
    from ase.io import write

    from gnnpot.calculators import GNNPotCalculator, relax

    atoms = _read_structure(args.structure, args.index)
    calc = GNNPotCalculator(args.model, dtype=args.dtype, device=args.device, skin=args.skin, compile=args.compile)
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


def _benchmark_main(argv: Sequence[str]) -> int:
    """``gnnpot benchmark``: speed workloads against the peer packages (see :mod:`gnnpot.benchmark`)."""
    from gnnpot.benchmark import main as benchmark_main

    return benchmark_main(list(argv))


# First word -> handler. Training commands are routed by _training_main.
COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "data": data_main,
    "eval": eval_main,
    "export": export_main,
    "md": md_main,
    "relax": relax_main,
    "pretrained": pretrained_main,
    "benchmark": _benchmark_main,
}
