"""``AtomicData``: one structure as a PyG graph, and its conversion from and to ``ase.Atoms``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.stress import voigt_6_to_full_3x3_stress
from torch_geometric.data import Data

from gnnpot import keys
from gnnpot.data.neighbors import SkinNeighborList, neighbor_list_arrays

# Two atoms closer than this (Å) are an input error, not physics.
MIN_DISTANCE = 0.1


class DataError(ValueError):
    """Bad input data; the message names the source file and frame."""


class AtomicData(Data):
    """A structure as a PyG graph. Field names and shapes are in :mod:`gnnpot.keys`.

    Per-frame fields (``cell``, ``pbc``, ``energy``, ``stress``, weights) carry a leading
    dimension of 1, so that PyG's batching concatenates them into ``[num_frames, ...]``.
    Triplet indices point into edges, so batching offsets them by the number of edges.
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
                units. ``None`` makes an unlabelled graph (inference). A label missing from the
                mapping (or ``None``) is stored as NaN with loss weight 0, so batches of partly
                labelled frames stay uniform and the loss masks them.
            weights: per-frame loss weights by label name, default 1 for present labels.
            source: file name used in error messages.
            frame_id: frame index used in error messages and stored with the data.
            dtype: float dtype of positions, cell and labels; default ``torch.get_default_dtype()``.
            neighbors: a neighbour list kept between calls (MD), used instead of a fresh one; its
                cutoff is the one that counts.

        Raises:
            DataError: NaN/inf, overlapping atoms, a degenerate periodic cell, bad label shapes.
        """
        where = f"{source}, frame {frame_id}"
        pos = np.asarray(atoms.positions, dtype=np.float64)
        cell = np.asarray(atoms.cell.array, dtype=np.float64)
        pbc = np.asarray(atoms.pbc, dtype=bool)
        if not np.isfinite(pos).all():
            bad = np.flatnonzero(~np.isfinite(pos).all(axis=1))
            raise DataError(f"{where}: positions of atoms {bad.tolist()} are NaN or inf")
        try:
            if neighbors is None:
                i, j, shifts = neighbor_list_arrays(pos, cell, pbc, cutoff)
                dist = np.linalg.norm(pos[j] - pos[i] + shifts @ cell, axis=1)
            else:
                i, j, shifts, dist = neighbors.update(pos, cell, pbc)
        except ValueError as err:
            raise DataError(f"{where}: {err}") from err
        if len(i):
            k = int(np.argmin(dist))
            if dist[k] < MIN_DISTANCE:
                raise DataError(
                    f"{where}: atoms {i[k]} and {j[k]} are {dist[k]:.4f} Å apart "
                    f"(minimum {MIN_DISTANCE} Å); overlapping atoms"
                )
        num_atoms = len(atoms)
        dtype = dtype or torch.get_default_dtype()
        data = cls(
            z=torch.as_tensor(atoms.numbers, dtype=torch.long),
            pos=torch.as_tensor(pos, dtype=dtype),
            cell=torch.as_tensor(cell, dtype=dtype).unsqueeze(0),
            pbc=torch.as_tensor(pbc).unsqueeze(0),
            natoms=torch.tensor([num_atoms]),
            edge_index=torch.as_tensor(np.stack([i, j])),
            edge_shift=torch.as_tensor(shifts),
            frame_id=torch.tensor([frame_id]),
            num_nodes=num_atoms,
        )
        if labels is not None:
            data._set_labels(labels, dict(weights or {}), num_atoms, where, dtype)
        return data

    def _set_labels(
        self,
        labels: Mapping[str, Any],
        weights: dict[str, float],
        num_atoms: int,
        where: str,
        dtype: torch.dtype,
    ) -> None:
        shapes = {keys.ENERGY: (1,), keys.FORCES: (num_atoms, 3), keys.STRESS: (1, 3, 3)}
        for key, shape in shapes.items():
            value = labels.get(key)
            weight_key = keys.WEIGHT_KEYS[key]
            if value is None:
                self[key] = torch.full(shape, float("nan"), dtype=dtype)
                self[weight_key] = torch.zeros(1, dtype=dtype)
                continue
            array = np.asarray(value, dtype=np.float64)
            if key == keys.STRESS and array.shape == (6,):
                array = voigt_6_to_full_3x3_stress(array)
            if array.size != int(np.prod(shape)):
                raise DataError(f"{where}: {key} has shape {array.shape}, expected {shape}")
            if not np.isfinite(array).all():
                raise DataError(f"{where}: {key} label contains NaN or inf")
            self[key] = torch.as_tensor(array.reshape(shape), dtype=dtype)
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
