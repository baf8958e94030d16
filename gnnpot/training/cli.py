"""``gnnpot fit|validate|test``: a LightningCLI over :class:`PotentialModule` and :class:`AtomsDataModule`.

::

    gnnpot fit --config configs/painn_demo.yaml [--trainer.max_epochs 10] [--model.lr 1e-3] [--data.batch_size 8]
    gnnpot fit --config configs/painn_demo.yaml --ckpt_path runs/painn_demo/version_0/checkpoints/last.ckpt
    gnnpot test --config configs/painn_demo.yaml --ckpt_path runs/painn_demo/version_0/checkpoints/best.ckpt

Beyond Lightning's own arguments:
    * ``data.cutoff`` is linked to ``model.cutoff`` (given once); ``model.elements`` defaults to the
      elements of the training split.
    * ``--checkpoint.*`` (ModelCheckpoint: ``best.ckpt`` by ``val/loss`` and ``last.ckpt``) and
      ``--early_stopping.*`` (EarlyStopping on ``val/loss``).
    * ``--run.dir``, ``--run.name``, ``--run.version``: the run folder ``DIR/NAME/version_N`` holds
      ``config.yaml``, ``split.json``, ``metrics.csv``, ``checkpoints/`` and the plots.
    * ``--run.logger``: ``csv`` (always on), plus ``wandb`` and/or ``tensorboard``.
    * ``trainer.inference_mode`` defaults to ``False`` (forces need autograd) and gradients are clipped at 10.
"""

from __future__ import annotations

import netrc
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, Logger

from gnnpot.data.datamodule import AtomsDataModule
from gnnpot.training.callbacks import PlotCallback
from gnnpot.training.module import PotentialModule

LOGGERS = ("csv", "wandb", "tensorboard")


class GNNPotCLI(LightningCLI):
    """LightningCLI with gnnpot's defaults, run folder and loggers (see the module docstring)."""

    def __init__(self, args: Sequence[str] | None = None, run: bool = True) -> None:
        super().__init__(
            PotentialModule,
            AtomsDataModule,
            args=list(args) if args is not None else None,
            run=run,
            seed_everything_default=0,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"prog": "gnnpot", "default_env": False},
        )

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        commands = dict(LightningCLI.subcommands())
        commands.pop("predict")  # predictions: `gnnpot eval` or the ASE calculator
        return commands

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.cutoff", "model.cutoff")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/loss",
                "checkpoint.mode": "min",
                "checkpoint.filename": "best",
                "checkpoint.save_last": True,
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        parser.add_lightning_class_args(EarlyStopping, "early_stopping")
        parser.set_defaults({"early_stopping.monitor": "val/loss", "early_stopping.patience": 50})
        parser.add_argument("--run.dir", type=str, default="runs", help="folder of the runs")
        parser.add_argument("--run.name", type=str | None, default=None, help="run name (default: the family)")
        parser.add_argument("--run.version", type=int | str | None, default=None, help="default: next free")
        parser.add_argument(
            "--run.logger",
            type=list[str],
            default=["csv"],
            help=f"loggers among {list(LOGGERS)}; CSV is always on",
        )
        parser.add_argument("--run.wandb_project", type=str, default="gnnpot", help="wandb project")
        parser.add_argument("--run.plots", type=bool, default=True, help="parity plots and learning curves")
        parser.set_defaults({"trainer.inference_mode": False, "trainer.gradient_clip_val": 10.0})

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        run = self._get(self.config, "run")
        model = self._get(self.config, "model")
        name = run.name or model.representation
        trainer_config = self._get(self.config_init, "trainer", default={})
        kwargs["logger"] = make_loggers(
            run.dir, name, run.version, run.logger, trainer_config.get("logger"), run.wandb_project
        )
        if run.plots:
            callbacks = trainer_config.get("callbacks") or []
            callbacks = list(callbacks) if isinstance(callbacks, list) else [callbacks]
            kwargs["callbacks"] = [*callbacks, PlotCallback()]
        return super().instantiate_trainer(**kwargs)


def make_loggers(
    save_dir: str,
    name: str,
    version: int | str | None,
    choices: Sequence[str],
    given: Any = None,
    wandb_project: str = "gnnpot",
) -> list[Logger]:
    """CSV first (its folder is the run folder), then wandb and TensorBoard when chosen.

    ``given`` (the trainer's own ``logger`` setting) is kept: loggers in it are appended.
    wandb runs online only when it is configured (``WANDB_API_KEY``, a netrc entry or
    ``WANDB_MODE``), offline otherwise, so it never waits for the network.
    """
    unknown = sorted(set(choices) - set(LOGGERS))
    if unknown:
        raise ValueError(f"run.logger must be among {list(LOGGERS)}, got {unknown}")
    csv = CSVLogger(save_dir, name=name, version=version)
    loggers: list[Logger] = [csv]
    if isinstance(given, Logger):
        given = [given]
    if isinstance(given, list):
        loggers += [logger for logger in given if not isinstance(logger, CSVLogger)]
    if "tensorboard" in choices:
        loggers.append(tensorboard_logger(save_dir, name, csv.version))
    if "wandb" in choices:
        _ = csv.experiment  # make the run folder as CSV's own (else CSV warns that it exists)
        loggers.append(wandb_logger(csv.log_dir, name, wandb_project))
    return loggers


def tensorboard_logger(save_dir: str, name: str, version: int | str) -> Logger:
    """TensorBoard in the run folder; needs the ``tensorboard`` (or ``tensorboardX``) package."""
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None and importlib.util.find_spec("tensorboardX") is None:
        raise ModuleNotFoundError(
            "run.logger tensorboard needs the tensorboard package: pip install tensorboard "
            "(or choose run.logger csv / wandb)"
        )
    from lightning.pytorch.loggers import TensorBoardLogger

    return TensorBoardLogger(save_dir, name=name, version=version, default_hp_metric=False)


def wandb_configured() -> bool:
    """True when wandb can log online: an API key in the environment or a netrc entry for wandb."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def wandb_logger(run_dir: str, name: str, project: str) -> Logger:
    """wandb logging into ``run_dir/wandb``: online if configured (or ``WANDB_MODE`` says so), else offline."""
    from lightning.pytorch.loggers import WandbLogger

    offline = os.environ.get("WANDB_MODE", "online" if wandb_configured() else "offline") in ("offline", "disabled")
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    return WandbLogger(name=name, project=project, save_dir=run_dir, offline=offline, log_model=False)


def training_main(argv: Sequence[str]) -> int:
    """Run ``gnnpot fit|validate|test ...``; returns the exit status.

    ``gnnpot fit ... --ensemble N`` trains N members one after another, member k with seed
    ``seed_everything + k`` in run version ``ensemble_k`` (or ``<version>_k`` when ``--run.version``
    is given): a committee for :class:`~gnnpot.calculators.GNNPotCalculator`.
    """
    argv = list(argv)
    members = _pop_option(argv, "--ensemble")
    if members is None:
        return _run_cli(argv)
    if argv[0] != "fit" or not members.isdigit() or int(members) < 1:
        print(f"gnnpot: error: --ensemble takes a positive number and only works with fit, got {members!r}")
        return 2
    seed = int(_pop_option(argv, "--seed_everything") or _config_value(argv, "seed_everything") or 0)
    version = _pop_option(argv, "--run.version")
    for k in range(int(members)):
        member = f"{version}_{k}" if version is not None else f"ensemble_{k}"
        status = _run_cli([*argv, "--seed_everything", str(seed + k), "--run.version", member])
        if status != 0:
            return status
    return 0


def _run_cli(argv: list[str]) -> int:
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
            GNNPotCLI(args=argv)
    except SystemExit as exit_:  # argument errors and --help
        return exit_.code if isinstance(exit_.code, int) else 1
    return 0


def _pop_option(argv: list[str], name: str) -> str | None:
    """Remove ``name VALUE`` or ``name=VALUE`` from ``argv``; return the value (the last one given)."""
    value = None
    k = 0
    while k < len(argv):
        if argv[k] == name and k + 1 < len(argv):
            value = argv[k + 1]
            del argv[k : k + 2]
        elif argv[k].startswith(name + "="):
            value = argv[k].split("=", 1)[1]
            del argv[k]
        else:
            k += 1
    return value


def _config_value(argv: list[str], key: str) -> Any:
    """``key`` from the ``--config`` files in ``argv`` (the last file that sets it wins)."""
    import yaml

    value = None
    for k, arg in enumerate(argv[:-1]):
        if arg == "--config":
            loaded = yaml.safe_load(Path(argv[k + 1]).read_text()) or {}
            value = loaded.get(key, value)
    return value
