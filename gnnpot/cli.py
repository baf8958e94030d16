"""The ``gnnpot`` command line.

::

    gnnpot data generate [--out FILE] [--seed N] [--num-frames N]
    gnnpot data stats FILE [--json] [--cutoff R] [--key-map MAP] [--index I]
                           [--isolated-atoms FILE] [--e0 {auto,isolated,lstsq}]
    gnnpot data download rmd17 [--out DIR] [--molecules M ...] [--url URL] [--sha256 HEX]
    gnnpot fit|validate|test --config FILE [--trainer.* ...] [--model.* ...] [--data.* ...]
    gnnpot eval --model CKPT (--data FILE | --split split.json) [--json] [--plot PNG]

:func:`main` dispatches on the first word. ``data`` and ``eval`` are handled here with argparse;
``fit``, ``validate`` and ``test`` go to the LightningCLI subclass
:class:`gnnpot.training.cli.GNNPotCLI` through :func:`_training_main`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

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
  eval            metrics of a trained checkpoint on any dataset (rMD17 npz, extxyz, ASE db)

Run `gnnpot data -h`, `gnnpot fit -h` or `gnnpot eval -h` for details."""


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
    """``gnnpot data {generate,stats}``."""
    parser = _data_parser()
    args = parser.parse_args(list(argv))
    try:
        return args.run(args)
    except (DataError, OSError, ValueError) as err:
        print(f"gnnpot data {args.subcommand}: error: {err}", file=sys.stderr)
        return 1


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
    """``gnnpot eval --model CKPT --data FILE``: energy, force and stress errors in meV."""
    parser = argparse.ArgumentParser(
        prog="gnnpot eval",
        description="Metrics of a trained model (a Lightning checkpoint of a gnnpot run, read with "
        "weights_only=True) on a labelled dataset: energy per atom and per structure, forces, stress.",
    )
    parser.add_argument("--model", required=True, help="checkpoint, e.g. runs/painn/version_0/checkpoints/best.ckpt")
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
    try:
        return _eval(args)
    except (DataError, OSError, ValueError, RuntimeError) as err:
        print(f"gnnpot eval: error: {err}", file=sys.stderr)
        return 1


def _eval(args: argparse.Namespace) -> int:
    from gnnpot.data.io import build_graphs
    from gnnpot.training.evaluate import describe, load_checkpoint, predict, split_entry
    from gnnpot.training.metrics import METRIC_UNITS
    from gnnpot.training.plots import parity_plot

    if (args.data is None) == (args.split is None):
        raise ValueError("give exactly one of --data FILE and --split split.json")
    module = load_checkpoint(args.model, map_location=args.device)
    if args.split is not None:
        path, indices = split_entry(args.split, args.subset)
        frames = read_frames(path, key_map=args.key_map, require=()).select(indices)
    else:
        path = args.data
        frames = read_frames(path, index=args.index, key_map=args.key_map, require=())
    if len(frames) == 0:
        raise ValueError(f"{path}: no frames to evaluate")
    start = time.perf_counter()
    graphs = build_graphs(frames, module.hparams.cutoff)
    metrics, predictions = predict(module.inference_model, graphs, batch_size=args.batch_size)
    seconds = time.perf_counter() - start
    plot = str(parity_plot(predictions, args.plot, Path(path).name)) if args.plot else None
    result = {
        "model": str(args.model),
        "data": str(path),
        "subset": args.subset if args.split else None,
        "num_frames": len(frames),
        "num_atoms": sum(len(atoms) for atoms in frames),
        "seconds": seconds,
        "metrics": metrics,
        "units": {name: METRIC_UNITS[name] for name in metrics},
        "model_info": describe(module),
        "plot": plot,
    }
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return 0
    info = result["model_info"]
    print(
        f"model   {args.model} ({info['representation']}, cutoff {info['cutoff']} Å, "
        f"{'EMA' if info['ema'] else 'raw'} weights)"
    )
    print(
        f"data    {path}{f' [{args.subset} split]' if args.split else ''}: "
        f"{result['num_frames']} frames, {result['num_atoms']} atoms ({seconds:.1f} s)"
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


# First word -> handler. Training commands are routed by _training_main.
COMMANDS: dict[str, Callable[[list[str]], int]] = {"data": data_main, "eval": eval_main}
