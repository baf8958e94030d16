"""``GNNPotCalculator``: one gnnpot model, or a committee of them, as an ASE calculator."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.data import chemical_symbols
from ase.stress import full_3x3_to_voigt_6_stress

from gnnpot import keys
from gnnpot.data import AtomicData, SkinNeighborList
from gnnpot.data.checks import MIN_DISTANCE, check_cell, check_min_distance, check_positions
from gnnpot.data.device_neighbors import DeviceNeighborList
from gnnpot.data.ordering import morton_order
from gnnpot.launch import reuse_large_blocks
from gnnpot.models import ForceField, clone_model, load_model

_DTYPES = {"float32": torch.float32, "float64": torch.float64}

ModelLike = ForceField | str | Path
SORT_MIN_ATOMS = 1000  # below this the feature arrays fit in the caches in any order
SORT_EVERY = 1000  # calls between re-sorts while atoms diffuse (LAMMPS's atom_modify sort default)


class GNNPotCalculator(Calculator):
    """Energy, free energy, forces, stress (periodic cells) and per-atom energies.

    Given several models (a committee), the results are their means, plus ``energy_std`` (eV),
    ``forces_std`` ([N] eV/Å: per atom, the root-mean-square deviation of the members' force
    vectors from the mean) and ``stress_std`` (Voigt [6], eV/Å³), each the spread over the members.

    The neighbour list is kept between calls and rebuilt only when an atom has moved more than
    ``skin / 2`` or the cell changed (:class:`~gnnpot.data.SkinNeighborList`); the results are the
    same as with a fresh list at every call.

    Device-resident (``resident``, the default off the CPU): the neighbour list, its skin check and
    the graph live on the model's device (:class:`~gnnpot.data.device_neighbors.DeviceNeighborList`,
    vesin-torch); a call copies the positions in and one flat tensor of results out. Elements, cell
    and periodicity are checked on the host, where ASE holds them, and passed to the model as facts,
    so it reads nothing back; the one read left is the shortest distance, for the overlap check.

    From :data:`~gnnpot.launch.LARGE_SYSTEM` atoms on, the first call switches the process's glibc
    allocator to keep large blocks for the next step (:func:`gnnpot.launch.reuse_large_blocks`;
    ``GNNPOT_MALLOC=system`` keeps glibc's default).

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
        resident: build the neighbour list and graph on ``device`` (see above); default: when
            ``device`` is not the CPU. Models with a long-range or dispersion term use the host path.
        sort_atoms: on the host path, give the model the atoms in Z-order (:mod:`gnnpot.data.ordering`),
            re-sorted every ``SORT_EVERY`` calls, so that neighbours sit close in memory; results come
            back in the caller's order. Default: for ``SORT_MIN_ATOMS`` atoms or more.
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
        resident: bool | None = None,
        sort_atoms: bool | None = None,
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
        if resident is None:
            resident = self.device.type != "cpu"
        # long-range and dispersion terms build their own pair lists on the host
        self.resident = bool(resident) and not any(m.potential.direct_geometry for m in self._force_fields())
        self.device_neighbors = DeviceNeighborList(self.cutoff, skin=skin) if self.resident else None
        self._device_z: tuple[np.ndarray, torch.Tensor] | None = None
        self.sort_atoms = sort_atoms
        self._order: np.ndarray | None = None  # the sorted order and its inverse, kept between re-sorts
        self._inverse: np.ndarray | None = None
        self._sorted_calls = 0

    def _force_fields(self) -> list[ForceField]:
        """The members that are :class:`ForceField` (a Coulomb-KRR model is not)."""
        return [m for m in self.models if isinstance(m, ForceField)]

    def enable_compile(self, enabled: bool = True) -> GNNPotCalculator:
        """Switch every member to the compiled path (or back); the next call compiles (seconds to minutes)."""
        self.models = [m.enable_compile(enabled) for m in self.models]
        return self

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
        reuse_large_blocks(len(self.atoms))
        order = None if self.resident else self._sort_order(self.atoms)
        if self.resident:
            data = self._device_graph(self.atoms)
        else:
            try:
                data = self._graph(self.atoms if order is None else self.atoms[order])
            except ValueError:
                if order is not None:  # the same checks in the caller's order name the caller's atoms
                    self._order = None
                    self._graph(self.atoms)
                raise
        outputs = [model(data) for model in self.models]
        energy, forces, energies, stresses = _to_host(outputs, len(self.atoms))
        if order is not None:
            forces, energies = forces[:, self._inverse], energies[:, self._inverse]
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
            stress = np.stack([full_3x3_to_voigt_6_stress(s) for s in stresses])
            self.results["stress"] = stress.mean(axis=0)
            if committee:
                self.results["stress_std"] = stress.std(axis=0)
        elif "stress" in (properties or []):
            raise PropertyNotImplementedError("stress needs a cell that is periodic in all three directions")

    def _sort_order(self, atoms: Atoms) -> np.ndarray | None:
        """The Z-order the model sees ``atoms`` in (``None``: as given), kept for ``SORT_EVERY`` calls."""
        wanted = self.sort_atoms if self.sort_atoms is not None else len(atoms) >= SORT_MIN_ATOMS
        if not wanted:
            self._order = None
            return None
        if self._order is None or len(self._order) != len(atoms) or self._sorted_calls % SORT_EVERY == 0:
            self._order = morton_order(atoms)
            self._inverse = np.argsort(self._order)
            self._sorted_calls = 0
        self._sorted_calls += 1
        return self._order

    @property
    def min_distance(self) -> float:
        """Shortest interatomic distance within the cutoff at the last call, Å."""
        if self.resident:
            return self._min_distance
        return self.neighbors.min_distance

    def _device_graph(self, atoms: Atoms) -> AtomicData:
        """The graph of ``atoms`` built on the device (see the class docstring), checked like any input.

        No charges: only long-range terms read them, and models with one use the host path.
        """
        where = "GNNPotCalculator, frame 0"
        positions = np.asarray(atoms.positions, dtype=np.float64)
        cell, pbc = np.asarray(atoms.cell.array, dtype=np.float64), np.asarray(atoms.pbc, dtype=bool)
        check_positions(positions, where)
        check_cell(cell, pbc, where)
        numbers = np.asarray(atoms.numbers)
        if self._device_z is None or not np.array_equal(self._device_z[0], numbers):
            unknown = sorted(set(numbers.tolist()) - set(self.elements))
            if unknown:
                known = [chemical_symbols[z] for z in self.elements]
                raise ValueError(f"model knows elements {known}, got unknown element(s) "
                                 f"{[chemical_symbols[z] for z in unknown]}")  # fmt: skip
            self._device_z = (numbers.copy(), torch.as_tensor(numbers, dtype=torch.long).to(self.device))
        pos = torch.as_tensor(positions).to(self.device)  # the one copy in
        edge_index, edge_shift, distances = self.device_neighbors.update(pos, cell, pbc)
        self._min_distance = float(distances.min()) if distances.numel() else float("inf")  # the one read back
        if self._min_distance < MIN_DISTANCE:
            k = int(torch.argmin(distances))
            i, j = edge_index[:, k].tolist()
            check_min_distance(np.array([i]), np.array([j]), np.array([self._min_distance]), where)
        _, periodic = self.device_neighbors.box(cell, pbc, pos)  # kept on the device with the cell
        data = AtomicData(
            z=self._device_z[1],
            pos=pos,
            cell=torch.as_tensor(cell).to(self.device).unsqueeze(0),
            pbc=periodic.unsqueeze(0),
            natoms=torch.tensor([len(atoms)], device=self.device),
            edge_index=edge_index,
            edge_shift=edge_shift,
            num_nodes=len(atoms),
        )
        data[keys.PAIRED_EDGES] = True
        data[keys.ELEMENTS_CHECKED] = True
        data[keys.ANY_PERIODIC] = bool(pbc.any())
        return data

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


def _to_host(
    outputs: Sequence[dict[str, torch.Tensor]], num_atoms: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
    """Energies [M], forces [M, N, 3], per-atom energies [M, N] and stresses (M of [3, 3]) of M members.

    One flat float64 tensor is copied to the host (one transfer from a GPU), then split.
    """
    parts = []
    for out in outputs:
        parts += [out[keys.ENERGY][:1], out[keys.FORCES].reshape(-1), out[keys.ATOMIC_ENERGY]]
        if keys.STRESS in out:
            parts.append(out[keys.STRESS][0].reshape(-1))
    flat = torch.cat([p.detach().to(torch.float64) for p in parts]).cpu().numpy()
    energy, forces, energies, stresses, at = [], [], [], [], 0
    for out in outputs:
        energy.append(flat[at])
        forces.append(flat[at + 1 : at + 1 + 3 * num_atoms].reshape(num_atoms, 3))
        energies.append(flat[at + 1 + 3 * num_atoms : at + 1 + 4 * num_atoms])
        at += 1 + 4 * num_atoms
        if keys.STRESS in out:
            stresses.append(flat[at : at + 9].reshape(3, 3))
            at += 9
    return np.array(energy), np.stack(forces), np.stack(energies), stresses
