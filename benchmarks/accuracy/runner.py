"""The runs in order, the bookkeeping that makes the benchmark resumable, and the command line.

``python -m benchmarks.accuracy --help`` lists the options; :func:`main` is the entry point.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import sys
import time
import traceback
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import benchmarks.accuracy
from benchmarks import REPO
from benchmarks.accuracy.data import MoleculeData, Predictions, errors, prepare
from benchmarks.accuracy.models import GnnpotFamily, Model
from benchmarks.accuracy.peers import MacePeer, NequipPeer
from benchmarks.accuracy.report import is_done, plot_errors, render_markdown, row_key
from benchmarks.accuracy.watch import Run, watch
from benchmarks.peers import DEFAULT_PEERS_DIR, default_peer_venv
from benchmarks.records import json_records, load_average, log, machine_info
from benchmarks.runner import DEFAULT_RMD17_DIR, comma_list, command_line, peer_venvs
from benchmarks.sizes import CONFIGS
from gnnpot import REGISTRY
from gnnpot.calculators.threads import cpu_busy
from gnnpot.data.io import read_frames

PROGRAM = "python -m benchmarks.accuracy"
DEFAULT_OUT = REPO / "docs" / "accuracy.jsonl"
DEFAULT_WORK_DIR = Path("/tmp/gnnpot-accuracy")
IDLE_LOAD = 0.5  # 1-minute load average above which the machine is not idle
IDLE_BUSY = 0.2  # share of the CPUs busy just before a launch above which something else runs


@dataclass(frozen=True)
class Job:
    """One training run: a model on a molecule until its last missing mark.

    Attributes:
        model: the model's name.
        molecule: rMD17 name.
        marks_s: the marks still missing, seconds after launch, rising.
    """

    model: str
    molecule: str
    marks_s: tuple[float, ...]

    @property
    def budget_s(self) -> float:
        """The run's length: its last missing mark, s (training up to it is the same as in a longer run)."""
        return self.marks_s[-1]


def families() -> list[str]:
    """The gnnpot families with ``configs/<family>_rmd17.yaml`` that are in :data:`gnnpot.REGISTRY`."""
    found = sorted(p.name.removesuffix("_rmd17.yaml") for p in CONFIGS.glob("*_rmd17.yaml"))
    return [family for family in found if family in REGISTRY]


def catalogue(
    peers_dir: Path, venvs: Mapping[str, Path] | None = None, gnnpot_args: Sequence[str] = ()
) -> dict[str, Model]:
    """Every model the benchmark knows, by name, in page order: gnnpot's families, then the peers.

    Args:
        peers_dir: the folder of the peer harnesses (``<peer>/setup.sh``).
        venvs: virtual environment of a peer (``mace``, ``nequip``), default
            :func:`benchmarks.peers.default_peer_venv`.
        gnnpot_args: more ``gnnpot fit`` arguments for every family.
    """
    venvs = venvs or {}
    out: dict[str, Model] = {family: GnnpotFamily(family, tuple(gnnpot_args)) for family in families()}
    for peer, kind in (("mace", MacePeer), ("nequip", NequipPeer)):
        model = kind(Path(venvs.get(peer, default_peer_venv(peer))), Path(peers_dir) / peer / "setup.sh")
        out[model.name] = model
    return out


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """The JSON lines of ``path``; none when it does not exist yet."""
    path = Path(path)
    return list(json_records(path.read_text().splitlines(), str(path))) if path.is_file() else []


def plan(
    models: Sequence[str],
    molecules: Sequence[str],
    marks_s: Sequence[float],
    frames: Mapping[str, tuple[int, int]],
    rows: Iterable[dict[str, Any]],
) -> list[Job]:
    """The runs still needed, molecule by molecule: each model with a mark that has no finished row.

    Args:
        models: model names, in order.
        molecules: rMD17 names, in order.
        marks_s: the marks, seconds after launch.
        frames: per molecule, ``(training frames read, test frames)``: part of what identifies a row.
        rows: the JSON lines so far; a finished one (:func:`~benchmarks.accuracy.report.is_done`) is kept.
    """
    done = {row_key(row) for row in rows if is_done(row)}
    jobs = []
    for molecule in molecules:
        train, test = frames[molecule]
        for model in models:
            missing = [m for m in sorted(marks_s) if (model, molecule, round(m, 1), test, train) not in done]
            if missing:
                jobs.append(Job(model, molecule, tuple(missing)))
    return jobs


def scaled_marks(marks: Sequence[float], minutes: float) -> list[float]:
    """``marks`` (minutes) stretched so that the last one is ``minutes``: 5,10,20 at 10 min -> 2.5,5,10."""
    if not marks or min(marks) <= 0:
        raise ValueError(f"marks must be positive minutes, got {list(marks)}")
    top = max(marks)
    return sorted({m * minutes / top for m in marks})


class Rows:
    """The JSON-lines file the rows are appended to, at once, one by one.

    Args:
        path: the file (made with its folder when missing).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, row: dict[str, Any]) -> None:
        """Append ``row`` as one JSON line."""
        with open(self.path, "a") as stream:
            stream.write(json.dumps(row) + "\n")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _run_rows(
    job: Job,
    model: Model,
    data: MoleculeData,
    reference: Predictions,
    run: Run,
    run_dir: Path,
    base: dict[str, Any],
    env: Mapping[str, str],
    seconds_per_minute: float,
) -> Iterable[dict[str, Any]]:
    """Evaluate each snapshot of a run; yields its rows (with ``error`` when it could not be measured)."""
    crashed = run.returncode not in (None, 0)
    if crashed:
        log(f"{model.name} on {data.molecule} exited with status {run.returncode}; the end of {run.log}:")
        log(_tail(run.log))
    for k, snapshot in enumerate(run.snapshots):
        row = dict(base, mark_s=round(snapshot.mark_s, 1), mark_min=round(snapshot.mark_s / seconds_per_minute, 4))
        row["written_s"] = None if snapshot.written_s is None else round(snapshot.written_s, 1)
        if crashed and snapshot.ended:
            row["error"] = f"training exited with status {run.returncode} after {run.ended_s:.0f} s; see {run.log}"
        elif snapshot.path is None:
            row["error"] = f"no complete checkpoint {snapshot.mark_s:.0f} s after launch; see {run.log}"
        else:
            start = time.perf_counter()
            try:
                out = run_dir / f"pred-{k}.npz"
                info = model.evaluate(snapshot.path, data, run_dir, out, env)
                row.update(errors(Predictions.load(out), reference), **info)
            except Exception as error:  # record it and go on with the next snapshot
                traceback.print_exc(file=sys.stderr)
                row["error"] = f"evaluation failed: {error!r}"
            row["eval_total_s"] = round(time.perf_counter() - start, 1)
        where = f"[{model.name} {data.molecule} {row['mark_min']:g} min]"
        if row.get("error"):
            log(f"{where} {row['error']}")
        else:
            log(
                f"{where} force MAE {row['force_mae']:.2f} meV/Å, energy MAE {row['energy_mae']:.2f} meV (checkpoint "
                f"of {row['written_s']} s, evaluated in {row['eval_total_s']:.0f} s)"
            )
        row["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        yield row


def run_job(
    job: Job,
    model: Model,
    data: MoleculeData,
    reference: Predictions,
    args: argparse.Namespace,
    rows: Rows,
) -> bool:
    """Train ``model`` on ``data`` for the job's budget, evaluate its snapshots and append their rows.

    Returns:
        Whether every row was measured.
    """
    run_id = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = Path(args.work_dir) / data.molecule / model.name / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    checkpoint_s = args.checkpoint_every or max(1.0, job.budget_s / 60.0)
    command = model.command(data, run_dir, job.budget_s, checkpoint_s)
    busy = cpu_busy()
    load_before = load_average()
    compile_cache_mb = inductor_cache_mb(env)
    if busy is not None and busy > IDLE_BUSY:
        log(f"warning: {100 * busy:.0f} % of the CPUs were busy just before the launch: the machine is not idle")
    log(f"=== {model.name} on {data.molecule}: {job.budget_s:.0f} s, marks {list(job.marks_s)} s; {run_dir} ===")
    log(shlex.join(command))
    run = watch(command, job.marks_s, lambda: model.checkpoints(run_dir), run_dir / "snapshots",
                run_dir / "train.log", env=env, cwd=REPO, suffix=model.suffix)  # fmt: skip
    load_after = load_average()
    base = {
        "benchmark": "time_to_accuracy",
        "model": model.name,
        "label": model.label,
        "peer": model.peer,
        "molecule": data.molecule,
        "train_frames": data.num_train + data.num_val,
        "num_train": data.num_train,
        "num_val": data.num_val,
        "test_frames": data.num_test,
        "budget_s": round(job.budget_s, 1),
        "threads": args.threads,
        "checkpoint_every_s": round(checkpoint_s, 1),
        "command": shlex.join(command),
        "settings": model.settings(),
        "run_dir": str(run_dir),
        "returncode": run.returncode,
        "ended_s": None if run.ended_s is None else round(run.ended_s, 1),
        "run_s": round(run.seconds, 1),
        "load_before": load_before,
        "load_after": load_after,
        "cpu_busy_before": busy,
        "inductor_cache_mb": compile_cache_mb,
        "machine": machine_info(),
    }
    ok = True
    for row in _run_rows(job, model, data, reference, run, run_dir, base, env, args.seconds_per_minute):
        rows.write(row)
        ok = ok and is_done(row)
    return ok


def inductor_cache_mb(env: Mapping[str, str]) -> float:
    """Size of TorchInductor's disk cache that a run launched with ``env`` reads, in MB.

    A compiled gnnpot family spends its first minutes compiling unless this cache holds its graphs
    from an earlier run, so the 5-minute mark depends on it; each row records it.
    """
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    folder = Path(env.get("TORCHINDUCTOR_CACHE_DIR") or default_cache_dir())
    total = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) if folder.is_dir() else 0
    return round(total / 1e6, 1)


def write_page(rows: Sequence[dict[str, Any]], markdown: Path, command: str) -> None:
    """Write the page and its plot (``<page>.png``) from ``rows``."""
    markdown.parent.mkdir(parents=True, exist_ok=True)
    plot = markdown.with_suffix(".png")
    has_rows = any(is_done(row) for row in rows)
    if has_rows:
        plot_errors(rows, plot)
    markdown.write_text(render_markdown(rows, command, plot.name if has_rows else None))
    log(f"wrote {markdown}" + (f" and {plot}" if has_rows else "") + f" from {len(rows)} rows")


# ------------------------------------------------------------------------------------------ CLI


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's argument parser."""
    parser = argparse.ArgumentParser(
        prog=PROGRAM, description=benchmarks.accuracy.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--models", default="all", help="comma list of gnnpot families, peer-mace, peer-nequip (default all)"
    )
    parser.add_argument(
        "--molecules", default="ethanol,aspirin", help="comma list of rMD17 molecules (default %(default)s)"
    )
    parser.add_argument("--minutes", type=float, default=20.0, help="wall-clock budget of each run (default 20)")
    parser.add_argument(
        "--marks",
        default="5,10,20",
        help="snapshot times in minutes, stretched to end at --minutes (default %(default)s)",
    )
    parser.add_argument("--test-frames", type=int, help="test on the first K frames of the test file (default all)")
    parser.add_argument("--train-frames", type=int, help="split the first N frames of the train file (default all)")
    parser.add_argument(
        "--threads", type=int, default=_usable_cores(), help="OMP threads of every model (default: the usable cores)"
    )
    parser.add_argument(
        "--checkpoint-every", type=float, help="seconds between gnnpot and NequIP checkpoints (default budget/60)"
    )
    parser.add_argument(
        "--gnnpot-args", default="", help="more `gnnpot fit` arguments for every family, one shell string"
    )
    parser.add_argument("--peers-dir", default=str(DEFAULT_PEERS_DIR), help="folder of the peer harnesses and setup.sh")
    parser.add_argument(
        "--peer-venv", action="append", default=[], metavar="PEER=PATH",
        help="virtual environment of a peer (default /tmp/peer-mace, /tmp/peer-nequip)",
    )  # fmt: skip
    parser.add_argument(
        "--rmd17-dir",
        default=os.environ.get("RMD17_DIR", str(DEFAULT_RMD17_DIR)),
        help="folder of rmd17_<molecule>_<train|test>_01.npz (default $RMD17_DIR or ../shared/data/rmd17)",
    )
    parser.add_argument(
        "--work-dir", default=str(DEFAULT_WORK_DIR), help="runs, snapshots and data copies (default %(default)s)"
    )
    parser.add_argument(
        "--out", default=str(DEFAULT_OUT), help="the JSON lines, kept between runs (default docs/accuracy.jsonl)"
    )
    parser.add_argument("--markdown", help="the page (default: --out with .md; the plot beside it with .png)")
    parser.add_argument("--markdown-only", action="store_true", help="only rewrite the page and plot from --out")
    parser.add_argument("--dry-run", action="store_true", help="print the runs still needed and stop")
    parser.add_argument("--seconds-per-minute", type=float, default=60.0, help=argparse.SUPPRESS)  # tests
    return parser


def parse(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """Parse and check ``argv``; comma lists become lists and ``--marks`` seconds (``marks_s``)."""
    args = parser.parse_args(argv)
    try:
        args.models = comma_list(args.models)
        args.molecules = comma_list(args.molecules)
        args.peer_venv = peer_venvs(args.peer_venv)
        args.marks_s = [
            m * args.seconds_per_minute for m in scaled_marks([float(m) for m in comma_list(args.marks)], args.minutes)
        ]
        args.gnnpot_args = shlex.split(args.gnnpot_args)
    except (ValueError, argparse.ArgumentTypeError) as error:
        parser.error(str(error))
    for name, value in (
        ("--test-frames", args.test_frames),
        ("--train-frames", args.train_frames),
        ("--threads", args.threads),
    ):
        if value is not None and value < 1:
            parser.error(f"{name} must be >= 1, got {value}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Train what is missing, append its rows, rewrite the page; or only the page (``--markdown-only``).

    Args:
        argv: the arguments without the program name; default ``sys.argv[1:]``.

    Returns:
        The exit status: 1 when a row could not be measured, else 0.
    """
    parser = build_parser()
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parse(parser, raw)
    command = command_line(raw, PROGRAM)
    out = Path(args.out)
    markdown = Path(args.markdown) if args.markdown else out.with_suffix(".md")
    if args.markdown_only:
        write_page(read_rows(out), markdown, command)
        return 0
    known = catalogue(Path(args.peers_dir), args.peer_venv, args.gnnpot_args)
    names = list(known) if args.models == ["all"] else args.models
    if unknown := [name for name in names if name not in known]:
        parser.error(f"unknown models {unknown}; choose from {list(known)}")
    datasets, references = {}, {}
    for molecule in args.molecules:
        folder = Path(args.work_dir) / molecule / "data"
        datasets[molecule] = prepare(molecule, args.rmd17_dir, folder, args.train_frames, args.test_frames)
        test = read_frames(datasets[molecule].test_npz, index=f":{datasets[molecule].num_test}")
        references[molecule] = Predictions.of_frames(test)
    frames = {m: (d.num_train + d.num_val, d.num_test) for m, d in datasets.items()}
    jobs = plan(names, args.molecules, args.marks_s, frames, read_rows(out))
    for job in jobs:
        reason = known[job.model].missing()
        log(f"{job.model} on {job.molecule}: marks {list(job.marks_s)} s" + (f" (skipped: {reason})" if reason else ""))
    if not jobs:
        log(f"every row is in {out} already")
    if args.dry_run:
        return 0
    load = load_average()
    if load is not None and load[0] > IDLE_LOAD:
        log(f"warning: load average {load} at the start (above {IDLE_LOAD}): the machine is not idle")
    torch.set_num_threads(args.threads)  # gnnpot's snapshots are evaluated in this process
    rows = Rows(out)
    status = 0
    for job in jobs:
        model = known[job.model]
        if model.missing():
            status = 1
            continue
        if not run_job(job, model, datasets[job.molecule], references[job.molecule], args, rows):
            status = 1
        write_page(read_rows(out), markdown, command)
    return status
