"""``gnnpot data {generate,stats,download,convert,label}``: write, inspect, fetch, convert and label datasets."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from gnnpot.cli.common import ArgumentParser, guarded, parse_key_map
from gnnpot.data.io import read_frames, write_frames

DEFAULT_DATASET = "data/emt_cuau.xyz"


def data_main(argv: Sequence[str]) -> int:
    """``gnnpot data {generate,stats,download,convert,label}``.

    Args:
        argv: the arguments after ``gnnpot data``.
    """
    args = _data_parser().parse_args(list(argv))
    return guarded(f"data {args.subcommand}", args.run, args)


def _data_parser() -> argparse.ArgumentParser:
    """The parser of ``gnnpot data``; each subcommand sets ``run`` to its handler."""
    parser = ArgumentParser(prog="gnnpot data", description="Datasets: generate and inspect.")
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
    generate.add_argument(
        "--temperatures", type=float, nargs="+", default=None, help="MD temperatures, K (default 300 600 900 1200)"
    )
    generate.add_argument("--kinds", nargs="+", default=None, help="bulk vacancy strained slab (default all four)")
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
        type=parse_key_map,
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

    convert = sub.add_parser(
        "convert",
        help="stream a dataset into an on-disk frame store (.lmdb) for training on data larger than memory",
        description="Read the input one frame at a time (extxyz and other ase.io formats; .npz and .db are read "
        "whole), check it as every reader does, and write an LMDB frame store that training reads lazily.",
    )
    convert.add_argument("source", help="input dataset")
    convert.add_argument("out", help="the .lmdb file to write")
    convert.add_argument("--key-map", type=parse_key_map, default=None, help="label names in the input file")
    convert.add_argument(
        "--require", nargs="*", default=["energy", "forces"], help="labels each frame must have (default energy forces)"
    )
    convert.set_defaults(run=_convert)

    label = sub.add_parser(
        "label",
        help="label structures with a reference method (EMT, PySCF, xtb or your own ASE calculator)",
        description="Compute energy, forces and (periodic cells) stress of every input structure in worker "
        "processes, appending each frame to --out when it is done (with label_index and label_method in its "
        "info). A re-run skips the frames already in --out; failed frames are reported and listed in "
        "<out>.failed.json, never written.",
    )
    label.add_argument("--in", dest="source", required=True, help="structures (extxyz or any readable format)")
    label.add_argument("--out", required=True, help="extxyz file to write (appended to by a re-run)")
    label.add_argument(
        "--calculator", required=True, help="emt, pyscf, xtb, or module:Class for your own ASE calculator"
    )
    label.add_argument(
        "--calc-args",
        type=_json_object,
        default={},
        help='calculator keyword arguments as JSON, e.g. \'{"method": "b3lyp", "basis": "def2-svp"}\'',
    )
    label.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    label.add_argument("--threads", type=int, default=None, help="OpenMP threads per worker (default cores/workers)")
    label.add_argument("--index", default=":", help="input frames, e.g. ':' or '0:100' (default ':')")
    label.set_defaults(run=_label)
    return parser


def _json_object(text: str) -> dict:
    """A JSON object from the command line (argparse reports the ValueError as one line)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not JSON: {err}") from err
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object {{...}}, got {text!r}")
    return value


def _convert(args: argparse.Namespace) -> int:
    """``gnnpot data convert``: stream the input into an LMDB frame store."""
    from gnnpot.data.io import stream_frames
    from gnnpot.data.store import write_store

    if Path(args.out).suffix != ".lmdb":
        raise ValueError(f"{args.out}: the output must be a .lmdb file")
    start = time.perf_counter()
    frames = stream_frames(args.source, key_map=args.key_map, require=tuple(args.require))
    count = write_store(frames, args.out, source=args.source)
    size = Path(args.out).stat().st_size
    print(f"wrote {count} frames ({size / 2**20:.1f} MiB) to {args.out} in {time.perf_counter() - start:.1f} s")
    return 0


def _label(args: argparse.Namespace) -> int:
    """``gnnpot data label``: label, print what was done; exit 1 when a frame failed."""
    from gnnpot.data.label import label_file

    report = label_file(
        args.source,
        args.out,
        args.calculator,
        calc_args=args.calc_args,
        workers=args.workers,
        index=args.index,
        threads=args.threads,
    )
    if report.torn:
        print(f"{report.out}: cut off a torn last frame left by a killed run; it was labelled again")
    print(
        f"labelled {report.labelled} frames, {report.skipped} already in {report.out}, "
        f"{len(report.failed)} failed, in {report.seconds:.1f} s"
    )
    if report.failed:
        for index, reason in sorted(report.failed.items()):
            print(f"  frame {index}: {reason}", file=sys.stderr)
        failed = report.out.with_name(report.out.name + ".failed.json")
        print(f"{len(report.failed)} frames failed (listed in {failed}); a re-run tries them again", file=sys.stderr)
        return 1
    return 0


def _download(args: argparse.Namespace) -> int:
    """``gnnpot data download rmd17``: fetch the archive and print the files written."""
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
    """``gnnpot data generate``: write the EMT Cu-Au frames and print count, size and time."""
    from gnnpot.data.generate import generate_emt_dataset

    start = time.perf_counter()
    options = {"temperatures": args.temperatures, "kinds": args.kinds}
    frames = generate_emt_dataset(args.num_frames, args.seed, **{k: v for k, v in options.items() if v})
    write_frames(args.out, frames)
    seconds = time.perf_counter() - start
    size = Path(args.out).stat().st_size
    print(f"wrote {len(frames)} frames ({size / 2**20:.2f} MiB) to {args.out} in {seconds:.1f} s")
    return 0


def _stats(args: argparse.Namespace) -> int:
    """``gnnpot data stats``: print the statistics of a dataset as a table or JSON."""
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
