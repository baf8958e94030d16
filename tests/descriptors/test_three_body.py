"""Three-body histograms over (r_ij, r_ik, cos theta)."""

import math

import torch
from ase import Atoms

from gnnpot.descriptors import ThreeBodyHistogram
from gnnpot.nn.radial import PolynomialCutoff
from tests.descriptors.structures import graph

CUTOFF = 3.0


def bumps(x: float, num: int, low: float, high: float, width: float) -> torch.Tensor:
    centres = low + (torch.arange(num, dtype=torch.float64) + 0.5) * (high - low) / num
    return torch.exp(-((x - centres) ** 2) / (2 * width**2))


def bent(first: str, second: str, r1: float, r2: float, degrees: float) -> Atoms:
    """A C centre with ``first`` at ``r1`` along x and ``second`` at ``r2`` at ``degrees`` from it."""
    angle = math.radians(degrees)
    positions = [[0, 0, 0], [r1, 0, 0], [r2 * math.cos(angle), r2 * math.sin(angle), 0]]
    return Atoms("C" + first + second, positions=positions)


def centre_block(descriptor: ThreeBodyHistogram, atoms: Atoms) -> torch.Tensor:
    """The C atom's features as [centre element, pair, m, n, l]."""
    out = descriptor.forward_data(graph(atoms, 5.0))
    num_radial, num_angular = descriptor.num_radial, descriptor.num_angular
    shape = (descriptor.num_elements, descriptor.num_pairs, num_radial, num_radial, num_angular)
    return out[0].view(shape)


def test_mixed_pair_matches_the_formula_with_the_lower_element_first():
    descriptor = ThreeBodyHistogram([1, 6, 8], CUTOFF, num_radial=4, num_angular=5, radial_width=0.3, angular_width=0.2)
    r_h, r_o, degrees = 1.1, 1.4, 105.0
    u = PolynomialCutoff(CUTOFF)
    expected = torch.einsum(
        "m,n,l->mnl",
        bumps(r_h, 4, 0.0, CUTOFF, 0.3) * u(torch.tensor(r_h)),
        bumps(r_o, 4, 0.0, CUTOFF, 0.3) * u(torch.tensor(r_o)),
        bumps(math.cos(math.radians(degrees)), 5, -1.0, 1.0, 0.2),
    )
    # Elements H, C, O have indices 0, 1, 2; the pair {H, O} is (2, 0): index 3. The centre is C.
    for atoms in (bent("H", "O", r_h, r_o, degrees), bent("O", "H", r_o, r_h, degrees)):
        block = centre_block(descriptor, atoms)
        torch.testing.assert_close(block[1, 3], expected)
        others = block.clone()
        others[1, 3] = 0.0
        assert torch.equal(others, torch.zeros_like(others))  # one pair: one block is filled


def test_same_element_pair_is_symmetric_in_its_radial_bins_and_counts_once():
    descriptor = ThreeBodyHistogram([1, 6], CUTOFF, num_radial=3, num_angular=4)
    block = centre_block(descriptor, bent("H", "H", 1.0, 1.6, 70.0))[1, 0]  # centre C, pair {H, H}
    torch.testing.assert_close(block, block.transpose(0, 1))
    r1, r2 = 1.0, 1.6
    u = PolynomialCutoff(CUTOFF)
    width = descriptor.radial_width
    g1, g2 = bumps(r1, 3, 0.0, CUTOFF, width), bumps(r2, 3, 0.0, CUTOFF, width)
    radial = 0.5 * (torch.outer(g1, g2) + torch.outer(g2, g1)) * u(torch.tensor(r1)) * u(torch.tensor(r2))
    angular = bumps(math.cos(math.radians(70.0)), 4, -1.0, 1.0, descriptor.angular_width)
    torch.testing.assert_close(block, radial.unsqueeze(-1) * angular)


def test_collinear_triplets_have_finite_gradients():
    # theta = pi, where d theta / d cos is infinite: binning cos theta keeps forces finite.
    descriptor = ThreeBodyHistogram([1, 6], CUTOFF)
    data = graph(Atoms("HCH", positions=[[-1.1, 0, 0], [0, 0, 0], [1.1, 0, 0]]), 5.0)
    pos = data.pos.clone().requires_grad_(True)
    edge_vec = pos[data.edge_index[1]] - pos[data.edge_index[0]]
    (grad,) = torch.autograd.grad(descriptor(data.z, data.edge_index, data.edge_shift, edge_vec).sum(), pos)
    assert torch.isfinite(grad).all()
