"""The shared parts of the atom-centred descriptors: elements, pair numbering, neighbour pairs, cutoff."""

import math

import pytest
import torch
from ase import Atoms

from gnnpot.descriptors import TwoBodyHistogram, neighbour_pairs, pair_index
from tests.descriptors.structures import graph


def test_pair_index_numbers_unordered_pairs_in_lower_triangular_order():
    a = torch.tensor([0, 1, 0, 1, 2, 0, 2, 1, 2])
    b = torch.tensor([0, 0, 1, 1, 0, 2, 1, 2, 2])
    assert pair_index(a, b).tolist() == [0, 1, 1, 2, 3, 3, 4, 4, 5]


def test_elements_are_sorted_and_unknown_atomic_numbers_are_named():
    descriptor = TwoBodyHistogram([8, 1], cutoff=3.0)
    assert descriptor.elements == (1, 8)
    assert descriptor.species(torch.tensor([8, 1, 8])).tolist() == [1, 0, 1]
    with pytest.raises(ValueError, match=r"\[6\]"):
        descriptor.species(torch.tensor([1, 6]))
    with pytest.raises(ValueError, match="repeat"):
        TwoBodyHistogram([1, 1], cutoff=3.0)
    with pytest.raises(ValueError, match="cutoff"):
        TwoBodyHistogram([1], cutoff=-1.0)


def test_neighbour_pairs_of_a_bent_triatomic():
    # O at the origin, H at 1.0 Å along x and 1.5 Å at 120 degrees: O has one pair (both orders),
    # each H has one pair (O and the other H).
    angle = math.radians(120.0)
    atoms = Atoms("OHH", positions=[[0, 0, 0], [1.0, 0, 0], [1.5 * math.cos(angle), 1.5 * math.sin(angle), 0]])
    data = graph(atoms, 5.0)
    pairs = neighbour_pairs(
        data.edge_index, data.edge_shift, data.pos[data.edge_index[1]] - data.pos[data.edge_index[0]], 3
    )
    assert sorted(pairs.centre.tolist()) == [0, 0, 1, 1, 2, 2]
    at_oxygen = pairs.centre == 0
    assert sorted(zip(pairs.first[at_oxygen].tolist(), pairs.second[at_oxygen].tolist())) == [(1, 2), (2, 1)]
    torch.testing.assert_close(pairs.cos_angle[at_oxygen], torch.full((2,), -0.5, dtype=torch.float64))
    r_hh = math.sqrt(1.0 + 1.5**2 + 2 * 1.0 * 1.5 * 0.5)  # law of cosines
    torch.testing.assert_close(pairs.len_between[at_oxygen], torch.full((2,), r_hh, dtype=torch.float64))
    # The pair's lengths belong to its first and second neighbour.
    first = pairs.first[at_oxygen]
    torch.testing.assert_close(pairs.len_first[at_oxygen], torch.where(first == 1, 1.0, 1.5).double())


def test_edges_beyond_the_cutoff_are_dropped_and_an_isolated_atom_has_zero_features():
    descriptor = TwoBodyHistogram([1, 8], cutoff=2.0, num_bins=4)
    atoms = Atoms("OH", positions=[[0, 0, 0], [0, 0, 3.0]])
    wide = descriptor.forward_data(graph(atoms, 4.0))
    assert wide.shape == (2, descriptor.num_features) and torch.equal(wide, torch.zeros_like(wide))
