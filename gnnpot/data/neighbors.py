"""Radius graphs for finite and periodic structures, built with vesin.

vesin handles non-periodic, fully periodic and mixed boundary conditions, triclinic cells and cells
smaller than the cutoff (several images of one atom), so no image bookkeeping is written here.
"""

from __future__ import annotations

import numpy as np
import vesin
from ase import Atoms

from gnnpot.data.checks import MIN_VOLUME, check_cell, check_cutoff


def neighbor_list_arrays(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Full neighbour list of points within ``cutoff`` (both directions of every pair).

    Args:
        positions: [num_atoms, 3] Cartesian positions, Å.
        cell: [3, 3] lattice vectors as rows, Å. Ignored along non-periodic directions.
        pbc: [3] periodicity along each lattice vector.
        cutoff: radius, Å, > 0.

    Returns:
        ``(i, j, shifts)``: centre indices [E], neighbour indices [E] and integer cell shifts
        [E, 3] such that ``pos[j] - pos[i] + shifts @ cell`` is the edge vector. There is no
        self-pair at zero shift; an atom does pair with its own periodic images. Edges come in
        pairs (see :data:`gnnpot.keys.EDGE_INDEX`): edge ``2k + 1`` is edge ``2k`` reversed, and
        the pairs are in a canonical order, so equal inputs give equal arrays.
    """
    return interleave_pairs(*_half_pairs(positions, cell, pbc, cutoff))


def _half_pairs(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every unordered pair within ``cutoff`` once, in :func:`canonical_pairs` order."""
    cutoff = check_cutoff(cutoff)
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    pbc = np.asarray(pbc, dtype=bool).reshape(3)
    cell = np.asarray(cell, dtype=np.float64).reshape(3, 3)
    if len(positions) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros((0, 3), dtype=np.int64)
    if pbc.any():
        check_cell(cell, pbc, "neighbour list")
        if not pbc.all():
            cell = _complete_cell(cell, pbc)
    else:
        cell = np.zeros((3, 3))
    calculator = vesin.NeighborList(cutoff=cutoff, full_list=False)
    i, j, shifts = calculator.compute(points=positions, box=cell, periodic=pbc.tolist(), quantities="ijS", copy=True)
    return canonical_pairs(i.astype(np.int64), j.astype(np.int64), shifts.astype(np.int64))


def canonical_pairs(i: np.ndarray, j: np.ndarray, shifts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Orient each pair ``i < j`` (an atom with its own image: first non-zero shift > 0) and sort.

    A half list's orientation depends on how its builder binned space (and so on the cutoff);
    this order does not, so a list kept with a skin equals a fresh one.
    """
    first = np.where(shifts[:, 0] != 0, shifts[:, 0], np.where(shifts[:, 1] != 0, shifts[:, 1], shifts[:, 2]))
    flip = (i > j) | ((i == j) & (first < 0))
    i, j = np.where(flip, j, i), np.where(flip, i, j)
    shifts = np.where(flip[:, None], -shifts, shifts)
    order = np.lexsort((shifts[:, 2], shifts[:, 1], shifts[:, 0], j, i))
    return i[order], j[order], shifts[order]


def interleave_pairs(i: np.ndarray, j: np.ndarray, shifts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Half list [P] to full list [2P]: edge ``2k`` is pair ``k``, edge ``2k + 1`` its reverse."""
    return (
        np.stack([i, j], axis=1).reshape(-1),
        np.stack([j, i], axis=1).reshape(-1),
        np.stack([shifts, -shifts], axis=1).reshape(-1, 3),
    )


def neighbor_list(atoms: Atoms, cutoff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`neighbor_list_arrays` for an :class:`ase.Atoms` (positions, cell and pbc)."""
    return neighbor_list_arrays(atoms.positions, atoms.cell.array, atoms.pbc, cutoff)


def _complete_cell(cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """Replace zero-length (or degenerate) non-periodic lattice vectors, e.g. a slab with no third vector.

    vesin needs an invertible box even along non-periodic directions, where only its
    orientation matters for the cell-list binning. A missing vector is replaced by a unit
    vector orthogonal to the periodic ones; the shifts along it are always zero.
    """
    cell = cell.copy()
    missing = np.linalg.norm(cell, axis=1) < 1e-8
    if not missing.any() and not abs(np.linalg.det(cell)) >= MIN_VOLUME:
        # A non-periodic vector lies in the periodic plane: replace it like a missing one.
        missing = ~pbc
    for axis in np.flatnonzero(missing):
        others = [cell[k] for k in range(3) if k != axis and not missing[k]]
        if len(others) == 2:
            vec = np.cross(others[0], others[1])
        else:
            # Gram-Schmidt a Cartesian axis against what is there.
            vec = np.eye(3)[axis]
            for other in others:
                unit = other / np.linalg.norm(other)
                vec = vec - vec @ unit * unit
            if np.linalg.norm(vec) < 1e-8:
                vec = np.eye(3)[(axis + 1) % 3]
                for other in others:
                    unit = other / np.linalg.norm(other)
                    vec = vec - vec @ unit * unit
        norm = np.linalg.norm(vec)
        if norm < 1e-8:
            raise ValueError(
                f"periodic lattice vectors are parallel (zero area): cell={cell.tolist()}, pbc={pbc.tolist()}"
            )
        cell[axis] = vec / norm
        missing[axis] = False
    if not abs(np.linalg.det(cell)) >= MIN_VOLUME:
        raise ValueError(f"periodic cell has zero volume: cell={cell.tolist()}, pbc={pbc.tolist()}")
    return cell


class SkinNeighborList:
    """A neighbour list reused across MD steps (a Verlet list).

    The list is built with vesin at ``cutoff + skin`` and kept while no atom has moved more than
    ``skin / 2`` since the build and the cell, periodicity and atom count are unchanged: then no
    pair can have come within ``cutoff`` unseen. Each call filters the kept pairs to those within
    ``cutoff`` now. Pairs are kept once and returned in the canonical paired order of
    :func:`neighbor_list_arrays`, so the result is the same array as a fresh build would give
    (``skin=0`` rebuilds every call).

    Args:
        cutoff: radius of the returned pairs, Å.
        skin: extra radius of the kept list, Å (>= 0).
    """

    def __init__(self, cutoff: float, skin: float = 0.5) -> None:
        self.cutoff = check_cutoff(cutoff)
        if not skin >= 0:
            raise ValueError(f"skin must be >= 0, got {skin!r}")
        self.skin = float(skin)
        self.num_builds = 0
        self.min_distance = float("inf")  # shortest pair distance at the last update, Å
        self._ref: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._pairs: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def update(
        self, positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(i, j, shifts, distances)`` of every pair within ``cutoff`` (see :func:`neighbor_list_arrays`)."""
        positions = np.asarray(positions, dtype=np.float64)
        cell = np.asarray(cell, dtype=np.float64).reshape(3, 3)
        pbc = np.asarray(pbc, dtype=bool).reshape(3)
        if self._needs_build(positions, cell, pbc):
            self._pairs = _half_pairs(positions, cell, pbc, self.cutoff + self.skin)
            self._ref = (positions.copy(), cell.copy(), pbc.copy())
            self.num_builds += 1
        i, j, shifts = self._pairs
        distances = np.linalg.norm(positions[j] - positions[i] + shifts @ cell, axis=1)
        keep = distances < self.cutoff
        self.min_distance = float(distances[keep].min()) if keep.any() else float("inf")
        return *interleave_pairs(i[keep], j[keep], shifts[keep]), np.repeat(distances[keep], 2)

    def _needs_build(self, positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> bool:
        if self._ref is None or self.skin == 0.0:
            return True
        ref_positions, ref_cell, ref_pbc = self._ref
        if ref_positions.shape != positions.shape or not np.array_equal(ref_pbc, pbc):
            return True
        if not np.array_equal(ref_cell, cell):
            return True
        if len(positions) == 0:
            return False
        moved = np.max(np.sum((positions - ref_positions) ** 2, axis=1))
        return bool(moved > (0.5 * self.skin) ** 2)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(cutoff={self.cutoff}, skin={self.skin}, num_builds={self.num_builds})"
