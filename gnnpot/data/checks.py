"""Input checks, one function per concern: cutoff, atomic numbers, positions, cell, overlapping atoms and labels.

Each check is written here once and called wherever data enters: :func:`gnnpot.data.read_frames`
(through :func:`gnnpot.data.check_atoms`) and :meth:`gnnpot.data.AtomicData.from_atoms`, which
also serves structures that never came from a file (the ASE calculator, tests). Bad data raises
:class:`DataError`, whose message starts with ``where``: ``"file, frame k"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from ase.stress import voigt_6_to_full_3x3_stress

from gnnpot import keys

# Two atoms closer than this (Å) are an input error, not physics.
MIN_DISTANCE = 0.1
# Heaviest element (oganesson).
MAX_ATOMIC_NUMBER = 118
# Smallest cell volume (Å^3) accepted for a cell periodic in all three directions.
MIN_VOLUME = 1e-6
# Lattice vectors shorter than this (Å) count as missing.
_MIN_LENGTH = 1e-8


class DataError(ValueError):
    """Bad input data; the message names the source file and frame."""


def check_cutoff(cutoff: float) -> float:
    """The cutoff as a float, checked.

    Args:
        cutoff: neighbour-list radius, Å.

    Returns:
        ``float(cutoff)``.

    Raises:
        ValueError: ``cutoff`` is not a finite number > 0 (an argument, not data: no file to name).
    """
    cutoff = float(cutoff)
    if not np.isfinite(cutoff) or cutoff <= 0.0:
        raise ValueError(f"cutoff must be a finite number > 0, got {cutoff!r}")
    return cutoff


def check_numbers(numbers: np.ndarray, where: str) -> None:
    """Raise :class:`DataError` for an atomic number that is not an element (1 to 118).

    ASE's dummy atom ``X`` has number 0: it is a placeholder, not an element a potential could learn.

    Args:
        numbers: [num_atoms] atomic numbers.
        where: ``"file, frame k"`` for the message.
    """
    numbers = np.asarray(numbers).reshape(-1)
    bad = np.flatnonzero((numbers < 1) | (numbers > MAX_ATOMIC_NUMBER))
    if len(bad):
        values = sorted({int(z) for z in numbers[bad]})
        dummy = " (0 is ASE's dummy atom X)" if 0 in values else ""
        shown = bad[:10].tolist() + (["..."] if len(bad) > 10 else [])
        raise DataError(
            f"{where}: atomic number(s) {values} at atoms {shown} are not elements 1 to {MAX_ATOMIC_NUMBER}{dummy}"
        )


def check_positions(pos: np.ndarray, where: str) -> None:
    """Raise :class:`DataError` when a position is NaN or inf.

    Args:
        pos: [num_atoms, 3] Cartesian positions, Å.
        where: ``"file, frame k"`` for the message.
    """
    finite = np.isfinite(pos).all(axis=1)
    if not finite.all():
        raise DataError(f"{where}: positions of atoms {np.flatnonzero(~finite).tolist()} are NaN or inf")


def check_cell(cell: np.ndarray, pbc: np.ndarray, where: str) -> None:
    """Raise :class:`DataError` for a degenerate periodic cell.

    A cell with no periodic direction is not looked at. Otherwise its entries must be finite,
    each periodic lattice vector must have a length, and a cell periodic in all three directions
    must have a volume of at least :data:`MIN_VOLUME`.

    Args:
        cell: [3, 3] lattice vectors as rows, Å.
        pbc: [3] periodicity along each lattice vector.
        where: ``"file, frame k"`` for the message.
    """
    cell = np.asarray(cell, dtype=np.float64).reshape(3, 3)
    pbc = np.asarray(pbc, dtype=bool).reshape(3)
    if not pbc.any():
        return
    if not np.isfinite(cell).all():
        raise DataError(f"{where}: cell has NaN or inf entries: {cell.tolist()}")
    if (np.linalg.norm(cell, axis=1)[pbc] < _MIN_LENGTH).any():
        raise DataError(f"{where}: periodic lattice vector has zero length: cell={cell.tolist()}, pbc={pbc.tolist()}")
    if pbc.all() and not abs(np.linalg.det(cell)) >= MIN_VOLUME:
        raise DataError(f"{where}: periodic cell has zero volume: cell={cell.tolist()}")


def check_min_distance(i: np.ndarray, j: np.ndarray, dist: np.ndarray, where: str) -> None:
    """Raise :class:`DataError` when two atoms are closer than :data:`MIN_DISTANCE`.

    Args:
        i: [num_pairs] index of the first atom of each pair.
        j: [num_pairs] index of the second atom of each pair.
        dist: [num_pairs] distance of each pair (periodic images included), Å.
        where: ``"file, frame k"`` for the message.
    """
    if len(dist) == 0:
        return
    k = int(np.argmin(dist))
    if dist[k] < MIN_DISTANCE:
        raise DataError(
            f"{where}: atoms {i[k]} and {j[k]} are {dist[k]:.4f} Å apart (minimum {MIN_DISTANCE} Å); overlapping atoms"
        )


def stress_matrix(value: Any) -> np.ndarray:
    """A [3, 3] stress (or virial) from nine entries or an ASE Voigt 6-vector (xx, yy, zz, yz, xz, xy).

    Args:
        value: [3, 3], [9] or Voigt [6] (any shape with 9 or 6 entries), eV/Å³ (eV for a virial).

    Raises:
        ValueError: another number of entries, or entries that are not numbers.
    """
    array = np.asarray(value, dtype=np.float64)
    if array.size == 9:
        return array.reshape(3, 3)
    if array.size == 6:
        return voigt_6_to_full_3x3_stress(array.reshape(6))
    raise ValueError(f"has shape {array.shape}, expected (3, 3), (9,) or Voigt (6,)")


def check_labels(labels: Mapping[str, Any], num_atoms: int, where: str) -> dict[str, Any]:
    """The ``energy``, ``forces`` and ``stress`` of ``labels``, checked and in standard shapes.

    Labels that are absent or ``None`` are left out; other keys are ignored.

    Args:
        labels: ``energy`` (one value, eV), ``forces`` ([num_atoms, 3], eV/Å) and ``stress``
            ([3, 3], [9] or Voigt [6], eV/Å³, ASE sign).
        num_atoms: number of atoms of the frame.
        where: ``"file, frame k"`` for the message.

    Returns:
        ``{"energy": float, "forces": [num_atoms, 3] array, "stress": [3, 3] array}``, float64,
        with the labels present.

    Raises:
        DataError: a label that is not numbers, has the wrong shape or contains NaN or inf.
    """
    shapes = {keys.ENERGY: "one value", keys.FORCES: (num_atoms, 3), keys.STRESS: (3, 3)}
    checked: dict[str, Any] = {}
    for name, expected in shapes.items():
        value = labels.get(name)
        if value is None:
            continue
        try:
            array = stress_matrix(value) if name == keys.STRESS else np.asarray(value, dtype=np.float64)
        except (ValueError, TypeError) as err:
            raise DataError(f"{where}: malformed {name} label ({err})") from err
        if name == keys.ENERGY and array.size == 1:  # any shape holding one value: [], [1], [1, 1]
            array = array.reshape(())
        elif array.shape != expected:
            raise DataError(f"{where}: {name} label has shape {array.shape}, expected {expected}")
        if not np.isfinite(array).all():
            raise DataError(f"{where}: {name} label contains NaN or inf")
        checked[name] = float(array) if name == keys.ENERGY else array
    return checked
