"""``gnnpot fit|validate|test``: a LightningCLI over :class:`PotentialModule` and :class:`AtomsDataModule`.

::

    gnnpot fit --config configs/painn_demo.yaml [--trainer.max_epochs 10] [--model.lr 1e-3] [--data.batch_size 8]
    gnnpot fit --config configs/painn_demo.yaml --ckpt_path runs/painn_demo/version_0/checkpoints/last.ckpt
    gnnpot fit --config configs/painn_demo.yaml --ensemble 4
    gnnpot test --config configs/painn_demo.yaml --ckpt_path runs/painn_demo/version_0/checkpoints/best.ckpt

Beyond Lightning's own arguments:
    * ``data.cutoff`` is linked to ``model.cutoff`` (given once); ``model.elements`` defaults to the
      elements of the training split.
    * ``model.representation_hparams`` is checked against the family's accepted names (listed by
      ``gnnpot fit --help``); an unknown name, like any other bad value found when the classes are
      built, ends with one ``gnnpot fit: error: ...`` line and exit status 2.
    * ``--checkpoint.*`` (:class:`~gnnpot.training.checkpoints.RunCheckpoint`: ``best.ckpt`` by
      ``val/loss`` and ``last.ckpt``, written atomically into the run folder) and
      ``--early_stopping.*`` (EarlyStopping on ``val/loss``).
    * ``--run.dir``, ``--run.name``, ``--run.version``: the run folder ``DIR/NAME/version_N`` holds
      ``config.yaml``, ``split.json``, ``metrics.csv``, ``checkpoints/`` and the plots. ``DIR`` is
      ``--run.dir``, else ``--trainer.default_root_dir``, else ``runs``; giving both, different, is an error.
    * ``--run.logger``: ``csv`` (always on), plus ``wandb`` and/or ``tensorboard``.
    * ``--ensemble N`` (fit only): N members one after another, member k with seed ``seed_everything + k``
      in run version ``ensemble_k`` (``<run.version>_k`` when ``--run.version`` is given): a committee
      for :class:`~gnnpot.calculators.GNNPotCalculator`.
    * ``--threads`` (default ``auto``): torch's intra-op threads, chosen as
      :func:`~gnnpot.calculators.threads.training_threads` says (``OMP_NUM_THREADS`` when set, else
      the cores not busy now), since two spinning OpenMP threads beside a busy core train many times
      slower than one. A multi-process DDP run leaves the choice to Lightning.
    * ``trainer.inference_mode`` defaults to ``False`` (forces need autograd) and gradients are clipped at 10.
"""

from __future__ import annotations

import netrc
import os
import sys
import warnings
from argparse import ArgumentError
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import torch
import torch.distributed as dist
from jsonargparse.typing import PositiveInt
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, Logger
from lightning.pytorch.plugins.io import CheckpointIO

from gnnpot.calculators.threads import training_threads
from gnnpot.cli.common import error_line, guarded, is_debug
from gnnpot.data.datamodule import AtomsDataModule
from gnnpot.models.io import load_error
from gnnpot.representations import REGISTRY
from gnnpot.training.callbacks import PlotCallback
from gnnpot.training.checkpoints import AtomicCheckpointIO, RunCheckpoint
from gnnpot.training.module import PotentialModule

LOGGERS = ("csv", "wandb", "tensorboard")
DEFAULT_RUN_DIR = "runs"


class GNNPotCLI(LightningCLI):
    """LightningCLI with gnnpot's defaults, run folder, loggers and ensembles (see the module docstring).

    Args:
        args: the command line after ``gnnpot`` (``["fit", "--config", ...]``); ``None`` reads ``sys.argv``.
        run: run the subcommand; ``False`` parses a command line without one and only builds the classes.
    """

    def __init__(self, args: Sequence[str] | None = None, run: bool = True) -> None:
        self.members = 1  # ensemble size, from --ensemble before the classes are built
        self._ensemble_seed = 0  # seed_everything of member 0
        self._ensemble_version: int | str | None = None  # --run.version the member versions derive from
        super().__init__(
            PotentialModule,
            AtomsDataModule,
            args=list(args) if args is not None else None,
            run=run,
            seed_everything_default=0,
            save_config_kwargs={"overwrite": True},
            # Parse errors raise (ArgumentError) instead of printing the usage: training_main prints one line.
            parser_kwargs={
                "prog": "gnnpot",
                "default_env": False,
                "exit_on_error": False,
                **{name: {"exit_on_error": False} for name in self.subcommands()},
            },
        )

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """Lightning's subcommands but ``predict`` (predictions: ``gnnpot eval`` or the ASE calculator)."""
        commands = dict(LightningCLI.subcommands())
        commands.pop("predict")
        return commands

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Links, checkpoint and early-stopping callbacks, ``--run.*``, ``--ensemble`` and gnnpot's defaults.

        Args:
            parser: the parser of one subcommand (or the only one when ``run=False``).
        """
        parser.link_arguments("data.cutoff", "model.cutoff")
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
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
        # Checked after each validation only: a run that stops on max_steps within an epoch has no val/loss
        # at that epoch's end, and the default check there would fail the finished run.
        parser.set_defaults(
            {
                "early_stopping.monitor": "val/loss",
                "early_stopping.patience": 50,
                "early_stopping.check_on_train_epoch_end": False,
            }
        )
        parser.add_argument(
            "--run.dir",
            type=str | None,
            default=None,
            help=f"folder of the runs (default: --trainer.default_root_dir when given, else {DEFAULT_RUN_DIR})",
        )
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
        parser.add_argument(
            "--ensemble",
            type=PositiveInt,
            default=1,
            metavar="N",
            help="fit only: train N members one after another, member k with seed seed_everything + k in run "
            "version ensemble_k (<run.version>_k when --run.version is given): a committee for GNNPotCalculator",
        )
        parser.add_argument(
            "--threads",
            type=str,
            default="auto",
            help="torch intra-op threads, or auto: OMP_NUM_THREADS when set, else the cores not busy now "
            "(default auto; docs/threads.md)",
        )
        parser.set_defaults({"trainer.inference_mode": False, "trainer.gradient_clip_val": 10.0})
        # argparse has no public lookup of an action; the help comes from PotentialModule's docstring.
        action = parser._option_string_actions["--model.representation_hparams"]
        action.help = f"{action.help} Accepted by family: {representation_hparams_help()}."

    def before_instantiate_classes(self) -> None:
        """Set the thread count; check ``--ensemble`` and name the first member's run version."""
        try:
            torch.set_num_threads(training_threads(self._get(self.config, "threads")))
        except ValueError as err:
            self._error(str(err))
        self.members = self._get(self.config, "ensemble")
        if self.members == 1:
            return
        if self.subcommand != "fit":
            self._error(f"--ensemble trains models, so it works with fit only, got --ensemble {self.members}")
        config = self.config[self.subcommand]
        seed = config["seed_everything"]
        self._ensemble_seed = 0 if seed is False else int(seed)  # True became a random seed in _set_seed
        self._ensemble_version = config["run.version"]
        config["ensemble"] = 1  # each member's config.yaml is the recipe of that member alone
        self._configure_member(0)

    def _parse_ckpt_path(self) -> None:
        """Read ``--ckpt_path``'s hyperparameters; a file torch cannot read or refuses becomes a ``ValueError``.

        LightningCLI loads the checkpoint in this private hook (``torch.load``, weights only) before
        the trainer does; the trainer's load goes through ``AtomicCheckpointIO.load_checkpoint``.
        """
        try:
            super()._parse_ckpt_path()
        except ArgumentError:
            raise
        except Exception as err:
            raise load_error(self.config[self.config.subcommand].get("ckpt_path"), err) from err

    def instantiate_classes(self) -> None:
        """Build model, data and trainer; a bad value (``ValueError``) ends with one error line, exit 2."""
        try:
            super().instantiate_classes()
        except ValueError as err:
            self._error(str(err))

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The trainer with the run folder's loggers and, when ``run.plots``, the plot callback.

        Args:
            kwargs: trainer arguments that override the config's.
        """
        run = self._get(self.config, "run")
        model = self._get(self.config, "model")
        name = run.name or model.representation
        trainer_config = self._get(self.config_init, "trainer", default={})
        run_dir = resolve_run_dir(run.dir, trainer_config.get("default_root_dir"))
        kwargs["default_root_dir"] = run_dir
        kwargs["logger"] = make_loggers(
            run_dir, name, run.version, run.logger, trainer_config.get("logger"), run.wandb_project
        )
        plugins = trainer_config.get("plugins") or []
        plugins = list(plugins) if isinstance(plugins, list) else [plugins]
        if not any(isinstance(plugin, CheckpointIO) for plugin in plugins):
            kwargs["plugins"] = [*plugins, AtomicCheckpointIO()]
        if run.plots:
            callbacks = trainer_config.get("callbacks") or []
            callbacks = list(callbacks) if isinstance(callbacks, list) else [callbacks]
            kwargs["callbacks"] = [*callbacks, PlotCallback()]
        return super().instantiate_trainer(**kwargs)

    def fit(self, model: PotentialModule, **kwargs: Any) -> None:
        """``trainer.fit`` once per ensemble member (LightningCLI runs this in place of ``trainer.fit``).

        Member 0 uses the classes already built; each further member gets its seed and run version,
        then fresh classes.

        Args:
            model: the module built from the config.
            kwargs: the other arguments of :meth:`lightning.pytorch.Trainer.fit` (``datamodule``, ``ckpt_path``, ...).
        """
        for k in range(self.members):
            if k > 0:
                self._configure_member(k)
                self.instantiate_classes()
                model, kwargs["datamodule"] = self.model, self.datamodule
            self.trainer.fit(model, **kwargs)

    def _configure_member(self, k: int) -> None:
        """Set member ``k``'s seed (``seed_everything + k``) and run version in the config, and seed now."""
        config = self.config[self.subcommand]
        base = self._ensemble_version
        config["seed_everything"] = self._ensemble_seed + k
        config["run.version"] = f"{base}_{k}" if base is not None else f"ensemble_{k}"
        seed_everything(self._ensemble_seed + k, workers=True)

    def _error(self, message: str) -> NoReturn:
        """Print ``gnnpot <subcommand>: error: <message>`` and exit with status 2, as argparse does."""
        command = " ".join(word for word in ("gnnpot", self.subcommand) if word)
        print(f"{command}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def representation_hparams_help() -> str:
    """``schnet: num_features, ...; painn: ...``: each family's accepted hyperparameters, from the registry."""
    return "; ".join(f"{name}: {', '.join(family.hparam_names())}" for name, family in REGISTRY.items())


def resolve_run_dir(run_dir: str | None, default_root_dir: str | Path | None) -> str:
    """The folder of the runs: ``--run.dir``, else ``--trainer.default_root_dir``, else ``runs``.

    Args:
        run_dir: ``run.dir`` of the config.
        default_root_dir: ``trainer.default_root_dir`` of the config.

    Raises:
        ValueError: both are given and name different folders.
    """
    if run_dir is not None and default_root_dir is not None and Path(run_dir) != Path(default_root_dir):
        raise ValueError(
            f"--run.dir {run_dir} and --trainer.default_root_dir {default_root_dir} differ; "
            "give the folder of the runs once, as --run.dir"
        )
    if run_dir is not None:
        return run_dir
    return str(default_root_dir) if default_root_dir is not None else DEFAULT_RUN_DIR


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

    Args:
        save_dir: folder of the runs; the run folder is ``save_dir/name/version``.
        name: run name.
        version: run version; ``None`` takes the next free ``version_N``.
        choices: loggers among :data:`LOGGERS`.
        given: the trainer's ``logger`` setting (a logger, a list of them, a bool or ``None``).
        wandb_project: wandb project name.

    Raises:
        ValueError: a choice that is not in :data:`LOGGERS`.
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
    """TensorBoard in the run folder; needs the ``tensorboard`` (or ``tensorboardX``) package.

    Args:
        save_dir: folder of the runs.
        name: run name.
        version: run version (CSV's, so both write into one folder).
    """
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
    """Weights & Biases logging into ``run_dir/wandb``: online if configured (or ``WANDB_MODE`` says so), else offline.

    Args:
        run_dir: the run folder.
        name: run name.
        project: wandb project name.
    """
    from lightning.pytorch.loggers import WandbLogger

    offline = os.environ.get("WANDB_MODE", "online" if wandb_configured() else "offline") in ("offline", "disabled")
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    return WandbLogger(name=name, project=project, save_dir=run_dir, offline=offline, log_model=False)


def training_main(argv: Sequence[str]) -> int:
    """Run ``gnnpot fit|validate|test ...``; returns the exit status.

    Every error ends with one ``gnnpot <subcommand>: error: ...`` line (see
    :func:`gnnpot.cli.common.error_line`) unless ``--debug`` was given: argument and config errors
    (malformed YAML included, without the usage text) with status 2, errors while training (bad data,
    a refused checkpoint) with status 1.

    Args:
        argv: the command line after ``gnnpot``, subcommand first (``["fit", "--config", ...]``).

    Returns:
        0, 1 for an error while running, 2 for an argument or config error, 0 for ``--help``.
    """
    command = argv[0] if argv and argv[0] in GNNPotCLI.subcommands() else ""
    return guarded(command, lambda _: _run_cli(argv, command), None)


def _run_cli(argv: Sequence[str], command: str) -> int:
    """Build and run :class:`GNNPotCLI`; argument and config errors print their line here (status 2)."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
            # torch's note on a foreign checkpoint's pickle protocol, printed before the refusal itself
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            GNNPotCLI(args=argv)
    except SystemExit as exit_:  # --help, and the errors GNNPotCLI._error has printed
        return exit_.code if isinstance(exit_.code, int) else 1
    except ArgumentError as err:
        if is_debug():
            raise
        message = f"{err}; see gnnpot {command} --help"
        if "config" in message.lower() and config_files(argv):  # name the file jsonargparse parsed
            message = f"{', '.join(config_files(argv))}: {message}"
        print(error_line(command, ValueError(message)), file=sys.stderr)
        return 2
    finally:
        leave_process_group()
    return 0


def leave_process_group() -> None:
    """Destroy the DDP process group, if this process joined one, before the interpreter exits.

    Lightning leaves the group open after ``fit``. At interpreter exit gloo's threads were then torn
    down with the process and, now and then, a finished rank aborted ("terminate called without an
    active exception", SIGABRT) and Lightning's launcher killed the others: a complete run exited -9.
    """
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def config_files(argv: Sequence[str]) -> list[str]:
    """The files given with ``--config``/``-c`` on a command line."""
    files = []
    for k, word in enumerate(argv):
        if word in ("--config", "-c") and k + 1 < len(argv):
            files.append(argv[k + 1])
        elif word.startswith("--config="):
            files.append(word.split("=", 1)[1])
    return files
