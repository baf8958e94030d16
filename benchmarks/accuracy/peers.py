"""The peers MACE and NequIP: their published settings, training commands and evaluators.

* MACE: ``mace_run_train`` in its virtual environment, the speed benchmark's MACE "small" with MACE's
  published rMD17 training recipe (:data:`MACE_ARGS`); it saves a checkpoint after every epoch
  (``--save_all_checkpoints``, EMA weights).
* NequIP: ``nequip-train`` in its virtual environment on a config written here
  (:func:`nequip_config`): the published revMD17 model (5 layers, 64 features, l_max 3, cutoff 4 Å)
  and training recipe, in the config format of the installed nequip (0.19).

Their snapshots are evaluated by ``peer_eval.py`` in the peer's own environment.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from benchmarks.accuracy.data import MoleculeData
from benchmarks.accuracy.models import clock

PEER_EVAL = Path(__file__).with_name("peer_eval.py")


# MACE "small" as the speed benchmark measured it (../shared/peers/mace/bench.py: 64x0e + 64x1o,
# max_L 1, correlation 3, 3 interactions, max_ell 3, r_max 5, num_radial_basis 8, num_cutoff_basis 5,
# MLP_irreps 16x0e, radial_MLP [64, 64, 64]) with MACE's published rMD17 training recipe
# (Batatia et al., NeurIPS 2022; ACEsuit/mace issue #57): ScaleShiftMACE with forces-RMS scaling,
# weighted loss, energy weight 1 and forces weight 1000, batch 5, Adam (AMSGrad) at 0.01 with weight
# decay 5e-7, EMA 0.99, ReduceLROnPlateau (factor 0.8, patience 50), float32. E0s: the least-squares
# average of the training set (rMD17 has no isolated-atom energies).
MACE_ARGS: dict[str, Any] = {
    "model": "ScaleShiftMACE",
    "interaction_first": "RealAgnosticResidualInteractionBlock",
    "interaction": "RealAgnosticResidualInteractionBlock",
    "num_interactions": 3,
    "hidden_irreps": "64x0e + 64x1o",
    "max_ell": 3,
    "correlation": 3,
    "r_max": 5.0,
    "num_radial_basis": 8,
    "num_cutoff_basis": 5,
    "MLP_irreps": "16x0e",
    "radial_MLP": "[64, 64, 64]",
    "gate": "silu",
    "scaling": "rms_forces_scaling",
    "E0s": "average",
    "loss": "weighted",
    "energy_weight": 1.0,
    "forces_weight": 1000.0,
    "batch_size": 5,
    "valid_batch_size": 10,
    "lr": 0.01,
    "amsgrad": True,
    "weight_decay": 5e-7,
    "ema": True,
    "ema_decay": 0.99,
    "scheduler": "ReduceLROnPlateau",
    "lr_factor": 0.8,
    "scheduler_patience": 50,
    "default_dtype": "float32",
    "seed": 0,
    "device": "cpu",
}
MACE_NAME = "mace"  # --name: checkpoints are <name>_run-<seed>_epoch-<N>.pt


def _flags(options: Mapping[str, Any]) -> list[str]:
    """``{"lr": 0.01, "ema": True}`` -> ``["--lr", "0.01", "--ema"]``."""
    out = []
    for name, value in options.items():
        out += [f"--{name}"] if value is True else [f"--{name}", str(value)]
    return out


def _run_peer_eval(command: list[str], env: Mapping[str, str], log: Path) -> dict[str, Any]:
    """Run ``peer_eval.py``; its stderr goes to ``log``, its JSON line is returned."""
    with open(log, "a") as stream:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=stream, env=dict(env), text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(command)} exited with status {done.returncode}; see {log}")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"{shlex.join(command)} printed no JSON line; see {log}")
    info = json.loads(lines[-1])
    info["eval_seconds"] = info.pop("seconds", None)
    return info


@dataclass
class _Peer:
    """What the two peers share: a virtual environment and an evaluator run in it."""

    venv: Path
    setup: Path  # the setup.sh that makes the venv

    def python(self) -> Path:
        """The peer's interpreter."""
        return self.venv / "bin" / "python"

    def missing(self) -> str | None:  # noqa: D102
        if self.python().exists():
            return None
        return f"no virtual environment at {self.venv}; make it with `bash {self.setup} {self.venv}`"


@dataclass
class MacePeer(_Peer):
    """MACE trained by ``mace_run_train`` (:data:`MACE_ARGS`)."""

    name: str = "peer-mace"
    label: str = "MACE (mace_run_train)"
    peer: str = "mace"
    suffix: str = ".pt"

    def _args(self, data: MoleculeData, work_dir: Path, epochs: int) -> list[str]:
        run = {
            "name": MACE_NAME, "work_dir": str(work_dir), "train_file": str(data.train_xyz),
            "valid_file": str(data.val_xyz), "energy_key": "REF_energy", "forces_key": "REF_forces",
            "max_num_epochs": epochs, "eval_interval": 1, "save_all_checkpoints": True, "plot": False,
        }  # fmt: skip
        return [str(self.venv / "bin" / "mace_run_train"), *_flags({**run, **MACE_ARGS})]

    def command(self, data: MoleculeData, run_dir: Path, budget_s: float, checkpoint_s: float) -> list[str]:  # noqa: D102
        # mace_run_train has no time limit and saves once per epoch; the watcher stops it.
        return self._args(data, run_dir / "train", 1_000_000)

    def checkpoints(self, run_dir: Path) -> list[Path]:  # noqa: D102
        found = (run_dir / "train" / "checkpoints").glob(f"{MACE_NAME}_run-*_epoch-*.pt")
        return sorted(found, key=lambda p: int(p.stem.rsplit("-", 1)[1]), reverse=True)

    def template(self, data: MoleculeData, run_dir: Path, env: Mapping[str, str]) -> Path:
        """The ``.model`` file of the same arguments at ``--max_num_epochs 0`` (made once per run)."""
        work_dir = run_dir / "template"
        path = work_dir / f"{MACE_NAME}.model"
        if not path.is_file():
            (work_dir / "checkpoints").mkdir(parents=True, exist_ok=True)  # mace_run_train expects it
            with open(run_dir / "template.log", "w") as log:
                done = subprocess.run(
                    self._args(data, work_dir, 0), stdout=log, stderr=subprocess.STDOUT, env=dict(env)
                )
            if done.returncode != 0 or not path.is_file():
                raise RuntimeError(f"mace_run_train --max_num_epochs 0 failed; see {run_dir / 'template.log'}")
        return path

    def evaluate(  # noqa: D102
        self, snapshot: Path, data: MoleculeData, run_dir: Path, out: Path, env: Mapping[str, str]
    ) -> dict[str, Any]:
        template = self.template(data, run_dir, env)
        command = [
            str(self.python()), str(PEER_EVAL), "mace", "--checkpoint", str(snapshot), "--template", str(template),
            "--frames", str(data.test_xyz), "--out", str(out),
        ]  # fmt: skip
        return _run_peer_eval(command, env, run_dir / "eval.log")

    def settings(self) -> dict[str, Any]:  # noqa: D102
        return {"source": "MACE small of ../shared/peers/mace/bench.py, MACE's rMD17 recipe", "args": MACE_ARGS}


# The NequIP paper's revMD17 input (mir-group/nequip-input-files revmd17/revmd17-<molecule>-n950-l3.yaml)
# in the builder arguments of nequip >= 0.7, as ../shared/peers/nequip/bench.py maps it ("paper_r4").
NEQUIP_MODEL: dict[str, Any] = {
    "num_layers": 5,
    "l_max": 3,
    "parity": True,
    "num_features": 64,
    "type_embed_num_features": 64,
    "radial_mlp_depth": 3,
    "radial_mlp_width": 64,
    "num_bessels": 8,
    "bessel_trainable": True,
    "polynomial_cutoff_p": 6,
    "readout_mlp_hidden_layers_depth": 1,
    "readout_mlp_hidden_layers_width": 16,
    "readout_mlp_nonlinearity": None,
    "convnet_resnet": False,
    "convnet_sc": True,
    "convnet_nonlinearity_type": "gate",
    "per_type_energy_scales_trainable": True,
    "per_type_energy_shifts_trainable": True,
    "model_dtype": "float32",
}
NEQUIP_CUTOFF = 4.0  # Å, the published revMD17 cutoff
# The published training recipe: batch 5, Adam (AMSGrad) at 0.01, loss 1 x MSE(total energy) +
# 1000 x MSE(forces), EMA 0.99, ReduceLROnPlateau (factor 0.8, patience 50). The file's fixed
# avg_num_neighbors (8 for ethanol, 10 for aspirin), global energy shift and force-RMS scale come
# from the training split here, as nequip's own configs do now.
NEQUIP_TRAINING: dict[str, Any] = {
    "batch_size": 5,
    "lr": 0.01,
    "amsgrad": True,
    "energy_weight": 1.0,
    "forces_weight": 1000.0,
    "ema_decay": 0.99,
    "lr_factor": 0.8,
    "lr_patience": 50,
}


def nequip_config(data: MoleculeData, run_dir: Path, budget_s: float, checkpoint_s: float) -> dict[str, Any]:
    """The ``nequip-train`` config of one run.

    Args:
        data: the molecule's files.
        run_dir: the run folder; checkpoints go to ``run_dir/train/checkpoints``.
        budget_s: the run's wall-clock budget (Lightning's ``max_time``, a safety net: the watcher
            stops the run), s.
        checkpoint_s: seconds of training between checkpoints (weights only).
    """
    types = list(data.elements)
    recipe = NEQUIP_TRAINING
    loader = {"_target_": "torch.utils.data.DataLoader", "batch_size": recipe["batch_size"]}
    stats = "${training_data_stats:%s}"
    return {
        "run": ["train"],
        "data": {
            "_target_": "nequip.data.datamodule.ASEDataModule",
            "seed": 0,
            "train_file_path": str(data.train_xyz),
            "val_file_path": str(data.val_xyz),
            "transforms": [
                {
                    "_target_": "nequip.data.transforms.ChemicalSpeciesToAtomTypeMapper",
                    "model_type_names": types,
                    "chemical_species_to_atom_type_map": {t: t for t in types},
                },
                {"_target_": "nequip.data.transforms.NeighborListTransform", "r_max": NEQUIP_CUTOFF},
            ],
            "train_dataloader": {**loader, "shuffle": True},
            "val_dataloader": {**loader, "batch_size": 10},
            "stats_manager": {"_target_": "nequip.data.CommonDataStatisticsManager", "type_names": types},
        },
        "trainer": {
            "_target_": "lightning.Trainer",
            "accelerator": "cpu",
            "max_epochs": 1_000_000,
            "max_time": clock(budget_s),
            "check_val_every_n_epoch": 1,
            "enable_progress_bar": False,
            "logger": False,
            "callbacks": [
                {
                    "_target_": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "dirpath": str(run_dir / "train" / "checkpoints"),
                    "save_last": True,
                    "save_top_k": 0,
                    "save_weights_only": True,
                    "train_time_interval": {"_target_": "datetime.timedelta", "seconds": max(1.0, round(checkpoint_s))},
                }
            ],
        },
        "training_module": {
            "_target_": "nequip.train.EMALightningModule",
            "ema_decay": recipe["ema_decay"],
            "loss": {
                "_target_": "nequip.train.EnergyForceLoss",
                "per_atom_energy": False,
                "coeffs": {"total_energy": recipe["energy_weight"], "forces": recipe["forces_weight"]},
            },
            "val_metrics": {
                "_target_": "nequip.train.EnergyForceMetrics",
                "coeffs": {"total_energy_mae": 1.0, "forces_mae": 1.0},
            },
            "optimizer": {"_target_": "torch.optim.Adam", "lr": recipe["lr"], "amsgrad": recipe["amsgrad"]},
            "lr_scheduler": {
                "scheduler": {
                    "_target_": "torch.optim.lr_scheduler.ReduceLROnPlateau",
                    "factor": recipe["lr_factor"],
                    "patience": recipe["lr_patience"],
                },
                "monitor": "val0_epoch/weighted_sum",
                "interval": "epoch",
                "frequency": 1,
            },
            "model": {
                "_target_": "nequip.model.NequIPGNNModel",
                "seed": 0,
                "type_names": types,
                "r_max": NEQUIP_CUTOFF,
                **NEQUIP_MODEL,
                "avg_num_neighbors": stats % "num_neighbors_mean",
                "per_type_energy_shifts": stats % "per_atom_energy_mean",
                "per_type_energy_scales": stats % "forces_rms",
            },
        },
    }


@dataclass
class NequipPeer(_Peer):
    """NequIP trained by ``nequip-train`` (:func:`nequip_config`)."""

    name: str = "peer-nequip"
    label: str = "NequIP (nequip-train)"
    peer: str = "nequip"
    suffix: str = ".ckpt"

    def command(self, data: MoleculeData, run_dir: Path, budget_s: float, checkpoint_s: float) -> list[str]:  # noqa: D102
        run_dir.mkdir(parents=True, exist_ok=True)
        config = nequip_config(data, run_dir, budget_s, checkpoint_s)
        (run_dir / "nequip.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        return [
            str(self.venv / "bin" / "nequip-train"), "-cp", str(run_dir), "-cn", "nequip.yaml",
            f"hydra.run.dir={run_dir / 'train'}",
        ]  # fmt: skip

    def checkpoints(self, run_dir: Path) -> list[Path]:  # noqa: D102
        path = run_dir / "train" / "checkpoints" / "last.ckpt"
        return [path] if path.is_file() else []

    def evaluate(  # noqa: D102
        self, snapshot: Path, data: MoleculeData, run_dir: Path, out: Path, env: Mapping[str, str]
    ) -> dict[str, Any]:
        command = [
            str(self.python()), str(PEER_EVAL), "nequip", "--checkpoint", str(snapshot),
            "--frames", str(data.test_xyz), "--out", str(out),
        ]  # fmt: skip
        return _run_peer_eval(command, env, run_dir / "eval.log")

    def settings(self) -> dict[str, Any]:  # noqa: D102
        return {
            "source": "NequIP revMD17 input (mir-group/nequip-input-files, l3), "
            "as ../shared/peers/nequip/bench.py maps it",
            "model": {**NEQUIP_MODEL, "r_max": NEQUIP_CUTOFF},
            "training": NEQUIP_TRAINING,
        }
