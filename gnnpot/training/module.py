"""``PotentialModule``: the LightningModule that trains a :class:`~gnnpot.models.ForceField`.

The model is built inside the module from plain data (family name, hyperparameters, cutoff,
elements), so ``save_hyperparameters`` records everything needed to rebuild it. Statistics that
depend on the data are resolved in :meth:`PotentialModule.setup` from the **training split only**
and written back into the hyperparameters as numbers: a checkpoint therefore rebuilds the same
model without the data.

* ``elements``: ``None`` takes the elements of the training split.
* ``e0``: ``"auto"``, ``"lstsq"`` or ``"isolated"`` (see :func:`gnnpot.data.stats.fit_e0`; the
  isolated atoms come from ``isolated_atoms_file`` or from the training split), or
  ``{symbol: eV}``.
* ``scale``: ``"forces_rms"`` (eV/Å, NequIP's choice), ``"energy_std"`` (per-atom energy std after
  E0) or a number in eV.
* the family's ``data_statistics`` (NequIP's ``avg_num_neighbors``): from the training graphs
  unless ``representation_hparams`` gives a number (or ``null`` for none).

Stage two (MACE's "SWA" stage): from epoch ``stage_two_start`` on (or from the first epoch that
starts past ``stage_two_fraction`` of the run), the loss uses ``stage_two_energy_weight`` and
``stage_two_forces_weight`` (MACE's defaults 1000 and 100) to pull the total energy in after a
force-dominated first stage. The validation loss changes meaning there, so the best-checkpoint and
early-stopping records start afresh at the switch.

The run's length, for the cosine schedule and ``stage_two_fraction``, is whichever of the trainer's
limits ends it first: its optimizer steps (``max_epochs`` or ``max_steps``) or its wall-clock time
(``max_time``). A run bounded by ``max_time`` alone therefore anneals to ``min_lr`` at the deadline,
which is what a fixed time budget needs; the schedule then depends on the machine's speed, so such a
run is not bit-for-bit reproducible.

Fine-tuning: ``init_from`` (a model file, a run folder or checkpoint, or a pretrained name) starts
from a trained model. Its family, hyperparameters, cutoff, ZBL prior, energy scale and data
statistics are taken over; the elements become the source's and the training split's together (a
new element gets fresh embedding rows, the old rows are kept); E0 is refit on the new data by the
``e0`` method. ``freeze_representation`` trains the readout alone; a lower ``lr`` is the other knob.

Validation, testing and the saved weights use the exponential moving average of the weights
(``ema_decay``; ``null`` turns it off). Forces need autograd in validation and testing, so the
trainer must run with ``inference_mode=False`` (the CLI sets it).
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from ase.data import chemical_symbols
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, Timer
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torch_geometric.data import Batch
from torchmetrics import MeanMetric

from gnnpot import keys
from gnnpot.data.checks import DataError
from gnnpot.data.io import frame_labels, read_frames
from gnnpot.data.stats import data_sha256, fit_e0, force_rms, per_atom_energy_std, summarise
from gnnpot.models import ForceField, build_model, load_model, to_atomic_numbers
from gnnpot.models.build import transfer_weights
from gnnpot.models.io import plain_data
from gnnpot.representations import check_hparams, get_family
from gnnpot.training.ema import EMA
from gnnpot.training.loss import LossKind, PotentialLoss
from gnnpot.training.metrics import PotentialMetrics

STAGES = ("train", "val", "test")
E0_METHODS = ("auto", "lstsq", "isolated")
SCALE_METHODS = ("forces_rms", "energy_std")


class PotentialModule(L.LightningModule):
    """Train, validate and test a potential on energies, forces and stress.

    Args:
        representation: family name in :data:`gnnpot.REGISTRY` (``schnet``, ``dimenet``, ``painn``,
            ``nequip``, ``mace``, ``acsf``, ``hist``).
        representation_hparams: the family's hyperparameters (``num_features``, ``num_interactions``, ...).
        cutoff: neighbour radius, Å (the CLI links it to ``data.cutoff``).
        elements: element symbols or atomic numbers; ``None`` infers them from the training split.
        zbl: add the ZBL short-range repulsion prior.
        long_range: an electrostatic head, e.g. ``{kind: ewald}`` (charges learned from the features)
            or ``{kind: fixed_charges}`` (the data's ``initial_charges``), with ``smearing``,
            ``cutoff`` and ``accuracy`` (see :func:`gnnpot.models.build_model`); ``None`` for none.
            With ``init_from``, ``None`` keeps the source model's head. Not with ``compile``.
        dispersion: a fixed DFT-D3(BJ) term, e.g. ``{functional: pbe}`` (see
            :func:`gnnpot.models.build_model`); ``None`` for none. Not with ``compile``.
        e0: per-element reference energies: a method (``auto``, ``lstsq``, ``isolated``) or ``{symbol: eV}``.
        isolated_atoms_file: structures with isolated-atom energies for ``e0`` (e.g. ``isolated_atoms.xyz``).
        train_e0: train a per-element correction to the E0s, starting at 0 (for E0s fitted by least
            squares: see :class:`~gnnpot.nn.ScaleShift`).
        scale: energy scale of the readout: ``forces_rms``, ``energy_std`` or a number (eV).
        loss: ``mse`` or ``huber``.
        huber_delta: Huber threshold in the unit of each term.
        energy_weight: weight of the per-atom energy term; see :mod:`gnnpot.training.loss` for the defaults.
        forces_weight: weight of the force term.
        stress_weight: weight of the stress term.
        optimizer: ``adam`` or ``adamw``.
        lr: peak learning rate.
        weight_decay: weight decay (decoupled for ``adamw``).
        amsgrad: use the AMSGrad variant.
        scheduler: ``plateau`` (ReduceLROnPlateau on ``monitor``), ``cosine`` (to ``min_lr`` over the
            run: its optimizer steps or its ``max_time``, whichever ends it first) or ``none``.
        lr_factor: factor of each plateau reduction.
        lr_patience: epochs without improvement of ``monitor`` before a reduction.
        min_lr: the learning rate never goes below this.
        warmup_steps: linear warm-up over this many optimizer steps (any scheduler; the warm-up sets the
            rate, so a plateau reduction within it does not last; keep it shorter than the patience).
        monitor: metric the plateau scheduler watches.
        ema_decay: decay of the weight average used for validation, testing and saving; ``None`` for none.
        stage_two_start: first epoch of stage two; ``None`` for no stage two.
        stage_two_fraction: or start stage two at the first epoch that begins past this fraction of
            the run (steps or time, see the module docstring); not with ``stage_two_start``.
        stage_two_energy_weight: energy weight in stage two.
        stage_two_forces_weight: force weight in stage two (stress keeps ``stress_weight``).
        compile: train through the compiled path (:meth:`ForceField.enable_compile`): the first
            step compiles (seconds to minutes; Inductor caches the result on disk, so a later run
            of the same architecture starts faster), later steps run faster. Validation and
            testing stay eager. Off by default.
        init_from: start from this trained model (model file, checkpoint, run folder or pretrained
            name) instead of random weights; see the module docstring.
        freeze_representation: with ``init_from``, keep the representation's weights fixed and train
            the readout only.
    """

    def __init__(
        self,
        representation: str = "painn",
        representation_hparams: dict[str, Any] | None = None,
        cutoff: float = 5.0,
        elements: list[str | int] | None = None,
        zbl: bool = False,
        long_range: dict[str, Any] | None = None,
        dispersion: dict[str, Any] | None = None,
        e0: str | dict[str, float] = "auto",
        isolated_atoms_file: str | None = None,
        train_e0: bool = False,
        scale: str | float = "forces_rms",
        loss: LossKind = "mse",
        huber_delta: float = 0.01,
        energy_weight: float = 1.0,
        forces_weight: float = 100.0,
        stress_weight: float = 100.0,
        optimizer: Literal["adam", "adamw"] = "adam",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        scheduler: Literal["plateau", "cosine", "none"] = "plateau",
        lr_factor: float = 0.8,
        lr_patience: int = 10,
        min_lr: float = 1e-6,
        warmup_steps: int = 0,
        monitor: str = "val/loss",
        ema_decay: float | None = 0.99,
        stage_two_start: int | None = None,
        stage_two_fraction: float | None = None,
        stage_two_energy_weight: float = 1000.0,
        stage_two_forces_weight: float = 100.0,
        compile: bool = False,
        init_from: str | None = None,
        freeze_representation: bool = False,
    ) -> None:
        super().__init__()
        if freeze_representation and not init_from:
            raise ValueError("freeze_representation needs init_from: a random representation would stay random")
        source = _source_config(init_from, representation, representation_hparams, cutoff) if init_from else None
        if source is not None:
            representation, representation_hparams = source["representation"], source["hparams"]
        check_hparams(representation, representation_hparams or {})
        if isinstance(e0, str) and e0 not in E0_METHODS:
            raise ValueError(f"e0 must be one of {E0_METHODS} or {{symbol: eV}}, got {e0!r}")
        if isinstance(scale, str) and scale not in SCALE_METHODS:
            raise ValueError(f"scale must be one of {SCALE_METHODS} or a number, got {scale!r}")
        if optimizer not in ("adam", "adamw"):
            raise ValueError(f"optimizer must be 'adam' or 'adamw', got {optimizer!r}")
        if scheduler not in ("plateau", "cosine", "none"):
            raise ValueError(f"scheduler must be 'plateau', 'cosine' or 'none', got {scheduler!r}")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr!r}")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps!r}")
        if stage_two_start is not None and stage_two_start < 1:
            raise ValueError(f"stage_two_start must be an epoch >= 1 or null, got {stage_two_start!r}")
        if stage_two_fraction is not None and not 0 < stage_two_fraction < 1:
            raise ValueError(f"stage_two_fraction must be in (0, 1) or null, got {stage_two_fraction!r}")
        if stage_two_start is not None and stage_two_fraction is not None:
            raise ValueError("give stage_two_start (an epoch) or stage_two_fraction (of the run), not both")
        self.save_hyperparameters()
        self.hparams["representation"] = representation
        self.hparams["representation_hparams"] = dict(representation_hparams or {})
        if source is not None:  # the architecture and the energy scale are the source model's
            self.hparams.update(zbl=bool(source["zbl"]), scale=float(source["scale"]))
            if long_range is None:
                self.hparams["long_range"] = source.get("long_range")
        if elements is not None:
            self.hparams["elements"] = [chemical_symbols[z] for z in to_atomic_numbers(elements)]
        self.loss_fn = PotentialLoss(energy_weight, forces_weight, stress_weight, kind=loss, huber_delta=huber_delta)
        self.stage_two_loss_fn = PotentialLoss(
            stage_two_energy_weight, stage_two_forces_weight, stress_weight, kind=loss, huber_delta=huber_delta
        )
        # "train" is an nn.Module method, so the keys carry a suffix.
        self.metrics = torch.nn.ModuleDict({f"{stage}_errors": PotentialMetrics() for stage in STAGES})
        self.losses = torch.nn.ModuleDict({f"{stage}_loss": MeanMetric() for stage in STAGES})
        self.model: ForceField | None = None
        self.ema: EMA | None = None
        self.predictions: dict[str, list[np.ndarray]] | None = None  # filled by test_step when set to {}
        self.training_data_sha256: str | None = None  # set in setup(), kept in checkpoints
        self._source_elements = [chemical_symbols[z] for z in source["elements"]] if source else []
        self._source_e0 = {chemical_symbols[int(z)]: float(v) for z, v in source["e0"].items()} if source else {}
        self._weights_from_source = False  # init_from is applied once, when the model is first built for fit
        self._stage_two_from: int | None = None  # the epoch stage two began at, by stage_two_fraction
        if self.statistics_resolved:
            self.build()

    # --- the model ---------------------------------------------------------------------------

    @property
    def statistics_resolved(self) -> bool:
        """True when elements, E0, scale and the family's data statistics are numbers, not methods."""
        hp = self.hparams
        return (
            hp.elements is not None
            and isinstance(hp.e0, Mapping)
            and not isinstance(hp.scale, str)
            and not _unresolved_statistics(hp.representation, hp.representation_hparams)
        )

    def build(self) -> None:
        """Build the model (and its EMA copy) from the resolved hyperparameters."""
        hp = self.hparams
        self.model = build_model(
            hp.representation,
            cutoff=hp.cutoff,
            elements=hp.elements,
            e0=hp.e0,
            scale=float(hp.scale),
            train_e0=hp.get("train_e0", False),
            zbl=hp.zbl,
            long_range=hp.get("long_range"),
            dispersion=hp.get("dispersion"),
            **hp.representation_hparams,
        ).enable_compile(hp.get("compile", False))
        self.ema = EMA(self.model, hp.ema_decay) if hp.ema_decay is not None else None

    @property
    def inference_model(self) -> ForceField:
        """The weights used for validation, testing and export: the EMA when there is one."""
        if self.model is None:
            raise RuntimeError("the model is not built yet: call setup() with training data or give every statistic")
        return self.ema.module if self.ema is not None else self.model

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        """Energy, forces and stress of ``batch`` with the inference weights (see :attr:`inference_model`)."""
        return self.inference_model(batch)

    def resolve_statistics(self, train_data: Sequence[Any]) -> dict[str, Any]:
        """Resolve elements, E0, scale and the family's data statistics from the training graphs (in place).

        Returns the resolved values (also written to ``self.hparams`` and, once built, ``model.config``).
        """
        hp = self.hparams
        summary = summarise(train_data)  # one pass: the data may be read lazily from disk
        if summary.num_frames == 0:
            raise ValueError("statistics need training data, got an empty training split")
        present = set(summary.elements)
        if hp.elements is None:
            numbers = present | (set(to_atomic_numbers(self._source_elements)) if self._source_elements else set())
            hp.elements = [chemical_symbols[z] for z in sorted(numbers)]
        numbers = to_atomic_numbers(hp.elements)
        if isinstance(hp.e0, str):
            if hp.isolated_atoms_file:
                frames = read_frames(hp.isolated_atoms_file, require=(keys.ENERGY,))
                for atoms, frame_id in zip(frames, frames.frame_ids):
                    if len(atoms) != 1 or atoms.pbc.any():
                        raise DataError(f"{frames.source}, frame {frame_id}: not an isolated atom (one atom, no cell)")
                    summary.add(atoms.numbers, frame_labels(atoms)[keys.ENERGY], None, True)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="no energy data")
                e0 = fit_e0(summary, numbers, method=hp.e0)
            hp.e0 = {chemical_symbols[z]: float(value) for z, value in e0.items()}
            for symbol, value in self._source_e0.items():  # init_from: elements the new data lacks keep their E0
                if to_atomic_numbers([symbol])[0] not in present and symbol in hp.e0:
                    hp.e0[symbol] = value
        if isinstance(hp.scale, str):
            e0_numbers = {to_atomic_numbers([s])[0]: v for s, v in hp.e0.items()}
            if hp.scale == "forces_rms":
                try:
                    hp.scale = force_rms(summary)
                except ValueError:  # no force labels: fall back on the energy spread
                    hp.scale = per_atom_energy_std(summary, e0_numbers)
            else:
                hp.scale = per_atom_energy_std(summary, e0_numbers)
            if not hp.scale > 0:
                hp.scale = 1.0
        statistics = get_family(hp.representation).data_statistics
        resolved = {
            name: float(statistics[name](summary))
            for name in _unresolved_statistics(hp.representation, hp.representation_hparams)
        }
        if self.training_data_sha256 is None:
            self.training_data_sha256 = summary.sha256
        hp.representation_hparams = {**hp.representation_hparams, **resolved}
        # Loggers record the hyperparameters after setup(): give them the resolved numbers.
        self._hparams_initial = copy.deepcopy(self._hparams)
        return {
            "elements": hp.elements,
            "e0": hp.e0,
            "scale": hp.scale,
            **{name: hp.representation_hparams.get(name) for name in statistics},
        }

    # --- Lightning hooks -------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        """Hash the training data and resolve the statistics from the datamodule's training split."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        train_data = getattr(datamodule, "train_data", None)
        if self.model is None and not self.statistics_resolved:
            if train_data is None:
                raise RuntimeError(
                    "PotentialModule resolves elements, e0 and scale from the datamodule's train_data "
                    "(AtomsDataModule); give them as numbers when training from plain dataloaders"
                )
            self.resolve_statistics(train_data)  # hashes the data in the same pass
        if stage == "fit" and train_data is not None and len(train_data) and self.training_data_sha256 is None:
            self.training_data_sha256 = data_sha256(train_data)

    def configure_model(self) -> None:
        """Build the model when :meth:`setup` did not (statistics given as numbers); apply ``init_from``.

        When training resumes from a checkpoint, Lightning loads the checkpoint's weights after this
        hook, so they replace the ``init_from`` weights.
        """
        if self.model is None:
            self.build()
        if self.hparams.get("init_from") and not self._weights_from_source:
            self.initialise_from_source()

    def initialise_from_source(self) -> None:
        """Copy the ``init_from`` model's weights into the model and its EMA (E0 stays as resolved)."""
        hp = self.hparams
        source = load_model(hp.init_from)
        mapped = transfer_weights(source, self.model)
        if self.ema is not None:
            self.ema = EMA(self.model, hp.ema_decay)
        if hp.get("freeze_representation"):
            self.model.potential.representation.requires_grad_(False)
        self._weights_from_source = True
        new = sorted(set(hp.elements) - set(self._source_elements))
        rank_zero_info(
            f"init_from {hp.init_from}: {len(source.state_dict())} tensors copied"
            + (f", {len(mapped)} of them row by row for the new elements {new}" if mapped else "")
            + ("; the representation is frozen" if hp.get("freeze_representation") else "")
        )

    @property
    def run_progress(self) -> float:
        """The share of the run done, 0 to 1: by optimizer steps or by ``max_time``, whichever is further."""
        if self._trainer is None:
            return 0.0
        progress = 0.0
        total = self.trainer.estimated_stepping_batches
        if math.isfinite(total) and total > 0:
            progress = self.trainer.global_step / total
        for callback in self.trainer.callbacks:
            if isinstance(callback, Timer) and callback.time_remaining() is not None:
                elapsed = callback.time_elapsed()
                progress = max(progress, elapsed / max(elapsed + callback.time_remaining(), 1e-9))
        return min(1.0, progress)

    @property
    def in_stage_two(self) -> bool:
        """Whether the current epoch trains with the stage-two loss weights."""
        if self._trainer is None:
            return False
        start = self.hparams.get("stage_two_start")
        if start is None:
            start = self._stage_two_from
        return start is not None and self.trainer.current_epoch >= start

    @property
    def active_loss(self) -> PotentialLoss:
        """The loss of the current stage (training and validation)."""
        return self.stage_two_loss_fn if self.in_stage_two else self.loss_fn

    def on_train_epoch_start(self) -> None:
        """At the first epoch of stage two, restart the best-checkpoint and early-stopping records."""
        fraction = self.hparams.get("stage_two_fraction")
        if fraction is not None and self._stage_two_from is None and self.run_progress >= fraction:
            self._stage_two_from = self.trainer.current_epoch
            rank_zero_info(f"stage two from epoch {self._stage_two_from} ({100 * self.run_progress:.0f} % of the run)")
        start = self.hparams.get("stage_two_start")
        if (self._stage_two_from if start is None else start) != self.trainer.current_epoch:
            return
        for callback in self.trainer.callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.monitor is not None:
                worst = torch.tensor(math.inf if callback.mode == "min" else -math.inf)
                # Keep the paths: the next best overwrites best.ckpt instead of writing best-v1.ckpt.
                callback.best_k_models = {path: worst for path in callback.best_k_models}
                callback.kth_value = worst
                callback.best_model_score = worst if callback.best_k_models else None
            elif isinstance(callback, EarlyStopping):
                callback.best_score = torch.tensor(math.inf if callback.mode == "min" else -math.inf)
                callback.wait_count = 0

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        """Loss of one training batch; logs ``train/loss_step``."""
        out = self.model(batch)
        losses = self.active_loss(out, batch)
        num_frames = int(batch[keys.NUM_ATOMS].numel())
        self.metrics["train_errors"].update(out, batch)
        self.losses["train_loss"].update(losses["loss"].detach(), num_frames)
        self.log("train/loss_step", losses["loss"], prog_bar=True, batch_size=num_frames)
        return losses["loss"]

    def on_train_batch_end(self, outputs: Any, batch: Batch, batch_idx: int) -> None:
        """Update the weight average after each optimizer step."""
        if self.ema is not None and self.trainer.global_step > int(self.ema.num_updates):
            self.ema.update(self.model)

    def on_train_batch_start(self, batch: Batch, batch_idx: int) -> None:
        """Linear warm-up of the learning rate (the cosine schedule has it built in)."""
        steps = self.hparams.warmup_steps
        if self.hparams.scheduler == "cosine" or steps <= 0 or self.trainer.global_step > steps:
            return
        factor = min(1.0, (self.trainer.global_step + 1) / steps)
        for optimizer in self.trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = group["initial_lr"] * factor

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        """Accumulate validation errors and loss (EMA weights)."""
        self._evaluate(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        """Accumulate test errors and loss; collect predictions when :attr:`predictions` is a dict."""
        out = self._evaluate(batch, "test")
        if self.predictions is not None:
            _collect(self.predictions, out, batch)

    def on_train_epoch_end(self) -> None:
        """Log the epoch's training metrics."""
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        """Log the epoch's validation metrics."""
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        """Log the test metrics."""
        self._log_epoch("test")

    def configure_optimizers(self) -> dict[str, Any]:
        """Adam or AdamW with the plateau, cosine or no schedule (see the class arguments)."""
        hp = self.hparams
        cls = torch.optim.AdamW if hp.optimizer == "adamw" else torch.optim.Adam
        trained = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = cls(trained, lr=hp.lr, weight_decay=hp.weight_decay, amsgrad=hp.amsgrad)
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", hp.lr)
        if hp.scheduler == "plateau":
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="min", factor=hp.lr_factor, patience=hp.lr_patience, min_lr=hp.min_lr
            )
            config = {"scheduler": scheduler, "monitor": hp.monitor, "interval": "epoch", "strict": False}
            return {"optimizer": optimizer, "lr_scheduler": config}
        if hp.scheduler == "cosine":
            timed = any(isinstance(c, Timer) and c.time_remaining() is not None for c in self.trainer.callbacks)
            if not math.isfinite(self.trainer.estimated_stepping_batches) and not timed:
                raise ValueError("the cosine schedule needs trainer.max_epochs, trainer.max_steps or trainer.max_time")
            floor = hp.min_lr / hp.lr

            def factor(step: int) -> float:
                warm = min(1.0, (step + 1) / hp.warmup_steps) if hp.warmup_steps > 0 else 1.0
                progress = self.run_progress
                return warm * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress)))

            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
        return {"optimizer": optimizer}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record units and the model config beside the weights (plain data only)."""
        from gnnpot import __version__

        checkpoint["gnnpot"] = {
            "gnnpot_version": __version__,
            "units": dict(keys.UNITS),
            "model_config": plain_data(self.inference_model.config),
            "ema": self.ema is not None,
            "training_data_sha256": self.training_data_sha256,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the training-data hash recorded with the checkpoint."""
        self.training_data_sha256 = checkpoint.get("gnnpot", {}).get("training_data_sha256")

    # --- internals -----------------------------------------------------------------------------

    def _evaluate(self, batch: Batch, stage: str) -> dict[str, Tensor]:
        if torch.is_inference_mode_enabled():
            raise RuntimeError("forces need autograd: run the Trainer with inference_mode=False")
        model = self.inference_model
        # Validation and testing run eagerly: a compiled inference graph costs 40-80 s to build
        # (ethanol MACE) and saves ~0.2 s per 50-frame validation pass, which a run never repays.
        compiled = getattr(model, "compiled", False)
        if compiled:
            model.compiled = False
        try:
            out = model(batch)
        finally:
            if compiled:
                model.compiled = True
        losses = self.active_loss(out, batch)
        self.metrics[f"{stage}_errors"].update(out, batch)
        self.losses[f"{stage}_loss"].update(losses["loss"].detach(), int(batch[keys.NUM_ATOMS].numel()))
        return out

    def _log_epoch(self, stage: str) -> None:
        values = self.metrics[f"{stage}_errors"].compute()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*was called before the ``update``")
            loss = float(self.losses[f"{stage}_loss"].compute())
        self.metrics[f"{stage}_errors"].reset()
        self.losses[f"{stage}_loss"].reset()
        shown = {"forces_mae", "energy_per_atom_mae"}
        # The values are already reduced over every process (sums and counts), so they are equal on
        # all of them; sync_dist=True only averages equal numbers (and keeps Lightning quiet).
        if math.isfinite(loss):
            self.log(f"{stage}/loss", loss, prog_bar=stage == "val", sync_dist=True)
        for name, value in values.items():
            self.log(f"{stage}/{name}", value, prog_bar=stage == "val" and name in shown, sync_dist=True)


def _source_config(
    source: str, representation: str, representation_hparams: Mapping[str, Any] | None, cutoff: float
) -> dict[str, Any]:
    """The config of the ``init_from`` model, checked against what the training config asks for.

    The architecture comes from the source. A config that names another family, other values of
    the hyperparameters it gives, or another cutoff (the data's, through ``data.cutoff``) is an
    error rather than silently overridden; the default family (``painn``) counts as not given.
    """
    config = load_model(source).config
    family = config["representation"]
    if representation not in (family, "painn"):
        raise ValueError(f"init_from {source} is a {family!r} model, but the config asks for {representation!r}")
    given = dict(representation_hparams or {})
    if representation == "painn" and family != "painn":
        given = {}
    model_hparams = config["hparams"]
    clash = {k: (v, model_hparams.get(k)) for k, v in given.items() if v not in ("auto", model_hparams.get(k))}
    if clash:
        detail = ", ".join(f"{k}: config {a!r}, model {b!r}" for k, (a, b) in clash.items())
        raise ValueError(f"init_from {source}: its hyperparameters differ from the config's ({detail})")
    if not math.isclose(float(cutoff), float(config["cutoff"])):
        raise ValueError(
            f"init_from {source} has cutoff {config['cutoff']} Å, the data's is {cutoff} Å: "
            f"set --data.cutoff {config['cutoff']}"
        )
    return config


def _unresolved_statistics(representation: str, hparams: Mapping[str, Any]) -> list[str]:
    """The family's data statistics still to compute: absent from ``hparams`` or ``"auto"``."""
    return [name for name in get_family(representation).data_statistics if hparams.get(name, "auto") == "auto"]


def _collect(store: dict[str, list[np.ndarray]], out: dict[str, Tensor], batch: Batch) -> None:
    """Append per-atom energies and force components (predicted and reference) of labelled frames."""
    natoms = batch[keys.NUM_ATOMS].to(out[keys.ENERGY].dtype)
    mask = batch[keys.ENERGY_WEIGHT] > 0
    store.setdefault("energy_pred", []).append((out[keys.ENERGY].detach() / natoms)[mask].cpu().double().numpy())
    store.setdefault("energy_ref", []).append((batch[keys.ENERGY] / natoms)[mask].cpu().double().numpy())
    atom_mask = (batch[keys.FORCES_WEIGHT] > 0)[batch[keys.BATCH]]
    store.setdefault("forces_pred", []).append(out[keys.FORCES].detach()[atom_mask].reshape(-1).cpu().double().numpy())
    store.setdefault("forces_ref", []).append(batch[keys.FORCES][atom_mask].reshape(-1).cpu().double().numpy())
