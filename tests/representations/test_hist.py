"""Histogram MLP (``hist``) checks; energy, forces and stress are covered by tests/test_contract.py."""

from __future__ import annotations

import pytest
import torch

from gnnpot import keys, testing
from gnnpot.representations.hist import HistogramMLP
from tests.representations.test_acsf import CUTOFF, check_locality, family_input, rattled_ethanol


@pytest.mark.parametrize("system", ["ethanol", "triclinic"])
def test_histograms_are_the_descriptors_by_neighbour_element(system):
    """The family's histograms equal the descriptors' blocks of each atom's own element."""
    atoms, elements = (rattled_ethanol(), [1, 6, 8]) if system == "ethanol" else (testing.triclinic_cell(), [29, 79])
    rep = HistogramMLP(len(elements), CUTOFF, num_bins=6, num_radial=3, num_angular=4).double()
    graph, species = family_input(rep, atoms, elements)
    two_body, three_body = rep.histograms(graph)
    inputs = (species + 1, graph[keys.EDGE_INDEX], graph[keys.EDGE_SHIFT], graph[keys.EDGE_VEC])
    num_atoms, num_elements, own = len(atoms), len(elements), torch.arange(len(atoms))
    expected_two = rep.two_body(*inputs).reshape(num_atoms, num_elements, num_elements, -1)[own, species]
    torch.testing.assert_close(two_body, expected_two, rtol=0, atol=1e-13)
    three = rep.three_body
    expected_three = rep.three_body(*inputs).reshape(num_atoms, num_elements, three.num_pairs, -1)[own, species]
    shape = (num_atoms, three.num_radial, three.num_radial, three.num_angular)
    for b in range(num_elements):
        for d in range(num_elements):
            block = expected_three[:, max(b, d) * (max(b, d) + 1) // 2 + min(b, d)].reshape(shape)
            if b > d:  # the descriptor's first radial index is the lower element's neighbour
                block = block.transpose(1, 2)
            torch.testing.assert_close(three_body[:, b, d].reshape(shape), block, rtol=0, atol=1e-13)
    assert two_body.abs().max() > 0.1 and three_body.abs().max() > 0.1


def test_energy_of_an_atom_depends_on_its_own_neighbourhood_only():
    check_locality("hist")


def test_the_element_enters_through_the_embedding():
    """One MLP for all elements: changing element 1's embedding changes element-1 atoms only."""
    torch.manual_seed(0)
    rep = HistogramMLP(3, CUTOFF, **testing.tiny_hparams("hist")).double()
    graph, species = family_input(rep, rattled_ethanol(), [1, 6, 8])
    before = rep(graph)
    with torch.no_grad():
        rep.embedding.weight[1].add_(0.5)
    changed = (rep(graph) - before).abs().amax(dim=-1) > 1e-6
    assert torch.equal(changed, species == 1)
    assert all(layer.weight.dim() == 2 for layer in rep.layers)  # shared, no element axis
