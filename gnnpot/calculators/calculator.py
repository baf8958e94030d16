"""``GNNPotCalculator``: any gnnpot model as an ASE calculator."""

from __future__ import annotations

import copy

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.data import chemical_symbols

from gnnpot import keys
from gnnpot.data import AtomicData
from gnnpot.models import ForceField

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class GNNPotCalculator(Calculator):
    """Energy, free energy, forces, stress (periodic cells) and per-atom energies.

    Args:
        model: a :class:`ForceField`, e.g. from :func:`gnnpot.build_model`. It is copied when
            ``dtype`` or ``device`` differ from its own, so the caller's model is left as it was.
        dtype: ``"float32"``, ``"float64"`` or a torch dtype; default is the model's own.
        device: torch device to run on.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies"]

    def __init__(
        self,
        model: ForceField,
        dtype: str | torch.dtype | None = None,
        device: str | torch.device = "cpu",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        dtype = _DTYPES.get(dtype, dtype) if isinstance(dtype, str) else dtype
        if isinstance(dtype, str):
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        own_dtype = next(model.parameters()).dtype
        self.dtype = dtype or own_dtype
        self.device = torch.device(device)
        if self.dtype != own_dtype or next(model.parameters()).device != self.device:
            model = copy.deepcopy(model).to(device=self.device, dtype=self.dtype)
        self.model = model.eval()

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: list[str] | None = None,
        system_changes: list[str] = all_changes,
    ) -> None:
        super().calculate(atoms, properties or ["energy"], system_changes)
        atoms = self.atoms
        known = set(self.model.elements)
        unknown = sorted({int(z) for z in atoms.numbers} - known)
        if unknown:
            raise ValueError(
                f"model knows elements {[chemical_symbols[z] for z in sorted(known)]}, "
                f"got unknown element(s) {[chemical_symbols[z] for z in unknown]}"
            )
        data = AtomicData.from_atoms(atoms, self.model.cutoff, source="GNNPotCalculator", dtype=self.dtype)
        out = self.model(data.to(self.device))
        energy = float(out[keys.ENERGY].detach()[0])
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": out[keys.FORCES].detach().cpu().double().numpy(),
            "energies": out[keys.ATOMIC_ENERGY].detach().cpu().double().numpy(),
        }
        if atoms.pbc.all():
            stress = out[keys.STRESS].detach().cpu().double().numpy()[0]
            self.results["stress"] = _matrix_to_voigt(stress)
        elif "stress" in (properties or []):
            raise PropertyNotImplementedError("stress needs a cell that is periodic in all three directions")


def _matrix_to_voigt(matrix: np.ndarray) -> np.ndarray:
    """3x3 to ASE's Voigt order (xx, yy, zz, yz, xz, xy)."""
    return np.array(
        [matrix[0, 0], matrix[1, 1], matrix[2, 2], matrix[1, 2], matrix[0, 2], matrix[0, 1]]
    )
