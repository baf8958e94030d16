r"""Fine-tuning against training from scratch: held-out learning curves on acetylacetone.

Four runs of the same model (MACE small, as the shipped rMD17 models), each for the same number
of optimizer steps (``--steps``), on frames of ``../shared/data/acac/train_300K.xyz`` (10 % of them
for validation):

* ``finetune-50``: 50 frames, starting from the pretrained ``mace-rmd17-aspirin`` (``init_from``);
* ``scratch-50``, ``scratch-100``, ``scratch-250``: 50, 100 and 250 frames from random weights.

The held-out force and energy MAE on ``test_MD_300K.xyz`` (frames none of the runs trains or
validates on) is measured with the EMA weights at ten points along each run, with the wall time.
E0 is fitted by least squares on each run's own training frames (as for the pretrained model).

    python -m benchmarks.finetune --markdown docs/finetune.md     # about 20 minutes on one thread
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import lightning as L
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
ACAC = REPO.parent / "shared" / "data" / "acac"
RUNS = {"finetune-50": (50, True), "scratch-50": (50, False), "scratch-100": (100, False), "scratch-250": (250, False)}


class HeldOut(L.Callback):
    """Held-out errors of the inference (EMA) weights at chosen optimizer steps."""

    def __init__(self, graphs: list, at_steps: list[int]) -> None:
        self.graphs, self.at_steps, self.curve = graphs, set(at_steps), []
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: object) -> None:
        """Evaluate when the step count reaches a mark."""
        if trainer.global_step in self.at_steps:
            from gnnpot.training.evaluate import predict

            seconds = time.perf_counter() - self.start
            metrics, _ = predict(module.inference_model, self.graphs, batch_size=50)
            self.curve.append(
                {
                    "step": trainer.global_step,
                    "seconds": round(seconds, 1),
                    "forces_mae": metrics["forces_mae"],
                    "energy_per_atom_mae": metrics["energy_per_atom_mae"],
                }
            )


def run(name: str, frames: int, finetune: bool, steps: int, workdir: Path, test_graphs: list) -> dict:
    """One run; its curve and settings."""
    from gnnpot.data import AtomsDataModule, read_frames, write_frames
    from gnnpot.training import PotentialModule

    base = yaml.safe_load((REPO / "configs" / "mace_rmd17_cpu.yaml").read_text())["model"]
    data = workdir / f"train_{frames}.xyz"
    write_frames(data, list(read_frames(ACAC / "train_300K.xyz", index=f":{frames}")))
    datamodule = AtomsDataModule(str(data), val_fraction=0.1, cutoff=5.0, batch_size=5, val_batch_size=50, seed=0)
    steps_per_epoch = -(-(frames - round(0.1 * frames)) // 5)
    epochs = -(-steps // steps_per_epoch)
    options = {
        k: base[k] for k in ("energy_weight", "forces_weight", "weight_decay", "amsgrad", "ema_decay", "warmup_steps")
    }
    options.update(scheduler="cosine", min_lr=1e-5, e0="lstsq", lr=0.002 if finetune else 0.01)
    if finetune:
        module = PotentialModule(init_from="mace-rmd17-aspirin", cutoff=5.0, **options)
    else:
        module = PotentialModule("mace", base["representation_hparams"], cutoff=5.0, **options)
    marks = [round(steps * k / 10) for k in range(1, 11)]
    held_out = HeldOut(test_graphs, marks)
    trainer = L.Trainer(
        max_steps=steps,
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        inference_mode=False,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[held_out],
        default_root_dir=str(workdir),
    )
    torch.manual_seed(0)
    trainer.fit(module, datamodule)
    return {"run": name, "frames": frames, "finetune": finetune, "lr": options["lr"], "curve": held_out.curve}


def markdown(rows: list[dict], steps: int, machine: str) -> str:
    """The page docs/finetune.md."""
    lines = [
        "# Fine-tuning against training from scratch (acetylacetone)",
        "",
        f"`python -m benchmarks.finetune` on {machine}. MACE small (the shipped rMD17 models' size),"
        f" {steps} optimizer steps of batch 5 per run, cosine schedule, E0 by least squares on each run's"
        " frames; `finetune-50` starts from `mace-rmd17-aspirin` (`--model.init_from`, lr 0.002), the others"
        " from random weights (lr 0.01). Held-out: all 650 frames of `acac/test_MD_300K.xyz`, EMA weights.",
        "",
        "Force MAE (meV/Å) on the held-out frames along each run:",
        "",
        "| step | " + " | ".join(row["run"] for row in rows) + " |",
        "|---:|" + "---:|" * len(rows),
    ]
    for k in range(len(rows[0]["curve"])):
        cells = [f"{row['curve'][k]['forces_mae']:.1f}" if k < len(row["curve"]) else "" for row in rows]
        lines.append(f"| {rows[0]['curve'][k]['step']} | " + " | ".join(cells) + " |")
    lines += ["", "At the end (energy in meV/atom, wall time of the run):", ""]
    lines += ["| run | training frames | force MAE | energy MAE | time |", "|---|---:|---:|---:|---:|"]
    for row in rows:
        end = row["curve"][-1]
        lines.append(
            f"| {row['run']} | {row['frames']} | {end['forces_mae']:.1f} | {end['energy_per_atom_mae']:.2f} "
            f"| {end['seconds']:.0f} s |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Command line (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.finetune", description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1500, help="optimizer steps per run (default 1500)")
    parser.add_argument("--runs", nargs="*", default=list(RUNS), help=f"which runs (default {list(RUNS)})")
    parser.add_argument("--test-frames", type=int, default=None, help="held-out frames (default all 650)")
    parser.add_argument("--workdir", default="/tmp/gnnpot-finetune")
    parser.add_argument("--markdown", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    from gnnpot.data import build_graphs, read_frames

    torch.set_num_threads(1)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    index = f":{args.test_frames}" if args.test_frames else ":"
    test_graphs = build_graphs(read_frames(ACAC / "test_MD_300K.xyz", index=index), 5.0)
    rows = [run(name, *RUNS[name], args.steps, workdir, test_graphs) for name in args.runs]
    machine = f"{platform.machine()}, {os.cpu_count()} cores, 1 thread, torch {torch.__version__}"
    page = markdown(rows, args.steps, machine)
    print(page)
    if args.markdown:
        Path(args.markdown).write_text(page)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
