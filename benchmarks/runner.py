"""The runner and its command line.

The runs in order, each gnnpot variant in a child process alternating with its matched peer
harnesses, the JSON lines, their ``.meta.json`` and the page.

``python -m benchmarks --help`` lists the options; :func:`main` is the entry point.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch

import benchmarks
from benchmarks import REPO
from benchmarks.peers import DEFAULT_PEERS_DIR, PEER_DIRS, PEER_MATCH, PEER_SIZES, default_peer_venv, peer_command
from benchmarks.records import (
    json_records,
    load_average,
    log,
    machine_info,
    meta_path,
    read_jsonl,
    run_scaling,
    run_variant,
)
from benchmarks.report import render_markdown
from benchmarks.sizes import SIZES, Variant, select_variants, variants
from benchmarks.workloads import MOLECULE_WORKLOADS, SCALING_REPEATS, WORKLOADS, Settings, rmd17_frames
from gnnpot import REGISTRY
from gnnpot.data import Frames
from gnnpot.launch import allocator_environment, glibc_version, thp_mode

PROGRAM = "python -m benchmarks"
DEFAULT_RMD17_DIR = REPO.parent / "shared" / "data" / "rmd17"


@dataclass
class Job:
    """One step of the runner: a gnnpot variant (in this process or a child) or a peer harness run.

    Attributes:
        label: what the messages call it.
        command: the child process's command line; None runs ``variant`` in this process.
        variant: the gnnpot variant run in this process.
        scaling: run the scaling series instead of the workloads.
        env: environment variables the child gets on top of the runner's.
    """

    label: str
    command: list[str] | None = None
    variant: Variant | None = None
    scaling: bool = False
    env: dict[str, str] = field(default_factory=dict)


def _child_job(label: str, args: argparse.Namespace, child: str) -> Job:
    """A gnnpot child process; it finds ``benchmarks`` through ``PYTHONPATH`` from any folder."""
    command = [sys.executable, "-m", "benchmarks", "--child", child, "--workloads", ",".join(args.workloads)]
    command += ["--target-s", str(args.target_s), "--repeats", str(args.repeats), "--warmup", str(args.warmup)]
    command += ["--threads", str(args.threads), "--rmd17-dir", str(args.rmd17_dir)]
    command += ["--eager"] if args.eager else []
    command += ["--device", args.device]
    command += ["--scaling-repeats", ",".join(str(r) for r in args.scaling_repeats)]
    command += ["--scaling-max-step-s", str(args.scaling_max_step_s)]
    if args.scaling_max_rss_mb is not None:
        command += ["--scaling-max-rss-mb", str(args.scaling_max_rss_mb)]
    pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env = {"PYTHONPATH": pythonpath}
    # The allocator setting the gnnpot command starts with (gnnpot.launch); the peers keep the runner's.
    restart = allocator_environment(os.environ, glibc_version(), thp_mode())
    if restart is not None:
        env["GLIBC_TUNABLES"] = restart["GLIBC_TUNABLES"]
    return Job(label, command=command, env=env)


def _gnnpot_job(label: str, args: argparse.Namespace, variant: Variant, scaling: bool) -> Job:
    """``variant`` in this process (``--in-process``) or in a child process of its own."""
    if args.in_process:
        return Job(label, variant=variant, scaling=scaling)
    child = f"{variant.family}:{variant.name}"
    return _child_job(label, args, f"scaling:{child}" if scaling else child)


def plan(args: argparse.Namespace) -> list[Job]:
    """The runs in order: each gnnpot family and size, then its matched peers; the scaling runs last.

    A requested peer whose virtual environment is missing is left out with a message on stderr.

    Args:
        args: the parsed command line (:func:`parse`).
    """
    pythons: dict[str, Path] = {}
    for peer in args.peers:
        venv = args.peer_venv.get(peer, default_peer_venv(peer))
        python = Path(venv) / "bin" / "python"
        if not python.exists():
            log(
                f"skipping peer {peer}: no virtual environment at {venv} ({python} missing); make it with "
                f"`bash {Path(args.peers_dir) / peer / 'setup.sh'} {venv}` or give --peer-venv {peer}=PATH"
            )
            continue
        pythons[peer] = python
    jobs = []
    if args.workloads:
        for family in args.models:
            chosen = select_variants(family, args.sizes)
            if not chosen:
                log(f"{family}: no variant of sizes {args.sizes} (paper and small need configs/{family}_rmd17.yaml)")
            for variant in chosen:
                jobs.append(_gnnpot_job(f"gnnpot {family}/{variant.name}", args, variant, scaling=False))
                for peer, model in PEER_MATCH.get(family, []):
                    size = PEER_SIZES[peer].get(variant.name)
                    if peer in pythons and size is not None:
                        command = peer_command(peer, pythons[peer], args.peers_dir, model, size, args)
                        jobs.append(Job(f"{peer} {model or peer}/{size}", command=command))
    if args.scaling:
        for family in args.models:
            variant = variants(family).get(args.scaling_size)
            if variant is None:  # a protocol size the family lacks
                log(f"{family}: no {args.scaling_size!r} variant to scale (it needs configs/{family}_rmd17.yaml)")
                continue
            jobs.append(_gnnpot_job(f"gnnpot scaling {family}/{variant.name}", args, variant, scaling=True))
    return jobs


class Sink:
    """Where JSON lines go (a file or stdout); keeps the records for the tables.

    Args:
        stream: an open text stream.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.records: list[dict[str, Any]] = []

    def write(self, record: dict[str, Any]) -> None:
        """Write ``record`` as one JSON line, at once, and keep it."""
        self.stream.write(json.dumps(record) + "\n")
        self.stream.flush()
        self.records.append(record)


def _run_command(job: Job, env: Mapping[str, str], sink: Sink) -> int:
    """Run a harness; its stdout JSON lines go to ``sink``, its stderr to ours. Returns its exit status."""
    process = subprocess.Popen(job.command, stdout=subprocess.PIPE, env={**env, **job.env}, text=True)
    assert process.stdout is not None
    for record in json_records(process.stdout, f"[{job.label}] stdout"):
        sink.write(record)
    return process.wait()


def _run_gnnpot(
    args: argparse.Namespace, variant: Variant, scaling: bool, molecules: Frames | None
) -> Iterator[dict[str, Any]]:
    """The JSON lines of one gnnpot variant (or its scaling series) run in this process."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    settings = Settings(args.target_s, args.repeats, args.warmup, compile=not args.eager, device=args.device)
    if scaling:
        limits = (args.scaling_max_step_s, args.scaling_max_rss_mb)
        return run_scaling(variant, args.scaling_repeats, settings, *limits)
    return run_variant(variant, args.workloads, settings, molecules)


def _needs_molecules(args: argparse.Namespace) -> bool:
    return any(w in MOLECULE_WORKLOADS for w in args.workloads)


def _run_child(args: argparse.Namespace, sink: Sink) -> None:
    """``--child [scaling:]FAMILY:VARIANT``: one gnnpot variant, the process the runner started for it."""
    parts = args.child.split(":")
    scaling = parts[0] == "scaling"
    family, name = parts[1:3] if scaling else parts[:2]
    molecules = rmd17_frames(args.rmd17_dir) if _needs_molecules(args) and not scaling else None
    for record in _run_gnnpot(args, variants(family)[name], scaling, molecules):
        sink.write(record)


def command_line(argv: Sequence[str], program: str) -> str:
    """``argv`` as a shell command, with the environment variables that change the results."""
    names = ("RMD17_DIR", "OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GNNPOT_MALLOC", "GLIBC_TUNABLES")
    env = [f"{name}={shlex.quote(os.environ[name])}" for name in names if name in os.environ]
    return " ".join([*env, program, shlex.join(list(argv))]).strip()


# ------------------------------------------------------------------------------------------ CLI


def comma_list(text: str) -> list[str]:
    """``"a, b,none"`` -> ``["a", "b"]``: the items of a comma list, blanks and ``none`` dropped."""
    return [item.strip() for item in text.split(",") if item.strip() and item.strip().lower() != "none"]


def peer_venvs(items: Sequence[str]) -> dict[str, Path]:
    """``["mace=/tmp/m"]`` -> ``{"mace": Path("/tmp/m")}`` (``--peer-venv`` values).

    Raises:
        argparse.ArgumentTypeError: an item is not ``PEER=PATH`` with a known peer.
    """
    out = {}
    for item in items:
        peer, sep, path = item.partition("=")
        if not sep or peer not in PEER_DIRS:
            raise argparse.ArgumentTypeError(f"--peer-venv must be PEER=PATH with PEER in {PEER_DIRS}, got {item!r}")
        out[peer] = Path(path)
    return out


def build_parser(program: str = PROGRAM) -> argparse.ArgumentParser:
    """The benchmark's argument parser.

    Args:
        program: the command's name in the usage line (``python -m benchmarks``, ``gnnpot benchmark``).
    """
    parser = argparse.ArgumentParser(
        prog=program, description=benchmarks.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    families = ",".join(sorted(REGISTRY))
    parser.add_argument("--models", default=families, help=f"comma list of families (default {families})")
    parser.add_argument(
        "--sizes",
        default="paper,small",
        help="comma list of paper, small, tiny or a variant name (paper_r4, paper_r5); 'paper' is every paper variant",
    )
    parser.add_argument("--workloads", default="W1,W2,W3,W4", help="comma list of W1..W4, or 'none' (default all)")
    parser.add_argument("--target-s", type=float, default=1.0, help="seconds per timed repeat (default 1)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats, median reported, >= 3 (default 5)")
    parser.add_argument("--warmup", type=int, default=3, help="most warm-up calls, not timed (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2, as the protocol)")
    parser.add_argument(
        "--device", default="cpu", help="torch device of gnnpot's models, e.g. cuda (default cpu; the peers: their own)"
    )
    parser.add_argument(
        "--eager",
        action="store_true",
        help="time gnnpot's eager path (default: the compiled path, ForceField.enable_compile)",
    )
    parser.add_argument(
        "--rmd17-dir",
        default=os.environ.get("RMD17_DIR", str(DEFAULT_RMD17_DIR)),
        help="folder of rmd17_aspirin_train_01.npz (default $RMD17_DIR or ../shared/data/rmd17 beside the repository)",
    )
    parser.add_argument("--out", help="write the JSON lines here (default stdout) and the run's machine and command "
                        "beside it as <name>.meta.json")  # fmt: skip
    parser.add_argument("--in-process", action="store_true", help="run gnnpot in this process, not one per model")
    parser.add_argument("--scaling", action="store_true", help="also time MD steps on fcc Cu, 108 to 10,976 atoms")
    parser.add_argument(
        "--scaling-repeats",
        default=",".join(map(str, SCALING_REPEATS)),
        help="cubic cells per side of the scaling cells (default %(default)s: 4 n^3 atoms)",
    )
    parser.add_argument("--scaling-size", default="small", help="variant of the scaling run (default small)")
    parser.add_argument(
        "--scaling-max-step-s",
        type=float,
        default=10.0,
        help="skip scaling sizes predicted to take longer per step (default 10 s)",
    )
    parser.add_argument(
        "--scaling-max-rss-mb",
        type=float,
        help="skip scaling sizes predicted to need more peak RSS (default 3/4 of the available memory)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the runs in order and stop")
    parser.add_argument("--peers", default="", help=f"comma list of peer harnesses to alternate with: {PEER_DIRS}")
    parser.add_argument(
        "--peer-venv",
        action="append",
        default=[],
        metavar="PEER=PATH",
        help="virtual environment of a peer (default /tmp/peer-spk for schnetpack, /tmp/peer-<peer> otherwise)",
    )
    parser.add_argument("--peers-dir", default=str(DEFAULT_PEERS_DIR), help="folder of the peer harnesses")
    parser.add_argument("--markdown", help="write the ratio tables to this Markdown file")
    parser.add_argument("--from-jsonl", nargs="+", metavar="FILE", help="only render --markdown from these files")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse and check ``argv``: comma lists become lists; a bad value exits with the parser's error.

    Args:
        parser: from :func:`build_parser`.
        argv: the arguments, without the program name.
    """
    args = parser.parse_args(argv)
    try:
        args.models = comma_list(args.models)
        args.sizes = comma_list(args.sizes)
        args.workloads = [w.upper() for w in comma_list(args.workloads)]
        args.peers = comma_list(args.peers)
        args.peer_venv = peer_venvs(args.peer_venv)
        args.scaling_repeats = [int(r) for r in comma_list(args.scaling_repeats)]
        for family in args.models:
            select_variants(family, args.sizes)
            if args.scaling and args.scaling_size not in (*variants(family), *SIZES):
                raise ValueError(f"unknown --scaling-size {args.scaling_size!r} for {family}")
    except (OSError, ValueError, argparse.ArgumentTypeError) as error:
        parser.error(str(error))
    if unknown := [w for w in args.workloads if w not in WORKLOADS]:
        parser.error(f"unknown workloads {unknown}; choose from {list(WORKLOADS)}")
    if unknown := [p for p in args.peers if p not in PEER_DIRS]:
        parser.error(f"unknown peers {unknown}; choose from {list(PEER_DIRS)}")
    if args.repeats < 3:
        parser.error(f"the protocol needs --repeats >= 3, got {args.repeats}")
    if args.from_jsonl and not args.markdown:
        parser.error("--from-jsonl needs --markdown")
    if args.peers and args.threads != 2:
        log(f"note: the peer harnesses always use 2 torch threads; gnnpot uses --threads {args.threads}")
    return args


def _write_markdown(
    path: str, records: Sequence[dict[str, Any]], metas: Sequence[dict[str, Any]], command: str
) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(render_markdown(records, metas, command))
    log(f"wrote {path} from {len(records)} lines")


def main(argv: Sequence[str] | None = None, program: str = PROGRAM) -> int:
    """Run the benchmark (and the peers), or render the tables from saved JSON lines.

    Args:
        argv: the arguments without the program name; default ``sys.argv[1:]``.
        program: the command's name, for the usage line and the recorded command line.

    Returns:
        The exit status: 1 when a gnnpot process failed, else 0.
    """
    parser = build_parser(program)
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parse(parser, raw)
    args.rmd17_dir = str(Path(args.rmd17_dir).resolve())
    command = command_line(raw, program)
    if args.from_jsonl:
        records, metas = read_jsonl(args.from_jsonl)
        _write_markdown(args.markdown, records, metas, command)
        return 0
    if args.dry_run:
        for job in plan(args):
            print(job.label + (f": {shlex.join(job.command)}" if job.command else " (in this process)"))
        return 0
    stream = open(args.out, "w") if args.out else sys.stdout
    sink = Sink(stream)
    try:
        if args.child:
            _run_child(args, sink)
            return 0
        meta = {"command": command, "machine": machine_info()}
        if args.out:  # written now, so that an interrupted run has it too
            meta_path(args.out).write_text(json.dumps(meta, indent=1) + "\n")
        env = dict(os.environ, RMD17_DIR=args.rmd17_dir)
        status = 0
        molecules: Frames | None = None
        for job in plan(args):
            t0 = time.perf_counter()
            log(f"=== {job.label} ===")
            if job.command is not None:
                rc = _run_command(job, env, sink)
                if rc != 0:
                    log(f"{job.label} exited with status {rc}")
                    status = status or (1 if job.label.startswith("gnnpot") else 0)
            else:
                if molecules is None and _needs_molecules(args) and not job.scaling:
                    molecules = rmd17_frames(args.rmd17_dir)
                for record in _run_gnnpot(args, job.variant, job.scaling, molecules):
                    sink.write(record)
            log(f"=== {job.label} done in {time.perf_counter() - t0:.1f} s ===")
        meta["load_average_end"] = load_average()
        if args.out:
            meta_path(args.out).write_text(json.dumps(meta, indent=1) + "\n")
        if args.markdown:
            _write_markdown(args.markdown, sink.records, [meta], command)
        return status
    finally:
        if stream is not sys.stdout:
            stream.close()
