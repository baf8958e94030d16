"""Sparse kernel (``kernel``) checks; energy, forces and stress are covered by tests/test_contract.py."""

import torch
from ase.build import molecule

from gnnpot import build_model, keys, testing
from gnnpot.data import AtomicData
from gnnpot.descriptors import SymmetryFunctions
from gnnpot.nn import AtomwiseReadout
from gnnpot.nn.readout import LinearReadout
from gnnpot.representations import family_graph, isolated_graph
from tests.representations.test_acsf import CUTOFF, check_locality, family_input, rattled_ethanol

ELEMENTS = [1, 6, 8]
E0 = {1: -13.6, 6: -1030.5, 8: -2040.1}


def kernel_model(num_inducing: int = 6):
    torch.manual_seed(0)
    model = build_model("kernel", cutoff=CUTOFF, elements=ELEMENTS, e0=E0, scale=0.7, num_inducing=num_inducing,
                        num_channels=3, num_radial=3, num_angular=2, zeta=3.0)  # fmt: skip
    return model.double().eval()


def test_energy_is_the_gap_sum_over_the_descriptor():
    """E = scale sum_i sum_m alpha_m (k(q_i, q_m) - k(q_iso, q_m)) + sum E0, from SymmetryFunctions directly.

    The inducing environments are six atoms of another ethanol; ``q = (1, log(1 + G)) / |...|``
    with ``G`` the descriptor's functions (one-hot channels hold each of them once, in another
    order, which a dot product does not see).
    """
    model = kernel_model()
    rep, alpha = model.potential.representation, model.potential.readout.weight.detach()
    reference, atoms = molecule("CH3CH2OH"), rattled_ethanol()
    reference.rattle(0.1, seed=5)
    graph, species = family_input(rep, reference, ELEMENTS)
    with torch.no_grad():
        rep.inducing.copy_(rep.descriptors(graph)[:6])
        rep.inducing_elements.copy_(torch.nn.functional.one_hot(species[:6], len(ELEMENTS)))
    model.eval()  # forget the cached isolated-atom baseline
    sf = rep.descriptor
    grids = [params.tolist() for params in (sf.g2_params, sf.g4_params, sf.g5_params)]
    descriptor = SymmetryFunctions(ELEMENTS, CUTOFF, *grids)

    def unit(structure):
        functions = descriptor.forward_data(AtomicData.from_atoms(structure, CUTOFF, dtype=torch.float64))
        q = torch.cat([torch.ones(len(structure), 1, dtype=torch.float64), functions.log1p()], dim=-1)
        return q / q.norm(dim=-1, keepdim=True)

    q, q_inducing = unit(atoms), unit(reference)[:6]
    own = torch.tensor([ELEMENTS.index(z) for z in atoms.numbers])
    same = (own.unsqueeze(1) == species[:6].unsqueeze(0)).double()
    kernel = (q @ q_inducing.T).pow(3.0) * same
    isolated = q_inducing[:, 0].pow(3.0) * same  # an isolated atom's q is (1, 0, ...)
    scale = model.potential.scale_shift.scale  # 0.7 as a float32 number, then float64
    expected = scale * ((kernel - isolated) @ alpha).sum() + sum(E0[int(z)] for z in atoms.numbers)
    (result,) = testing.evaluate(model, [atoms])
    assert abs(result[keys.ENERGY] - float(expected)) < 1e-10


def test_isolated_features_are_those_of_an_atom_without_neighbours():
    rep = kernel_model(num_inducing=9).potential.representation
    data = isolated_graph(torch.tensor(ELEMENTS))
    graph = family_graph(data[keys.ATOMIC_NUMBERS], data[keys.SPECIES], data[keys.EDGE_INDEX],
                         data[keys.EDGE_SHIFT], torch.zeros(0, 3, dtype=torch.float64), data[keys.BATCH],
                         prepared=rep.prepare(data))  # fmt: skip
    torch.testing.assert_close(rep(graph), rep.isolated_features(), rtol=0, atol=0)


def test_kernel_is_zero_across_elements_and_one_on_itself():
    rep = kernel_model(num_inducing=9).potential.representation
    graph, species = family_input(rep, rattled_ethanol(), ELEMENTS)
    features = rep(graph)
    inducing_species = rep.inducing_elements.argmax(dim=-1)
    other = species.unsqueeze(1) != inducing_species.unsqueeze(0)
    assert (features[other] == 0).all() and (features[~other] > 0).all() and (features <= 1).all()
    prior = rep.inducing_kernel()
    torch.testing.assert_close(prior.diagonal(), torch.ones(9, dtype=torch.float64))
    assert torch.linalg.eigvalsh(prior).min() > -1e-12  # a covariance


def test_the_family_gets_a_linear_readout_and_the_others_an_mlp():
    assert isinstance(kernel_model().potential.readout, LinearReadout)
    schnet = build_model("schnet", cutoff=CUTOFF, elements=ELEMENTS, **testing.tiny_hparams("schnet"))
    assert isinstance(schnet.potential.readout, AtomwiseReadout)


def test_energy_of_an_atom_depends_on_its_own_neighbourhood_only():
    check_locality("kernel")
