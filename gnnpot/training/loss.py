"""The training loss: weighted energy-per-atom, force and stress terms, each masked by label weights.

``loss = w_E * L(E / N_atoms) + w_F * L(F) + w_S * L(stress)`` with ``L`` the mean squared error
(default) or the Huber loss. Every term is a weighted mean over the labelled frames (energy,
stress) or atoms (forces): a frame whose label is missing has weight 0 (and a NaN label, see
:mod:`gnnpot.keys`), so it drops out of that term instead of poisoning it.

Default weights, energy : forces : stress = 1 : 100 : 100, in eV/atom, eV/Å and eV/Å³:
    * forces carry 3N numbers per frame against one energy, and fix the shape of the energy
      surface; MACE trains rMD17 with energy 1 : forces 100 on the per-atom energy (NequIP uses
      1 : 1 on per-atom energy with force-heavy totals: both are force-heavy), so we follow MACE;
    * stress times the volume per atom (about 12 Å³ in metals) is an energy per atom, so an error
      in stress weighs like (V/N)² ~ 100 times the same number in eV/atom: 100 puts the stress
      term on the footing of the energy term.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Batch

from gnnpot import keys

LossKind = Literal["mse", "huber"]


class PotentialLoss(nn.Module):
    """Weighted, masked energy/force/stress loss.

    Args:
        energy_weight: weight of the per-atom energy term (eV/atom)².
        forces_weight: weight of the force term (eV/Å)².
        stress_weight: weight of the stress term (eV/Å³)², used when the batch has stress labels.
        kind: ``"mse"`` or ``"huber"``.
        huber_delta: where the Huber loss turns from quadratic to linear, in the unit of each term.
    """

    def __init__(
        self,
        energy_weight: float = 1.0,
        forces_weight: float = 100.0,
        stress_weight: float = 100.0,
        kind: LossKind = "mse",
        huber_delta: float = 0.01,
    ) -> None:
        super().__init__()
        if kind not in ("mse", "huber"):
            raise ValueError(f"loss kind must be 'mse' or 'huber', got {kind!r}")
        weights = {keys.ENERGY: energy_weight, keys.FORCES: forces_weight, keys.STRESS: stress_weight}
        for name, value in weights.items():
            if not value >= 0:
                raise ValueError(f"{name}_weight must be >= 0, got {value!r}")
        if not huber_delta > 0:
            raise ValueError(f"huber_delta must be > 0, got {huber_delta!r}")
        self.weights = {name: float(value) for name, value in weights.items()}
        self.kind = kind
        self.huber_delta = float(huber_delta)

    def _elementwise(self, pred: Tensor, ref: Tensor) -> Tensor:
        if self.kind == "huber":
            return F.huber_loss(pred, ref, reduction="none", delta=self.huber_delta)
        return (pred - ref).square()

    def forward(self, out: dict[str, Tensor], batch: Batch) -> dict[str, Tensor]:
        """Returns ``{"loss": total, "energy": term, "forces": term, "stress": term}`` (unweighted terms).

        A term with no labelled frame in the batch is 0 and contributes nothing.
        """
        natoms = batch[keys.NUM_ATOMS].to(out[keys.ENERGY].dtype)
        terms: dict[str, Tensor] = {}
        # energy per atom [B]
        weight = batch[keys.ENERGY_WEIGHT].to(natoms.dtype)
        ref = torch.nan_to_num(batch[keys.ENERGY].to(natoms.dtype)) / natoms
        terms[keys.ENERGY] = _weighted_mean(self._elementwise(out[keys.ENERGY] / natoms, ref), weight)
        # forces [N, 3]; each atom weighs as its frame
        weight = batch[keys.FORCES_WEIGHT].to(natoms.dtype)[batch[keys.BATCH]]
        ref = torch.nan_to_num(batch[keys.FORCES].to(natoms.dtype))
        terms[keys.FORCES] = _weighted_mean(self._elementwise(out[keys.FORCES], ref).mean(dim=1), weight)
        # stress [B, 3, 3]
        if keys.STRESS in out and keys.STRESS in batch:
            weight = batch[keys.STRESS_WEIGHT].to(natoms.dtype)
            ref = torch.nan_to_num(batch[keys.STRESS].to(natoms.dtype))
            terms[keys.STRESS] = _weighted_mean(self._elementwise(out[keys.STRESS], ref).mean(dim=(1, 2)), weight)
        else:
            terms[keys.STRESS] = out[keys.ENERGY].new_zeros(())
        total = sum(self.weights[name] * value for name, value in terms.items())
        return {"loss": total, **terms}

    def extra_repr(self) -> str:
        """Weights and kind, for ``repr``."""
        return f"kind={self.kind!r}, weights={self.weights}" + (
            f", huber_delta={self.huber_delta}" if self.kind == "huber" else ""
        )


def _weighted_mean(values: Tensor, weight: Tensor) -> Tensor:
    """``sum(w * v) / sum(w)`` over the first dimension, 0 when every weight is 0.

    Masked entries are replaced by 0 before the product, so NaN labels never reach the gradient.
    """
    mask = weight > 0
    values = torch.where(mask, values, torch.zeros_like(values))
    total = weight.sum()
    return (weight * values).sum() / total.clamp(min=torch.finfo(values.dtype).tiny) * (total > 0)
