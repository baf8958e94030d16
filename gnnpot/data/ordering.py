"""Spatial ordering of atoms along a Z-order (Morton) curve, so that neighbours sit close in memory.

A message-passing step gathers each edge's neighbour features and sums them into its centre. When
atoms that are close in space are also close in the feature arrays, those reads and writes stay in
the CPU caches; a large cell in lattice or file order spreads each atom's neighbours over the whole
array. MD codes sort their atoms for the same reason (LAMMPS's ``atom_modify sort``). Neither ASE,
vesin nor scipy offers the ordering, and it is a few lines of bit interleaving, so it is written here.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms

MORTON_BITS = 10  # per axis: 1024 bins, a 30-bit code


def morton_order(atoms: Atoms) -> np.ndarray:
    """The permutation that sorts ``atoms`` along a Z-order curve of their wrapped positions.

    Positions are wrapped into the cell along the periodic directions, scaled to the bounding box
    and binned in ``2**MORTON_BITS`` bins per axis; atoms in the same bin keep their order.

    Args:
        atoms: the structure.

    Returns:
        ``order`` [N] (int64): ``atoms[order]`` is the sorted structure.
    """
    positions = atoms.get_positions(wrap=bool(atoms.pbc.any()))
    if len(positions) == 0:
        return np.zeros(0, dtype=np.int64)
    low, high = positions.min(axis=0), positions.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    bins = np.minimum((positions - low) / span * (1 << MORTON_BITS), (1 << MORTON_BITS) - 1).astype(np.uint64)
    code = _spread(bins[:, 0]) | (_spread(bins[:, 1]) << np.uint64(1)) | (_spread(bins[:, 2]) << np.uint64(2))
    return np.argsort(code, kind="stable").astype(np.int64)


def _spread(x: np.ndarray) -> np.ndarray:
    """Insert two zero bits after each of the low ``MORTON_BITS`` bits of ``x`` (uint64)."""
    x = x & np.uint64(0x3FF)
    for shift, mask in ((16, 0x030000FF), (8, 0x0300F00F), (4, 0x030C30C3), (2, 0x09249249)):
        x = (x | (x << np.uint64(shift))) & np.uint64(mask)
    return x
