"""Two-body distance histograms."""

import math

import pytest
import torch
from ase import Atoms

from gnnpot.descriptors import TwoBodyHistogram
from gnnpot.nn.radial import CosineCutoff, PolynomialCutoff
from tests.descriptors.structures import graph


def test_dimer_fills_the_blocks_of_its_element_pair_with_a_gaussian_bump():
    r, cutoff, width = 1.3, 4.0, 0.2
    descriptor = TwoBodyHistogram([1, 8], cutoff, num_bins=8, width=width)
    out = descriptor.forward_data(graph(Atoms("HO", positions=[[0, 0, 0], [0, 0, r]]), 5.0))
    blocks = out.view(2, 2, 2, 8)  # [atom, centre element, neighbour element, bin]
    centres = (torch.arange(8, dtype=torch.float64) + 0.5) * cutoff / 8
    expected = torch.exp(-((r - centres) ** 2) / (2 * width**2)) * PolynomialCutoff(cutoff)(torch.tensor(r))
    torch.testing.assert_close(blocks[0, 0, 1], expected)  # H sees one O
    torch.testing.assert_close(blocks[1, 1, 0], expected)  # O sees one H
    assert blocks.abs().sum() == pytest.approx(2 * float(expected.sum()))  # nothing anywhere else
    assert int(blocks[0, 0, 1].argmax()) == int(r // (cutoff / 8))  # the peak is in r's bin


def test_counts_add_up_over_neighbours():
    # Six O atoms at 1.0 Å around an H: the H-O block is six times one neighbour's bump.
    directions = [[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]]
    atoms = Atoms("H" + "O" * 6, positions=[[0, 0, 0], *directions])
    descriptor = TwoBodyHistogram([1, 8], 1.2, num_bins=4, envelope=CosineCutoff(1.2))
    out = descriptor.forward_data(graph(atoms, 1.2)).view(7, 2, 2, 4)
    one = descriptor.forward_data(graph(Atoms("HO", positions=[[0, 0, 0], [1, 0, 0]]), 1.2)).view(2, 2, 2, 4)
    torch.testing.assert_close(out[0, 0, 1], 6 * one[0, 0, 1])
    assert math.isclose(float(out[0, 0, 0].sum()), 0.0)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="num_bins"):
        TwoBodyHistogram([1], 3.0, num_bins=0)
    with pytest.raises(ValueError, match="width"):
        TwoBodyHistogram([1], 3.0, width=0.0)
    with pytest.raises(ValueError, match="envelope"):
        TwoBodyHistogram([1], 3.0, envelope=CosineCutoff(4.0))  # not zero at 3 Å
