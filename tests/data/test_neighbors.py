"""``neighbor_list`` against a brute-force enumeration of periodic images."""

import itertools

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

from gnnpot.data.neighbors import neighbor_list, neighbor_list_arrays


def brute_force(positions: np.ndarray, cell: np.ndarray, pbc, cutoff: float) -> set[tuple[int, ...]]:
    """Every ``(i, j, s0, s1, s2)`` with ``|pos[j] - pos[i] + s @ cell| < cutoff``, by enumeration.

    Along periodic vector k, ``|s @ cell| >= |s_k| * spacing_k``, where spacing_k is the distance
    between the lattice planes (lines, points) spanned by the other periodic vectors. With
    ``|s @ cell| <= cutoff + diameter`` of the point cloud, that bounds every ``s_k``.
    """
    pbc = np.asarray(pbc, dtype=bool)
    periodic = np.flatnonzero(pbc)
    diameter = np.linalg.norm(positions[:, None] - positions[None], axis=-1).max()
    ranges = []
    for k in range(3):
        if not pbc[k]:
            ranges.append([0])
            continue
        rest = [m for m in periodic if m != k]
        volume = np.sqrt(np.linalg.det(cell[periodic] @ cell[periodic].T))
        base = np.sqrt(np.linalg.det(cell[rest] @ cell[rest].T)) if rest else 1.0
        n_max = int(np.ceil((cutoff + diameter) / (volume / base)))
        ranges.append(range(-n_max, n_max + 1))
    shifts = np.array(list(itertools.product(*ranges)))
    delta = positions[None, :, :] - positions[:, None, :]  # [i, j, 3]
    vec = delta[:, :, None, :] + (shifts @ cell)[None, None]  # [i, j, S, 3]
    dist = np.linalg.norm(vec, axis=-1)
    found = set()
    for i, j, s in zip(*np.nonzero(dist < cutoff), strict=True):
        if i == j and not shifts[s].any():
            continue
        found.add((int(i), int(j), *(int(x) for x in shifts[s])))
    return found


def as_set(i, j, shifts) -> set[tuple[int, ...]]:
    assert not ((i == j) & ~shifts.any(axis=1)).any(), "self-pair at zero shift"
    pairs = [(int(a), int(b), *(int(x) for x in s)) for a, b, s in zip(i, j, shifts, strict=True)]
    assert len(pairs) == len(set(pairs)), "duplicate pairs"
    return set(pairs)


def random_triclinic(rng: np.random.Generator) -> np.ndarray:
    cell = np.diag(rng.uniform(3.0, 6.0, 3)) + rng.uniform(-1.5, 1.5, (3, 3))
    if np.linalg.det(cell) < 0:
        cell[0] *= -1
    return cell


@pytest.mark.parametrize("seed", range(6))
def test_random_triclinic_cells(seed):
    rng = np.random.default_rng(seed)
    cell = random_triclinic(rng)
    # Fractional coordinates in [-0.5, 1.5): positions need not be wrapped into the cell.
    positions = rng.uniform(-0.5, 1.5, (7, 3)) @ cell
    cutoff = rng.uniform(2.5, 5.0)
    got = as_set(*neighbor_list_arrays(positions, cell, [True] * 3, cutoff))
    assert got == brute_force(positions, cell, [True] * 3, cutoff)
    assert len(got) > 0


@pytest.mark.parametrize("cell", [np.eye(3) * 2.0, [[0.0, 1.3, 1.3], [1.3, 0.0, 1.3], [1.3, 1.3, 0.0]]])
def test_one_atom_cell_smaller_than_cutoff(cell):
    cell = np.asarray(cell, dtype=float)
    positions = np.array([[0.3, 0.2, 0.1]])
    i, j, shifts = neighbor_list_arrays(positions, cell, [True] * 3, 5.0)
    got = as_set(i, j, shifts)
    assert got == brute_force(positions, cell, [True] * 3, 5.0)
    assert (i == 0).all() and (j == 0).all()
    assert len(got) > 26  # many images of the one atom
    # Every image comes with its inverse.
    assert {(a, b, -x, -y, -z) for a, b, x, y, z in got} == got


@pytest.mark.parametrize("third", [[0.0, 0.0, 0.0], [0.0, 0.0, 12.0], [2.0, 1.0, 0.0]])
def test_slab_mixed_pbc(third):
    """Periodic in-plane only; the third vector is zero, vacuum, or lying in the plane."""
    rng = np.random.default_rng(1)
    cell = np.array([[4.0, 0.0, 0.0], [1.2, 3.6, 0.0], third])
    positions = np.concatenate([rng.uniform(0, 1, (8, 2)) @ cell[:2, :2], rng.uniform(-2, 9, (8, 1))], axis=1)
    pbc = [True, True, False]
    i, j, shifts = neighbor_list_arrays(positions, cell, pbc, 4.5)
    got = as_set(i, j, shifts)
    assert got == brute_force(positions, cell, pbc, 4.5)
    assert (shifts[:, 2] == 0).all()


def test_wire_one_periodic_direction():
    rng = np.random.default_rng(2)
    cell = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.5, 0.0, 2.5]])
    positions = rng.uniform(-2, 2, (5, 3))
    pbc = [False, False, True]
    got = as_set(*neighbor_list_arrays(positions, cell, pbc, 4.0))
    assert got == brute_force(positions, cell, pbc, 4.0)


def test_molecule_non_periodic():
    atoms = molecule("CH3CH2OH")
    i, j, shifts = neighbor_list(atoms, 2.0)
    got = as_set(i, j, shifts)
    assert got == brute_force(atoms.positions, np.zeros((3, 3)), [False] * 3, 2.0)
    assert not shifts.any()
    # A full list: every pair appears in both directions.
    assert {(b, a, 0, 0, 0) for a, b, *_ in got} == got


def test_molecule_in_a_box_ignores_the_box():
    """A non-periodic frame with a cell (as in extxyz files with Lattice and pbc F) has no images."""
    atoms = molecule("H2O", cell=[2.0, 2.0, 2.0], pbc=False)
    assert as_set(*neighbor_list(atoms, 3.0)) == brute_force(atoms.positions, np.zeros((3, 3)), [False] * 3, 3.0)


def test_empty_structure():
    i, j, shifts = neighbor_list(Atoms(), 3.0)
    assert len(i) == len(j) == len(shifts) == 0 and shifts.shape == (0, 3)


@pytest.mark.parametrize("cutoff", [0.0, -1.0, float("nan")])
def test_bad_cutoff(cutoff):
    with pytest.raises(ValueError, match="cutoff"):
        neighbor_list(molecule("H2O"), cutoff)


@pytest.mark.parametrize(
    ("cell", "pbc"),
    [
        ([[3.0, 0, 0], [0, 3.0, 0], [1.0, 1.0, 0.0]], [True] * 3),  # flat cell
        ([[3.0, 0, 0], [6.0, 0, 0], [0, 0, 0]], [True, True, False]),  # parallel periodic vectors
        ([[3.0, 0, 0], [0, 0, 0], [0, 0, 3.0]], [True, True, True]),  # zero periodic vector
    ],
)
def test_degenerate_periodic_cell(cell, pbc):
    with pytest.raises(ValueError, match="zero"):
        neighbor_list_arrays(np.zeros((1, 3)), np.asarray(cell), pbc, 2.0)


@pytest.mark.parametrize("pbc", [(True, True, True), (True, True, False), (False, False, False)])
def test_skin_list_equals_a_fresh_list_as_atoms_move(pbc):
    from gnnpot.data.neighbors import SkinNeighborList

    rng = np.random.default_rng(4)
    cell = np.array([[6.0, 0.0, 0.0], [1.5, 5.5, 0.0], [0.7, -0.9, 6.2]])
    positions = rng.uniform(0, 1, (20, 3)) @ cell
    kept, fresh = SkinNeighborList(3.0, skin=0.8), SkinNeighborList(3.0, skin=0.0)
    for _ in range(40):
        positions = positions + rng.normal(scale=0.05, size=positions.shape)
        a, b = kept.update(positions, cell, pbc), fresh.update(positions, cell, pbc)
        for x, y in zip(a, b):
            assert np.array_equal(x, y)
        expected = {(int(i), int(j), *map(int, s)) for i, j, s in zip(*neighbor_list_arrays(positions, cell, pbc, 3.0))}
        assert {(int(i), int(j), *map(int, s)) for i, j, s in zip(*a[:3])} == expected
    assert fresh.num_builds == 40 and 2 <= kept.num_builds < 20
    np.testing.assert_allclose(a[3], np.linalg.norm(positions[a[1]] - positions[a[0]] + a[2] @ cell, axis=1))
    with pytest.raises(ValueError, match="skin must be >= 0"):
        SkinNeighborList(3.0, skin=-1.0)


@pytest.mark.parametrize(
    "atoms",
    [
        molecule("CH3CH2OH"),
        Atoms("Cu", cell=[[2.0, 0.0, 0.0], [0.3, 2.2, 0.0], [0.1, 0.2, 2.4]], pbc=True),
        Atoms("CuAu", positions=[[0, 0, 0], [1.2, 1.1, 0.4]], cell=[3.0, 3.1, 0.0], pbc=[True, True, False]),
    ],
)
def test_edges_come_in_reversed_pairs(atoms):
    i, j, shifts = neighbor_list(atoms, 4.5)
    assert len(i) % 2 == 0 and len(i) > 0
    assert (i[0::2] == j[1::2]).all() and (j[0::2] == i[1::2]).all()
    assert (shifts[0::2] == -shifts[1::2]).all()
    # the even edges hold each unordered pair once, oriented i < j (or a positive shift for i == j)
    pairs = {(a, b, *s) for a, b, s in zip(i[0::2], j[0::2], shifts[0::2].tolist())}
    assert len(pairs) == len(i) // 2
    assert all(a < b or (a == b and next(x for x in s if x) > 0) for a, b, *s in pairs)
