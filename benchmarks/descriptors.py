r"""Fixed against learned descriptors on rMD17: learning curves, evaluation cost and size (issue 16, point 3).

Every model trains on the first N frames (N in ``--sizes``, default 25, 50, 100, 250 and 950) of
the same 950 training frames of ``rmd17_<molecule>_train_01.npz`` (the seeded split of
:func:`benchmarks.accuracy.data.prepare`, whose other 50 frames validate every point), and is
tested on the same held-out frames of ``rmd17_<molecule>_test_01.npz`` (``--test-index``, default
200:1000: frames 0-199 of the ethanol test file were looked at while the kernel model was designed).

The budget rule, the same for every point:
    * neural models (``acsf`` and ``hist`` on fixed descriptors, every learned family) see
      ``--samples`` training structures (default 3,000): ``round(samples / N)`` epochs, at their
      ``configs/<family>_rmd17.yaml`` hyperparameters (the MACE CPU recipe for ``mace``, the
      protocol's small size for ``nequip``; ``nequip_paper``, the paper's size, only on request), with a
      cosine decay of the rate over those epochs (warm-up at most a tenth of the steps; MACE's stage
      two over the last fifth, as in its recipe). The model tested is the EMA of the last step:
      nothing is picked on the test frames;
    * kernel models are fitted in closed form (``gnnpot fit-kernel``); the validation frames choose
      their noise level, kernel and ridge. ``kernel`` takes ``min(1500, training atoms)`` inducing
      environments.

Jobs run ``--workers`` at a time (default 2), each on one thread: the errors do not depend on it,
the training times do (they are given as measured, beside the number of workers). The evaluation
cost (energy and forces of one structure, eager, one thread, median of repeated calls) is measured
after all training, one model at a time, the median of ``--cost-passes`` rounds over all models
(``--costs-only`` does only that), on the trained model or,
when its file is gone (a run resumed in a new session), an untrained one of the same size. Every
finished job is a JSON line of ``--out`` (default ``docs/descriptors.jsonl``); a re-run does only
what is missing. The page (``docs/descriptors.md``) and its plot are rewritten at the end, or from
the JSON lines alone with ``--markdown-only``; a ``## Conclusions`` section already on the page is
kept.

    python -m benchmarks.descriptors                       # the full run (hours on 2 cores)
    python -m benchmarks.descriptors --molecules ethanol --sizes 25 --models hist,kernel \
        --samples 200 --test-index 0:5 --out /tmp/desc_smoke.jsonl          # a smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from benchmarks.accuracy.data import MoleculeData, Predictions, errors, prepare, rmd17_file
from benchmarks.accuracy.models import _gnnpot_executable
from benchmarks.sizes import CONFIGS, REPO

SIZES = (25, 50, 100, 250, 950)
MOLECULES = ("ethanol", "aspirin")
EVAL_BATCH = 50
NUM_INDUCING = 1500
KERNEL_CUTOFF = 4.0  # Å; the ethanol experiment of the kernel model (docs in README, "Kernel models")
CONCLUSIONS = "## Conclusions"


@dataclass(frozen=True)
class Spec:
    """One model of the comparison.

    Attributes:
        name: its name in ``--models`` and on the page.
        kind: ``fixed`` (hand-made descriptor) or ``learned`` (message passing).
        trainer: ``fit`` (``gnnpot fit`` with ``config``) or ``kernel``/``coulomb_krr`` (``gnnpot fit-kernel``).
        config: the rMD17 config of a neural model.
        about: one line for the page.
    """

    name: str
    kind: str
    trainer: str
    config: str | None
    about: str


SPECS = (
    Spec("coulomb_krr", "fixed", "coulomb_krr", None, "kernel ridge on sorted Coulomb-matrix eigenvalues"),
    Spec("kernel", "fixed", "kernel", None, "sparse GAP-like kernel on ACSF, energies and forces"),
    Spec("hist", "fixed", "fit", "hist_rmd17.yaml", "MLP on two- and three-body histograms"),
    Spec("acsf", "fixed", "fit", "acsf_rmd17.yaml", "Behler-Parrinello network on ACSF"),
    Spec("schnet", "learned", "fit", "schnet_rmd17.yaml", "SchNet (invariant messages)"),
    Spec("dimenet", "learned", "fit", "dimenet_rmd17.yaml", "DimeNet-like (triplet messages)"),
    Spec("painn", "learned", "fit", "painn_rmd17.yaml", "PaiNN (equivariant vectors)"),
    Spec("nequip", "learned", "fit", "nequip_rmd17_small.yaml", "NequIP (e3nn tensor products; l_max 1, 3 blocks)"),
    Spec("mace", "learned", "fit", "mace_rmd17_cpu.yaml", "MACE (equivariant, many-body; CPU recipe)"),
    Spec(
        "nequip_paper",
        "learned",
        "fit",
        "nequip_rmd17.yaml",
        "NequIP at its paper size (l_max 3, 5 blocks); not in the default run, since one aspirin point takes "
        "~1.7 h on one thread (`--models nequip_paper`)",
    ),  # fmt: skip
)
BY_NAME = {spec.name: spec for spec in SPECS}
DEFAULT_MODELS = tuple(name for name in BY_NAME if name != "nequip_paper")


@dataclass(frozen=True)
class Job:
    """One point of one curve."""

    spec: Spec
    molecule: str
    size: int
    samples: int
    folder: Path  # the molecule's data folder (split.json, train.xyz, val.xyz)
    train_npz: Path
    test_npz: Path
    test_index: str
    run_dir: Path
    compile: bool = False

    @property
    def key(self) -> tuple[str, str, int]:
        """What makes a row the same point."""
        return (self.spec.name, self.molecule, self.size)


def _subset_split(folder: Path, size: int) -> Path:
    """``split_<size>.json``: the first ``size`` training frames of ``split.json``, the same validation frames."""
    record = json.loads((folder / "split.json").read_text())
    record["train"]["indices"] = record["train"]["indices"][:size]
    path = folder / f"split_{size}.json"
    path.write_text(json.dumps(record) + "\n")
    return path


def _fit_command(job: Job) -> tuple[list[str], dict[str, Any]]:
    """``gnnpot fit`` under the budget rule, and the settings it implies."""
    config = yaml.safe_load((CONFIGS / job.spec.config).read_text())
    model, data = config.get("model", {}), config.get("data", {})
    epochs = max(1, round(job.samples / job.size))
    steps = epochs * math.ceil(job.size / int(data["batch_size"]))
    warmup = min(int(model.get("warmup_steps") or 0), steps // 10)
    validate_every = epochs  # once, at the end: the last step is tested whatever validation says
    command = [
        *_gnnpot_executable(), "fit", "--config", str(CONFIGS / job.spec.config),
        "--data.train_file", str(job.train_npz), "--data.test_file", "null",
        "--data.split_file", str(_subset_split(job.folder, job.size)),
        "--trainer.max_epochs", str(epochs), "--trainer.check_val_every_n_epoch", str(validate_every),
        "--trainer.enable_progress_bar", "false",
        "--model.scheduler", "cosine", "--model.warmup_steps", str(warmup),
        "--early_stopping.patience", "1000000", "--model.compile", str(job.compile).lower(),
        "--checkpoint.monitor", "null", "--checkpoint.save_top_k", "0", "--checkpoint.save_weights_only", "true",
        "--run.dir", str(job.run_dir), "--run.name", "run", "--run.version", "0", "--run.plots", "false",
    ]  # fmt: skip
    if model.get("stage_two_start") is not None:
        command += ["--model.stage_two_start", str(int(0.8 * epochs))]
    settings = {
        "config": job.spec.config, "epochs": epochs, "steps": steps, "warmup_steps": warmup, "compile": job.compile,
    }  # fmt: skip
    return command, settings


def _kernel_command(job: Job) -> tuple[list[str], dict[str, Any]]:
    """``gnnpot fit-kernel`` on the first ``size`` training frames, validated on the shared validation frames."""
    command = [
        *_gnnpot_executable(), "fit-kernel", "--type", job.spec.trainer,
        "--data", str(job.folder / "train.xyz"), "--index", f":{job.size}", "--val", str(job.folder / "val.xyz"),
        "--out", str(job.run_dir / "model.pt"),
    ]  # fmt: skip
    settings: dict[str, Any] = {}
    if job.spec.trainer == "kernel":
        atoms = job.size * _atoms_per_frame(job.folder)
        settings = {"num_inducing": min(NUM_INDUCING, atoms), "cutoff": KERNEL_CUTOFF}
        command += ["--num-inducing", str(settings["num_inducing"]), "--cutoff", str(KERNEL_CUTOFF)]
    return command, settings


def _atoms_per_frame(folder: Path) -> int:
    with open(folder / "train.xyz") as handle:
        return int(handle.readline())


def _model_file(job: Job) -> Path:
    if job.spec.trainer == "fit":
        return job.run_dir / "run" / "version_0" / "checkpoints" / "last.ckpt"
    return job.run_dir / "model.pt"


def _test_frames(job: Job):
    from gnnpot.data.io import read_frames

    return read_frames(job.test_npz, index=job.test_index)


def predict(model: torch.nn.Module, frames) -> Predictions:
    """Energies and forces of ``frames`` in batches of ``EVAL_BATCH``."""
    from torch_geometric.loader import DataLoader

    from gnnpot import keys
    from gnnpot.data.io import build_graphs

    energies, forces = [], []
    for batch in DataLoader(build_graphs(frames, model.cutoff), batch_size=EVAL_BATCH):
        result = model(batch)
        energies.append(result[keys.ENERGY].detach().double().reshape(-1).numpy())
        forces.append(result[keys.FORCES].detach().double().numpy())
    num_atoms = np.array([len(atoms) for atoms in frames], dtype=np.int64)
    return Predictions(np.concatenate(energies), np.concatenate(forces), num_atoms)


def run_job(job: Job) -> dict[str, Any]:
    """Train (or fit) one point, test it, and return its row; a failure is a row with ``error``."""
    torch.set_num_threads(1)
    from gnnpot.models import load_model

    job.run_dir.mkdir(parents=True, exist_ok=True)
    command, settings = (_fit_command if job.spec.trainer == "fit" else _kernel_command)(job)
    row: dict[str, Any] = {
        "model": job.spec.name, "kind": job.spec.kind, "molecule": job.molecule, "size": job.size,
        "samples": job.samples if job.spec.trainer == "fit" else None, "test_index": job.test_index, **settings,
    }  # fmt: skip
    log = job.run_dir / "train.log"
    start = time.perf_counter()
    with open(log, "w") as handle:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    row["train_seconds"] = round(time.perf_counter() - start, 1)
    if done.returncode != 0 or not _model_file(job).is_file():
        tail = log.read_text().splitlines()[-5:]
        return {**row, "error": f"exit {done.returncode}: " + " | ".join(tail)}
    model = load_model(_model_file(job))
    frames = _test_frames(job)
    row.update(errors(predict(model, frames), Predictions.of_frames(frames)))
    row["n_params"] = sum(p.numel() for p in model.parameters())
    row["model_file"] = str(_model_file(job))
    return row


def fresh_model(spec: Spec, frame, size: int) -> torch.nn.Module:
    """An untrained model of the same architecture and size as the trained one (same cost per call).

    The cost phase needs no trained file: a run resumed in a new session lacks those of earlier jobs.
    """
    from gnnpot.models import build_model
    from gnnpot.models.coulomb_krr import CoulombKRR

    elements = sorted({int(z) for z in frame.numbers})
    if spec.trainer == "coulomb_krr":
        model = CoulombKRR(elements, max_atoms=len(frame), num_train=size)
    elif spec.trainer == "kernel":
        inducing = min(NUM_INDUCING, size * len(frame))
        model = build_model(
            "kernel", cutoff=KERNEL_CUTOFF, elements=elements, num_inducing=inducing, num_channels=len(elements)
        )
    else:
        config = yaml.safe_load((CONFIGS / spec.config).read_text())
        hparams = config["model"].get("representation_hparams") or {}
        model = build_model(
            config["model"]["representation"], cutoff=config["data"]["cutoff"], elements=elements, **hparams
        )
    for buffer in model.buffers():  # unfitted inducing environments: any finite numbers
        if buffer.is_floating_point() and not bool(torch.isfinite(buffer).all()):
            buffer.normal_()
    return model.eval()


def eval_cost(model: torch.nn.Module, frame, repeats: int) -> float:
    """Median milliseconds of one energy-and-forces call on ``frame`` (eager, this process's threads)."""
    from torch_geometric.data import Batch

    from gnnpot.data.io import build_graphs

    batch = Batch.from_data_list(build_graphs([frame], model.cutoff))
    for _ in range(3):
        model(batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(batch)
        times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times))


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of ``path`` (none if it does not exist)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _latest(rows: Sequence[dict[str, Any]]) -> dict[tuple, dict[str, Any]]:
    """The last row of each point, a finished one before a failed one."""
    chosen: dict[tuple, dict[str, Any]] = {}
    for row in rows:
        key = (row["model"], row["molecule"], row["size"])
        if "force_mae" in row or key not in chosen or "force_mae" not in chosen[key]:
            chosen[key] = row
    return chosen


def _fmt(value: Any, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def write_page(rows: Sequence[dict[str, Any]], markdown: Path, command: str) -> None:
    """The page: per molecule, force and energy MAE against N, then cost and size; the plot beside it."""
    points = _latest(rows)
    molecules = [m for m in MOLECULES if any(k[1] == m for k in points)]
    sizes = sorted({k[2] for k in points})
    models = [s for s in SPECS if any(k[0] == s.name for k in points)]
    old = markdown.read_text() if markdown.is_file() else ""
    conclusions = old[old.index(CONCLUSIONS) :].rstrip() + "\n" if CONCLUSIONS in old else ""
    lines = [
        "# Fixed or learned descriptors? Learning curves on rMD17",
        "",
        f"Written by `{command}` (`benchmarks/descriptors.py`; its docstring has the full protocol).",
        "",
        "- Training frames: the first N of the same 950 frames of `rmd17_<molecule>_train_01.npz` for every",
        "  model; the other 50 frames of that file validate every point.",
        f"- Test frames: `rmd17_<molecule>_test_01.npz`, index `{_one(rows, 'test_index')}`, used for no choice.",
        f"- Budget rule: every neural model sees {_fmt(_one(rows, 'samples'), 0)} training structures",
        "  (`round(samples / N)` epochs) at its config's settings (under Models), with a cosine decay over",
        "  those epochs; the EMA weights of the last step are tested. Kernel models are fitted in closed form;",
        "  the validation frames choose their noise level (and, for Coulomb KRR, kernel and width).",
        "- Errors: mean absolute errors, energy in meV per molecule, forces in meV/Å over all components.",
        "",
    ]
    for molecule in molecules:
        for metric, title in (("force_mae", "Force MAE (meV/Å)"), ("energy_mae", "Energy MAE (meV)")):
            lines += [f"## {molecule}: {title}", "", "| model | kind | " + " | ".join(f"N={n}" for n in sizes) + " |"]
            lines.append("|---|---|" + "---:|" * len(sizes))
            for spec in models:
                cells = [_fmt(points.get((spec.name, molecule, n), {}).get(metric)) for n in sizes]
                lines.append(f"| {spec.name} | {spec.kind} | " + " | ".join(cells) + " |")
            lines.append("")
    lines += _cost_table(points, molecules, models, max(sizes) if sizes else 0)
    failed = [r for r in points.values() if "force_mae" not in r]
    if failed:
        lines += ["## Failed points", ""]
        lines += [f"- {r['model']}, {r['molecule']}, N={r['size']}: {r.get('error')}" for r in failed]
        lines.append("")
    if _plot(points, molecules, models, sizes, markdown.with_suffix(".png")):
        lines += [f"![learning curves]({markdown.with_suffix('.png').name})", ""]
    lines += ["## Models", ""] + [f"- `{s.name}` ({s.kind}{_config(s)}): {s.about}." for s in models] + [""]
    markdown.write_text("\n".join(lines) + ("\n" + conclusions if conclusions else ""))


def _config(spec: Spec) -> str:
    return f", `configs/{spec.config}`" if spec.config else ""


def _one(rows: Sequence[dict[str, Any]], key: str) -> Any:
    values = {r.get(key) for r in rows if r.get(key) is not None}
    return values.pop() if len(values) == 1 else (sorted(values) if values else None)


def _cost_table(points: dict, molecules: Sequence[str], models: Sequence[Spec], size: int) -> list[str]:
    lines = [
        f"## Cost and size (N={size})",
        "",
        "Evaluation: energy and forces of one structure, eager, one thread, median of repeated calls, measured",
        "one model at a time after all training; the median of rounds over all models (`eval_passes_ms` in the",
        "JSON lines). Training: wall time of the whole `gnnpot fit` or `fit-kernel`",
        "command, workers as in the row's `workers` (one thread each). Parameters: trained numbers (a kernel",
        "model's weights; its inducing environments or training descriptors are stored beside them).",
        "",
        "| model | " + " | ".join(f"{m} eval (ms) | {m} train (s)" for m in molecules) + " | parameters |",
        "|---|" + "---:|---:|" * len(molecules) + "---:|",
    ]
    for spec in models:
        cells, params = [], None
        for molecule in molecules:
            row = points.get((spec.name, molecule, size), {})
            cells += [_fmt(row.get("eval_ms"), 2), _fmt(row.get("train_seconds"), 0)]
            params = row.get("n_params", params)
        lines.append(f"| {spec.name} | " + " | ".join(cells) + f" | {_fmt(params, 0)} |")
    return lines + [""]


def _plot(points: dict, molecules: Sequence[str], models: Sequence[Spec], sizes: Sequence[int], out: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    if not molecules:
        return False
    figure, axes = plt.subplots(2, len(molecules), figsize=(5.5 * len(molecules), 8), squeeze=False)
    for column, molecule in enumerate(molecules):
        metrics = (("force_mae", "force MAE (meV/Å)"), ("energy_mae", "energy MAE (meV)"))
        for line, (metric, label) in enumerate(metrics):
            ax = axes[line][column]
            for spec in models:
                rows = [(n, points.get((spec.name, molecule, n), {})) for n in sizes]
                xy = [(n, row[metric]) for n, row in rows if row.get(metric) is not None]
                if xy:
                    style = "--" if spec.kind == "fixed" else "-"
                    ax.plot(*zip(*xy, strict=True), style, marker="o", label=spec.name)
            ax.set(xscale="log", yscale="log", xlabel="training frames N", ylabel=label, title=molecule)
            ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return True


def build_parser() -> argparse.ArgumentParser:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.descriptors", description=__doc__.split("\n")[0])
    parser.add_argument("--rmd17", default=str(REPO.parent / "shared" / "data" / "rmd17"), help="rMD17 folder")
    parser.add_argument("--molecules", default=",".join(MOLECULES))
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help=f"of {', '.join(BY_NAME)}")
    parser.add_argument("--samples", type=int, default=3000, help="training structures per neural model")
    parser.add_argument("--test-index", default="200:1000", help="frames of the test file (default 200:1000)")
    parser.add_argument(
        "--compile", action="store_true", help="compiled training (default eager: compiling costs minutes per run)"
    )
    parser.add_argument("--workers", type=int, default=2, help="jobs at a time, one thread each")
    parser.add_argument("--repeats", type=int, default=50, help="calls timed per evaluation cost")
    parser.add_argument("--cost-passes", type=int, default=3, help="rounds over all models; the median is kept")
    parser.add_argument("--work", default="/tmp/gnnpot-descriptors", help="runs and data files")
    parser.add_argument("--out", default=str(REPO / "docs" / "descriptors.jsonl"))
    parser.add_argument("--costs-only", action="store_true", help="only measure the missing evaluation costs")
    parser.add_argument("--markdown-only", action="store_true", help="only rewrite the page from --out")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run what is missing, measure the evaluation costs, write the page."""
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    markdown = out.with_suffix(".md")
    command = "python -m benchmarks.descriptors" + ("" if argv is None else " " + " ".join(argv))
    if args.costs_only:
        _measure_costs(args, out)
    elif not args.markdown_only:
        _run(args, out)
    write_page(read_rows(out), markdown, command)
    print(f"wrote {markdown}")
    return 0


def _run(args: argparse.Namespace, out: Path) -> None:
    unknown = set(args.models.split(",")) - set(BY_NAME)
    if unknown:
        raise SystemExit(f"unknown models {sorted(unknown)}; known: {list(BY_NAME)}")
    work = Path(args.work)
    done = {k for k, r in _latest(read_rows(out)).items() if "force_mae" in r}
    jobs = []
    for molecule in args.molecules.split(","):
        data: MoleculeData = prepare(molecule, args.rmd17, work / molecule / "data", None, None)
        for size in map(int, args.sizes.split(",")):
            for name in args.models.split(","):
                run_dir = work / molecule / f"{name}_{size}"
                job = Job(BY_NAME[name], molecule, size, args.samples, work / molecule / "data",
                          data.train_npz, data.test_npz, args.test_index, run_dir, args.compile)  # fmt: skip
                if job.key not in done:
                    jobs.append(job)
    # every neural job costs the same (the budget); small N first, so that a cut run leaves whole curves
    jobs.sort(key=lambda j: (j.size, j.molecule != "aspirin"))
    print(f"{len(jobs)} jobs, {args.workers} workers", flush=True)
    with ProcessPoolExecutor(max_workers=args.workers) as pool, open(out, "a") as sink:
        futures = {pool.submit(run_job, job): job for job in jobs}
        for future in as_completed(futures):
            row = {**future.result(), "workers": args.workers}
            sink.write(json.dumps(row) + "\n")
            sink.flush()
            status = row.get("error") or f"F {row['force_mae']:.1f} meV/Å, E {row['energy_mae']:.1f} meV"
            print(f"{row['model']:12s} {row['molecule']:8s} N={row['size']:4d} {row['train_seconds']:7.0f} s  {status}",
                  flush=True)  # fmt: skip
    _measure_costs(args, out)


def _measure_costs(args: argparse.Namespace, out: Path) -> None:
    """Evaluation cost and size of each (model, molecule) at the largest N, all models in each of ``--cost-passes``.

    The trained model file when it is still there, else an untrained one of the same architecture
    (:func:`fresh_model`). The passes go round all models in turn, so a slow spell of a shared
    machine falls on every model, and each model's cost is the median over the passes; appended as
    updated rows.
    """
    from gnnpot.data.io import read_frames
    from gnnpot.models import load_model

    torch.set_num_threads(1)
    largest = max(map(int, args.sizes.split(",")))
    todo = []
    for (name, molecule, size), row in _latest(read_rows(out)).items():
        if size != largest or "force_mae" not in row or row.get("eval_ms") is not None:
            continue
        frame = read_frames(rmd17_file(args.rmd17, molecule, "test"), index="0")[0]
        trained = Path(row.get("model_file", ""))
        model = load_model(trained) if trained.is_file() else fresh_model(BY_NAME[name], frame, size)
        todo.append((row, model, frame, trained.is_file()))
    passes: list[list[float]] = [[] for _ in todo]
    for _ in range(args.cost_passes):
        for times, (_, model, frame, _) in zip(passes, todo, strict=True):
            times.append(eval_cost(model, frame, args.repeats))
    with open(out, "a") as sink:
        for times, (row, model, _, trained) in zip(passes, todo, strict=True):
            row = {
                **row,
                "eval_ms": round(float(np.median(times)), 3),
                "eval_passes_ms": [round(t, 3) for t in times],
                "eval_model": "trained" if trained else "untrained, same architecture",
                "n_params": sum(p.numel() for p in model.parameters()),
            }
            sink.write(json.dumps(row) + "\n")
            passes_ms = row["eval_passes_ms"]
            print(f"{row['model']:12s} {row['molecule']:8s} eval {row['eval_ms']:.2f} ms {passes_ms}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
