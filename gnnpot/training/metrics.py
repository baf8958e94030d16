"""Error metrics in meV that reduce exactly across processes.

Each :class:`ErrorMetric` keeps the sums of absolute and squared errors and the count of labelled
values (torchmetrics states with ``dist_reduce_fx="sum"``), so under DDP the MAE and RMSE are
those of the whole split, never averages of per-process averages.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch
from torchmetrics import Metric

from gnnpot import keys

# Metric name -> unit; values are in meV.
METRIC_UNITS = {
    "energy_per_atom_mae": "meV/atom",
    "energy_per_atom_rmse": "meV/atom",
    "energy_mae": "meV",
    "energy_rmse": "meV",
    "forces_mae": "meV/Å",
    "forces_rmse": "meV/Å",
    "stress_mae": "meV/Å³",
    "stress_rmse": "meV/Å³",
}


class ErrorMetric(Metric):
    """Sum of absolute errors, sum of squared errors and count; ``compute()`` gives MAE and RMSE."""

    full_state_update = False

    def __init__(self, sync_on_compute: bool = True) -> None:
        super().__init__(sync_on_compute=sync_on_compute)
        self.add_state("abs_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("sq_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, error: Tensor) -> None:  # type: ignore[override]
        """Add errors (any shape); each element counts once."""
        error = error.detach().to(torch.float64)
        self.abs_sum += error.abs().sum()
        self.sq_sum += error.square().sum()
        self.count += error.numel()

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        """Mean absolute and root-mean-square error, and the count of values."""
        count = self.count.clamp(min=1).to(torch.float64)
        return {"mae": self.abs_sum / count, "rmse": (self.sq_sum / count).sqrt(), "count": self.count}


class PotentialMetrics(nn.Module):
    """Energy (per atom and per structure), force and stress errors of one split, in meV.

    Only labelled frames count (their loss weight is > 0). A quantity with no label in the whole
    split is left out of :meth:`compute`.

    Args:
        sync: reduce across processes in :meth:`compute` (a collective call); ``False`` for a
            single process evaluating on its own, e.g. process 0 plotting at the end of a run.
    """

    def __init__(self, sync: bool = True) -> None:
        super().__init__()
        self.errors = nn.ModuleDict(
            {name: ErrorMetric(sync_on_compute=sync) for name in ("energy_per_atom", "energy", "forces", "stress")}
        )

    @torch.no_grad()
    def update(self, out: dict[str, Tensor], batch: Batch) -> None:
        """Add the errors of one batch (frames without a label are skipped for that quantity)."""
        natoms = batch[keys.NUM_ATOMS]
        mask = batch[keys.ENERGY_WEIGHT] > 0
        error = (out[keys.ENERGY].detach() - batch[keys.ENERGY].to(out[keys.ENERGY].dtype))[mask] * 1000.0
        self.errors["energy"].update(error)
        self.errors["energy_per_atom"].update(error / natoms[mask])
        atom_mask = (batch[keys.FORCES_WEIGHT] > 0)[batch[keys.BATCH]]
        dtype = out[keys.FORCES].dtype  # labels are float64 (see build_graphs); errors in the model's dtype
        self.errors["forces"].update((out[keys.FORCES].detach() - batch[keys.FORCES].to(dtype))[atom_mask] * 1000.0)
        if keys.STRESS in out and keys.STRESS in batch:
            mask = batch[keys.STRESS_WEIGHT] > 0
            error = out[keys.STRESS].detach() - batch[keys.STRESS].to(dtype)
            self.errors["stress"].update(error[mask] * 1000.0)

    def compute(self) -> dict[str, float]:
        """``{"forces_mae": ..., ...}`` in meV units (see :data:`METRIC_UNITS`); synced across processes."""
        result = {}
        for name, metric in self.errors.items():
            with warnings.catch_warnings():  # a quantity never labelled is simply left out
                warnings.filterwarnings("ignore", message=".*was called before the ``update``")
                values = metric.compute()
            if int(values["count"]) > 0:
                result[f"{name}_mae"] = float(values["mae"])
                result[f"{name}_rmse"] = float(values["rmse"])
        return result

    def reset(self) -> None:
        """Forget everything accumulated."""
        for metric in self.errors.values():
            metric.reset()
