"""``AtomicData``: one structure as a PyG graph, and its conversion from and to ``ase.Atoms``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from torch_geometric.data import Data

from gnnpot import keys
from gnnpot.data.checks import MIN_DISTANCE, DataError, check_cell, check_labels, check_min_distance, check_positions
from gnnpot.data.neighbors import SkinNeighborList, neighbor_list_arrays

# DataError and MIN_DISTANCE live in checks.py; importing them from here still works.
__all__ = ["MIN_DISTANCE", "AtomicData", "DataError"]


class AtomicData(Data):
    """A structure as a PyG graph. Field names and shapes are in :mod:`gnnpot.keys`.

    Per-frame fields (``cell``, ``pbc``, ``total_charge``, ``energy``, ``stress``, weights) carry a
    leading dimension of 1, so that PyG's batching concatenates them into ``[num_frames, ...]``.
    Triplet indices point into edges, so batching offsets them by the number of edges.

    Charges, for a long-range head (:mod:`gnnpot.nn.long_range`): every graph has the frame's net
    charge ``total_charge`` (e; ``atoms.info["charge"]`` or ``["total_charge"]``, else the sum of
    ``initial_charges`` as ASE's xtb and tblite calculators read it, else 0), so that
    charged and neutral frames batch together. Per-atom ``charges`` (e) are stored only when the
    atoms have ASE's ``initial_charges`` array; a batch mixes frames that all have them or none.
    """

    def __inc__(self, key: str, value: Any, *args: Any, **kwargs: Any) -> Any:
        if key in (keys.TRIPLET_KJ, keys.TRIPLET_JI):
            return self[keys.EDGE_INDEX].size(1)
        return super().__inc__(key, value, *args, **kwargs)

    @classmethod
    def from_atoms(
        cls,
        atoms: Atoms,
        cutoff: float,
        labels: Mapping[str, Any] | None = None,
        weights: Mapping[str, float] | None = None,
        source: str = "<atoms>",
        frame_id: int = 0,
        dtype: torch.dtype | None = None,
        neighbors: SkinNeighborList | None = None,
    ) -> AtomicData:
        """Build the graph of ``atoms`` with every neighbour within ``cutoff``.

        Args:
            atoms: the structure; positions in Å.
            cutoff: neighbour-list radius, Å.
            labels: ``{"energy": float, "forces": [N, 3], "stress": [3, 3] or Voigt [6]}`` in eV
                units, checked by :func:`~gnnpot.data.checks.check_labels`. ``None`` makes an
                unlabelled graph (inference). A label missing from the mapping (or ``None``) is
                stored as NaN with loss weight 0, so batches of partly labelled frames stay
                uniform and the loss masks them.
            weights: per-frame loss weights by label name, default 1 for present labels.
            source: file name used in error messages.
            frame_id: frame index used in error messages and stored with the data.
            dtype: float dtype of positions, cell and labels; default ``torch.get_default_dtype()``.
            neighbors: a neighbour list kept between calls (MD), used instead of a fresh one; its
                cutoff is the one that counts.

        Raises:
            DataError: NaN/inf, overlapping atoms, a degenerate periodic cell, a cutoff that is not
                a finite number > 0, bad labels (the checks of :mod:`gnnpot.data.checks`).
        """
        where = f"{source}, frame {frame_id}"
        pos = np.asarray(atoms.positions, dtype=np.float64)
        cell = np.asarray(atoms.cell.array, dtype=np.float64)
        pbc = np.asarray(atoms.pbc, dtype=bool)
        check_positions(pos, where)
        check_cell(cell, pbc, where)
        num_atoms = len(atoms)
        checked = None if labels is None else check_labels(labels, num_atoms, where)
        try:  # the neighbour list checks the cutoff
            if neighbors is None:
                i, j, shifts = neighbor_list_arrays(pos, cell, pbc, cutoff)
                dist = np.linalg.norm(pos[j] - pos[i] + shifts @ cell, axis=1)
            else:
                i, j, shifts, dist = neighbors.update(pos, cell, pbc)
        except ValueError as err:
            raise DataError(f"{where}: {err}") from err
        check_min_distance(i, j, dist, where)
        dtype = dtype or torch.get_default_dtype()
        total_charge, charges = _charges(atoms, where)
        data = cls(
            z=torch.as_tensor(atoms.numbers, dtype=torch.long),
            pos=torch.as_tensor(pos, dtype=dtype),
            cell=torch.as_tensor(cell, dtype=dtype).unsqueeze(0),
            pbc=torch.as_tensor(pbc).unsqueeze(0),
            natoms=torch.tensor([num_atoms]),
            edge_index=torch.as_tensor(np.stack([i, j])),
            edge_shift=torch.as_tensor(shifts),
            frame_id=torch.tensor([frame_id]),
            total_charge=torch.tensor([total_charge], dtype=dtype),
            num_nodes=num_atoms,
        )
        if charges is not None:
            data[keys.CHARGES] = torch.as_tensor(charges, dtype=dtype)
        if checked is not None:
            data._set_labels(checked, weights or {}, dtype)
        return data

    def _set_labels(self, labels: Mapping[str, Any], weights: Mapping[str, float], dtype: torch.dtype) -> None:
        """Store checked labels with their loss weights; a missing label is NaN with weight 0.

        Args:
            labels: the output of :func:`~gnnpot.data.checks.check_labels`.
            weights: per-frame loss weight by label name, default 1.
            dtype: float dtype of the stored labels.
        """
        shapes = {keys.ENERGY: (1,), keys.FORCES: (self.num_nodes, 3), keys.STRESS: (1, 3, 3)}
        for key, shape in shapes.items():
            weight_key = keys.WEIGHT_KEYS[key]
            if key not in labels:
                self[key] = torch.full(shape, float("nan"), dtype=dtype)
                self[weight_key] = torch.zeros(1, dtype=dtype)
                continue
            self[key] = torch.as_tensor(np.reshape(labels[key], shape), dtype=dtype)
            self[weight_key] = torch.tensor([float(weights.get(key, 1.0))], dtype=dtype)

    def has_label(self, key: str) -> bool:
        """True when this single frame carries a real (not masked) ``key`` label."""
        weight = self.get(keys.WEIGHT_KEYS[key])
        return weight is not None and bool(weight.sum() > 0) and bool(torch.isfinite(self[key]).all())

    def to_atoms(self) -> Atoms:
        """Convert a single frame back to ``ase.Atoms``; real labels go on a SinglePointCalculator."""
        if self.get(keys.BATCH) is not None and int(self[keys.NUM_ATOMS].numel()) != 1:
            raise ValueError("to_atoms() needs a single frame; use Batch.to_data_list() first")
        atoms = Atoms(
            numbers=self[keys.ATOMIC_NUMBERS].cpu().numpy(),
            positions=self[keys.POSITIONS].detach().cpu().double().numpy(),
            cell=self[keys.CELL][0].detach().cpu().double().numpy(),
            pbc=self[keys.PBC][0].cpu().numpy(),
        )
        if self.get(keys.CHARGES) is not None:
            atoms.set_initial_charges(self[keys.CHARGES].detach().cpu().double().numpy())
        if self.get(keys.TOTAL_CHARGE) is not None and float(self[keys.TOTAL_CHARGE][0]) != 0.0:
            atoms.info["charge"] = float(self[keys.TOTAL_CHARGE][0])
        results = {}
        if self.has_label(keys.ENERGY):
            results["energy"] = float(self[keys.ENERGY][0])
        if self.has_label(keys.FORCES):
            results["forces"] = self[keys.FORCES].detach().cpu().double().numpy()
        if self.has_label(keys.STRESS):
            results["stress"] = self[keys.STRESS][0].detach().cpu().double().numpy()
        if results:
            atoms.calc = SinglePointCalculator(atoms, **results)
        return atoms


# Where a frame's net charge is read from ``atoms.info``, first found first (MACE and fairchem use "charge").
TOTAL_CHARGE_INFO = ("charge", "total_charge")


def _charges(atoms: Atoms, where: str) -> tuple[float, np.ndarray | None]:
    """The frame's net charge (e) and its per-atom ``initial_charges`` [N] (e) or ``None``.

    The net charge is ``atoms.info``'s (:data:`TOTAL_CHARGE_INFO`), else the sum of the initial
    charges, else 0.

    Raises:
        DataError: a net charge or a per-atom charge that is not a finite number.
    """
    fallback = float(np.sum(atoms.get_initial_charges())) if atoms.has("initial_charges") else 0.0
    total = next((atoms.info[name] for name in TOTAL_CHARGE_INFO if atoms.info.get(name) is not None), fallback)
    try:
        total = float(total)
    except (TypeError, ValueError) as err:
        raise DataError(f"{where}: the total charge must be a number (e), got {total!r}") from err
    if not np.isfinite(total):
        raise DataError(f"{where}: the total charge must be finite, got {total!r}")
    if not atoms.has("initial_charges"):
        return total, None
    charges = np.asarray(atoms.get_initial_charges(), dtype=np.float64)
    if not np.isfinite(charges).all():
        raise DataError(f"{where}: initial_charges has NaN or inf values")
    return total, charges
