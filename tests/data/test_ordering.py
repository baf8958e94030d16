"""Z-order (Morton) sorting of atoms: a permutation that brings neighbours close in index."""

import numpy as np
from ase import Atoms
from ase.build import bulk, molecule
from ase.neighborlist import neighbor_list

from gnnpot.data.ordering import MORTON_BITS, _spread, morton_order


def test_spread_interleaves_bits():
    values = np.array([0, 1, 2, 5, 777, (1 << MORTON_BITS) - 1], dtype=np.uint64)
    expected = [sum(((int(v) >> b) & 1) << (3 * b) for b in range(MORTON_BITS)) for v in values]
    assert _spread(values).tolist() == expected


def mean_index_gap(atoms, cutoff=3.0):
    i, j = neighbor_list("ij", atoms, cutoff)
    return np.abs(i - j).mean()


def test_sorting_a_shuffled_cell_brings_neighbours_close():
    ordered = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(8)
    shuffled = ordered[np.random.default_rng(0).permutation(len(ordered))]
    shuffled.positions += 3.6 * 8 * np.random.default_rng(1).integers(-1, 2, size=(len(shuffled), 3))  # images
    order = morton_order(shuffled)
    assert sorted(order.tolist()) == list(range(len(shuffled)))
    # as local as the lattice order, four times more than the shuffled one
    assert mean_index_gap(shuffled[order]) < 1.1 * mean_index_gap(ordered)
    assert mean_index_gap(shuffled[order]) < 0.25 * mean_index_gap(shuffled)


def test_molecules_and_degenerate_inputs():
    flat = Atoms("H3", positions=[[2, 0, 0], [0, 0, 0], [1, 0, 0]])  # all in one plane and line
    assert morton_order(flat).tolist() == [1, 2, 0]
    assert morton_order(Atoms()).tolist() == []
    assert sorted(morton_order(molecule("CH3CH2OH")).tolist()) == list(range(9))
