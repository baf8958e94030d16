"""``GNNPotCalculator``: one gnnpot model, or a committee of them, as an ASE calculator."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from gnnpot import keys
from gnnpot.data import AtomicData, SkinNeighborList
from gnnpot.models import ForceField, clone_model, load_model

_DTYPES = {"float32": torch.float32, "float64": torch.float64}

ModelLike = ForceField | str | Path


class GNNPotCalculator(Calculator):
    """Energy, free energy, forces, stress (periodic cells) and per-atom energies.

    Given several models (a committee), the results are their means, plus ``energy_std`` (eV),
    ``forces_std`` ([N] eV/Å: per atom, the root-mean-square deviation of the members' force
    vectors from the mean) and ``stress_std`` (Voigt [6], eV/Å³), each the spread over the members.

    The neighbour list is kept between calls and rebuilt only when an atom has moved more than
    ``skin / 2`` or the cell changed (:class:`~gnnpot.data.SkinNeighborList`); the results are the
    same as with a fresh list at every call.

    Args:
        model: a :class:`ForceField`, a model file, a Lightning checkpoint, a run folder, a
            pretrained name (``gnnpot.list_pretrained()``), or a sequence of these (a committee).
            The calculator works on its own frozen copies, so the caller's models are left alone.
        dtype: ``"float32"``, ``"float64"`` or a torch dtype; default: the (first) model's own.
        device: torch device to run on.
        skin: extra neighbour-list radius, Å; 0 rebuilds the list at every call.
        compile: run the compiled path (:meth:`ForceField.enable_compile`): the first call
            compiles (seconds to a minute), later calls are faster. Default: as the (first) given
            :class:`ForceField` is set, off for models read from files.
    """

    implemented_properties = [
        "energy",
        "free_energy",
        "forces",
        "stress",
        "energies",
        "energy_std",
        "forces_std",
        "stress_std",
    ]

    def __init__(
        self,
        model: ModelLike | Sequence[ModelLike],
        dtype: str | torch.dtype | None = None,
        device: str | torch.device = "cpu",
        skin: float = 0.5,
        compile: bool | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(dtype, str):
            if dtype not in _DTYPES:
                raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
            dtype = _DTYPES[dtype]
        self.device = torch.device(device)
        members = list(model) if isinstance(model, Sequence) and not isinstance(model, str) else [model]
        if not members:
            raise ValueError("give at least one model")
        # The calculator keeps its own copies, frozen: forces need gradients for positions only.
        if compile is None:
            compile = isinstance(members[0], ForceField) and members[0].compiled
        members = [load_model(m) if isinstance(m, (str, Path)) else clone_model(m) for m in members]
        members = [m.enable_compile(compile) for m in members]
        self.dtype = dtype or next(members[0].parameters()).dtype
        self.models = [m.to(device=self.device, dtype=self.dtype).eval().requires_grad_(False) for m in members]
        cutoffs = {m.cutoff for m in self.models}
        elements = {tuple(m.elements) for m in self.models}
        if len(cutoffs) > 1 or len(elements) > 1:
            raise ValueError(
                f"committee members must share cutoff and elements, got cutoffs {sorted(cutoffs)} "
                f"and elements {sorted(elements)}"
            )
        self.cutoff = self.models[0].cutoff
        self.elements = self.models[0].elements
        self.neighbors = SkinNeighborList(self.cutoff, skin=skin)

    @property
    def model(self) -> ForceField:
        """The model (the first member of a committee)."""
        return self.models[0]

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: list[str] | None = None,
        system_changes: list[str] = all_changes,
    ) -> None:
        """Compute the results of ``atoms`` (see the class docstring for the properties)."""
        super().calculate(atoms, properties or ["energy"], system_changes)
        data = self._graph(self.atoms)
        outputs = [model(data) for model in self.models]
        energy = torch.stack([out[keys.ENERGY].detach()[0] for out in outputs]).cpu().double().numpy()
        forces = torch.stack([out[keys.FORCES].detach() for out in outputs]).cpu().double().numpy()
        energies = torch.stack([out[keys.ATOMIC_ENERGY].detach() for out in outputs]).cpu().double().numpy()
        self.results = {
            "energy": float(energy.mean()),
            "free_energy": float(energy.mean()),
            "forces": forces.mean(axis=0),
            "energies": energies.mean(axis=0),
        }
        committee = len(self.models) > 1
        if committee:
            self.results["energy_std"] = float(energy.std())
            deviation = forces - forces.mean(axis=0)
            self.results["forces_std"] = np.sqrt(np.mean(np.sum(deviation**2, axis=-1), axis=0))
        if self.atoms.pbc.all():
            stress = np.stack(
                [full_3x3_to_voigt_6_stress(out[keys.STRESS][0].detach().cpu().double().numpy()) for out in outputs]
            )
            self.results["stress"] = stress.mean(axis=0)
            if committee:
                self.results["stress_std"] = stress.std(axis=0)
        elif "stress" in (properties or []):
            raise PropertyNotImplementedError("stress needs a cell that is periodic in all three directions")

    @property
    def min_distance(self) -> float:
        """Shortest interatomic distance within the cutoff at the last call, Å."""
        return self.neighbors.min_distance

    def _graph(self, atoms: Atoms) -> AtomicData:
        """The graph of ``atoms`` on the kept neighbour list, checked like any input (NaN, overlaps).

        Elements the model does not know are refused by the model call (``Potential.species``).
        Positions stay float64: the model centres each frame before casting to its own dtype, so
        structures far from the origin keep their bond lengths (see ``centred_positions``).
        """
        data = AtomicData.from_atoms(
            atoms, self.cutoff, source="GNNPotCalculator", dtype=torch.float64, neighbors=self.neighbors
        )
        return data.to(self.device)
