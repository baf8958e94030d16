"""What the runner needs of a trained model (:class:`Model`), and gnnpot's families as such models.

A gnnpot family trains with ``gnnpot fit --config configs/<family>_rmd17_cpu.yaml`` where the
family has a CPU recipe, else ``configs/<family>_rmd17.yaml``, on the benchmark's split. Only the
clock bounds the run (``max_epochs -1``), so a cosine schedule and ``stage_two_fraction`` follow the
budget (:mod:`gnnpot.training.module`). It writes ``last.ckpt`` (weights only;
:func:`gnnpot.models.load_model` reads its EMA weights) every ``checkpoint_s`` seconds of training.
Its snapshots are evaluated in this process. The peers are in :mod:`benchmarks.accuracy.peers`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import yaml
from torch_geometric.loader import DataLoader

from benchmarks.accuracy.data import MoleculeData, Predictions
from benchmarks.sizes import CONFIGS
from gnnpot import keys
from gnnpot.data.io import build_graphs, read_frames
from gnnpot.models import load_model

EVAL_BATCH = 50  # frames per batch when evaluating


def clock(seconds: float) -> str:
    """Lightning's ``DD:HH:MM:SS`` for ``--trainer.max_time``, rounded up to whole seconds."""
    total = int(np.ceil(seconds))
    return f"{total // 86400:02d}:{total // 3600 % 24:02d}:{total // 60 % 60:02d}:{total % 60:02d}"


def interval(seconds: float) -> str:
    """``H:MM:SS`` (a ``timedelta`` for jsonargparse), rounded to whole seconds, at least 1 s."""
    total = max(1, int(round(seconds)))
    return f"{total // 3600}:{total // 60 % 60:02d}:{total % 60:02d}"


class Model(Protocol):
    """What the runner needs of a trained model.

    Attributes:
        name: its name in ``--models`` and in the JSON lines.
        label: its name on the page.
        peer: ``gnnpot``, ``mace`` or ``nequip``.
        suffix: file ending of its checkpoints.
    """

    name: str
    label: str
    peer: str
    suffix: str

    def missing(self) -> str | None:
        """Why it cannot run here (a missing virtual environment), or None."""

    def command(self, data: MoleculeData, run_dir: Path, budget_s: float, checkpoint_s: float) -> list[str]:
        """The training command; it may write files (a config) into ``run_dir``."""

    def checkpoints(self, run_dir: Path) -> list[Path]:
        """Its checkpoint files under ``run_dir``, newest first."""

    def evaluate(
        self, snapshot: Path, data: MoleculeData, run_dir: Path, out: Path, env: Mapping[str, str]
    ) -> dict[str, Any]:
        """Write the snapshot's predictions on the test frames to ``out``.

        The file is that of :class:`~benchmarks.accuracy.data.Predictions`; the return value is what
        to record (versions, parameter count, seconds).
        """

    def settings(self) -> dict[str, Any]:
        """Its hyperparameters and their source, for the record."""


def _gnnpot_executable() -> list[str]:
    script = Path(sys.executable).with_name("gnnpot")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from gnnpot.cli import main; sys.exit(main())"]


@dataclass
class GnnpotFamily:
    """A gnnpot family trained from its rMD17 config (the CPU recipe where there is one).

    Args:
        family: a name in :data:`gnnpot.REGISTRY` with an rMD17 config.
        extra_args: more ``gnnpot fit`` arguments (smoke runs: tiny hyperparameters).
    """

    family: str
    extra_args: Sequence[str] = ()
    peer: str = "gnnpot"
    suffix: str = ".ckpt"

    @property
    def name(self) -> str:  # noqa: D102
        return self.family

    @property
    def label(self) -> str:  # noqa: D102
        return f"gnnpot {self.family}"

    @property
    def config(self) -> Path:
        """``configs/<family>_rmd17_cpu.yaml`` when it exists, else ``configs/<family>_rmd17.yaml``.

        The benchmark runs on CPU: a family whose rMD17 config is a GPU recipe (``mace``: 256
        channels, l_max 2) has a CPU one sized for hours, not days, on a CPU core.
        """
        cpu = CONFIGS / f"{self.family}_rmd17_cpu.yaml"
        return cpu if cpu.is_file() else CONFIGS / f"{self.family}_rmd17.yaml"

    def missing(self) -> str | None:  # noqa: D102
        return None if self.config.is_file() else f"no {self.config}"

    def command(self, data: MoleculeData, run_dir: Path, budget_s: float, checkpoint_s: float) -> list[str]:  # noqa: D102
        return [
            *_gnnpot_executable(), "fit", "--config", str(self.config),
            "--data.train_file", str(data.train_npz), "--data.test_file", "null", "--data.split_file", str(data.split),
            "--trainer.max_time", clock(budget_s), "--trainer.max_epochs", "-1",
            "--trainer.enable_progress_bar", "false",
            # last.ckpt only, unmonitored: a monitored checkpoint waits for the first validation
            # (an epoch: minutes for the slow families) before it saves anything
            "--checkpoint.monitor", "null", "--checkpoint.save_top_k", "0",
            "--checkpoint.train_time_interval", interval(checkpoint_s), "--checkpoint.save_weights_only", "true",
            "--run.dir", str(run_dir), "--run.name", self.family, "--run.version", "0", "--run.plots", "false",
            *self.extra_args,
        ]  # fmt: skip

    def checkpoints(self, run_dir: Path) -> list[Path]:  # noqa: D102
        path = run_dir / self.family / "version_0" / "checkpoints" / "last.ckpt"
        return [path] if path.is_file() else []

    def evaluate(  # noqa: D102
        self, snapshot: Path, data: MoleculeData, run_dir: Path, out: Path, env: Mapping[str, str]
    ) -> dict[str, Any]:
        start = time.perf_counter()
        model = load_model(snapshot)  # the EMA weights, in eval mode
        frames = read_frames(data.test_npz, index=f":{data.num_test}")
        energies, forces = [], []
        for batch in DataLoader(build_graphs(frames, model.cutoff), batch_size=EVAL_BATCH):
            result = model(batch)
            energies.append(result[keys.ENERGY].detach().double().reshape(-1).numpy())
            forces.append(result[keys.FORCES].detach().double().numpy())
        num_atoms = np.array([len(atoms) for atoms in frames], dtype=np.int64)
        Predictions(np.concatenate(energies), np.concatenate(forces), num_atoms).save(out)
        return {
            "n_params": sum(p.numel() for p in model.parameters()),
            "threads": torch.get_num_threads(),
            "eval_seconds": round(time.perf_counter() - start, 2),
        }

    def settings(self) -> dict[str, Any]:  # noqa: D102
        config = yaml.safe_load(self.config.read_text())
        return {
            "source": f"configs/{self.config.name}",
            "model": config.get("model", {}),
            "batch_size": config.get("data", {}).get("batch_size"),
            "cutoff": config.get("data", {}).get("cutoff"),
            "extra_args": list(self.extra_args),
        }
