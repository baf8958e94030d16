"""``PlotCallback``: parity plots and learning curves at the end of fit and test, in the run folder."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, WandbLogger

from gnnpot.training.evaluate import predict
from gnnpot.training.module import PotentialModule
from gnnpot.training.plots import learning_curves, parity_plot


class PlotCallback(L.Callback):
    """Writes ``parity_val.png`` and ``learning_curves.png`` after fit and ``parity_test.png`` after test.

    The files go to the trainer's ``log_dir`` (the run folder); with a wandb logger they are also
    logged as images. Only process 0 plots; the test parity plot shows that process's share of the
    test set (all of it on one device). At the end it prints where the plots and checkpoints are.
    """

    def on_fit_end(self, trainer: L.Trainer, pl_module: PotentialModule) -> None:
        """Write the learning curves and the validation parity plot."""
        run_dir = Path(trainer.log_dir or trainer.default_root_dir)  # a collective call under DDP: every process
        if not trainer.is_global_zero:
            return
        images = {}
        loader = trainer.datamodule.val_dataloader() if trainer.datamodule is not None else None
        if loader:
            _, predictions = predict(pl_module.inference_model, loader)
            if len(predictions.get("energy_ref", [])) or len(predictions.get("forces_ref", [])):
                images["parity_val"] = parity_plot(predictions, run_dir / "parity_val.png", "val")
        for logger in trainer.loggers:
            if isinstance(logger, CSVLogger):
                logger.save()
                metrics_csv = Path(logger.log_dir) / "metrics.csv"
                if metrics_csv.exists():
                    curves = learning_curves(metrics_csv, run_dir / "learning_curves.png")
                    if curves is not None:
                        images["learning_curves"] = curves
                break
        _log_images(trainer, images)
        lines = [f"run folder: {run_dir}"]
        lines += [f"plot: {path}" for path in images.values()]
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint):
                if callback.best_model_path:
                    lines.append(f"best checkpoint: {callback.best_model_path}")
                if callback.last_model_path:
                    lines.append(f"last checkpoint: {callback.last_model_path}")
        print("\n".join(lines), flush=True)

    def on_test_start(self, trainer: L.Trainer, pl_module: PotentialModule) -> None:
        """Ask the module to collect test predictions."""
        pl_module.predictions = {}

    def on_test_end(self, trainer: L.Trainer, pl_module: PotentialModule) -> None:
        """Write the test parity plot."""
        store, pl_module.predictions = pl_module.predictions or {}, None
        run_dir = Path(trainer.log_dir or trainer.default_root_dir)  # a collective call under DDP: every process
        if not trainer.is_global_zero or not store:
            return
        predictions = {key: np.concatenate(values) for key, values in store.items()}
        path = parity_plot(predictions, run_dir / "parity_test.png", "test")
        _log_images(trainer, {"parity_test": path})
        print(f"plot: {path}", flush=True)


def _log_images(trainer: L.Trainer, images: dict[str, Path]) -> None:
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger) and images:
            logger.log_image(key="plots", images=[str(p) for p in images.values()], caption=list(images))
