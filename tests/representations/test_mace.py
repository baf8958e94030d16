"""MACE-specific checks; energy, forces and stress are covered by tests/test_contract.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from e3nn import o3
from e3nn.util.test import assert_equivariant
from torch import Tensor
from torch_geometric.data import Data

from gnnpot import build_model, testing
from gnnpot.nn import symmetric
from gnnpot.nn.symmetric import SymmetricContraction, generalised_cg
from gnnpot.representations.mace import MACE

BASIS = o3.Irreps("0e + 1o + 2e + 3o")  # MACE's atomic basis for max_ell = 3, one copy of each


def _graph(pos: Tensor, edge_index: Tensor, species: Tensor) -> Data:
    """The graph a family receives from ``Potential`` (molecule, no cell)."""
    edge_vec = pos[edge_index[1]] - pos[edge_index[0]]
    return Data(
        num_nodes=species.numel(),
        species=species,
        batch=torch.zeros(species.numel(), dtype=torch.long),
        edge_index=edge_index,
        edge_shift=torch.zeros(edge_index.shape[1], 3, dtype=torch.long),
        edge_vec=edge_vec,
        edge_len=torch.linalg.vector_norm(edge_vec, dim=-1),
    )


def _all_pairs(num: int) -> Tensor:
    i, j = torch.meshgrid(torch.arange(num), torch.arange(num), indexing="ij")
    keep = i != j
    return torch.stack([i[keep], j[keep]])


def _tiny(**hparams) -> MACE:
    torch.manual_seed(0)
    defaults = {"num_features": 3, "l_max": 2, "max_ell": 3, "num_rbf": 4, "radial_features": 8, "radial_layers": 1}
    return MACE(num_elements=2, cutoff=4.0, **{**defaults, **hparams}).double()


# -- the generalised Clebsch-Gordan coefficients ----------------------------------------------


def _symmetric_power_multiplicity(irreps: o3.Irreps, ir_out: o3.Irrep, nu: int) -> int:
    """How often ``ir_out`` occurs in the nu-th symmetric power of ``irreps``, from characters.

    An independent count of the symmetric couplings: integrate the character of Sym^nu(V) times
    that of ``ir_out`` over O(3) (rotation angle theta with Haar weight (1 - cos theta) / pi, and
    both cosets of the inversion).
    """
    theta = np.linspace(0.0, np.pi, 20001)[1:]

    def chi(order: int, angle: np.ndarray) -> np.ndarray:
        return np.sin((order + 0.5) * angle) / np.sin(0.5 * angle)

    def chi_v(power: int, proper: bool) -> np.ndarray:  # character of V at g^power
        sign = 1 if proper or power % 2 == 0 else -1  # (-R)^k is improper for odd k
        return sum((ir.p if sign < 0 else 1) * chi(ir.l, power * theta) for _, ir in irreps)

    total = 0.0
    for proper in (True, False):
        c1, c2, c3 = (chi_v(k, proper) for k in (1, 2, 3))
        sym = {1: c1, 2: (c1**2 + c2) / 2, 3: (c1**3 + 3 * c2 * c1 + 2 * c3) / 6}[nu]
        chi_out = chi(ir_out.l, theta) * (1 if proper else ir_out.p)
        total += np.trapezoid(sym * chi_out * (1 - np.cos(theta)) / np.pi, theta) / 2
    return round(total)


def _on_feature(basis: Tensor, a: Tensor) -> Tensor:
    """``U(a, ..., a)`` [2L+1, P] of a basis [2L+1, D, ..., D, P] and one feature ``a`` [D]."""
    while basis.dim() > 2:
        basis = torch.tensordot(basis, a, dims=([basis.dim() - 2], [0]))
    return basis


@pytest.mark.parametrize("nu", [1, 2, 3])
def test_generalised_cg_are_a_complete_symmetric_equivariant_basis(nu: int) -> None:
    torch.manual_seed(0)
    a = torch.randn(BASIS.dim, dtype=torch.float64)
    rotations = {"rotation": o3.rand_matrix(dtype=torch.float64)}
    rotations["reflection"] = -rotations["rotation"]
    for ir_out in map(o3.Irrep, ["0e", "1o", "2e", "3o", "1e", "0o"]):
        basis = generalised_cg(BASIS, ir_out, nu)
        paths = basis.shape[-1]
        assert basis.shape == (ir_out.dim, *[BASIS.dim] * nu, paths) and basis.dtype == torch.float64
        assert paths == _symmetric_power_multiplicity(BASIS, ir_out, nu), f"{ir_out}, nu={nu}: incomplete basis"
        if paths == 0:
            continue
        # symmetric in the nu inputs: under a swap and a cycle of them, which generate every order
        inputs = list(range(1, nu + 1))
        for order in (inputs[1:2] + inputs[:1] + inputs[2:], inputs[1:] + inputs[:1]):
            assert (basis.permute(0, *order, nu + 1) - basis).abs().max() < 1e-15
        # orthogonal, each of norm sqrt(2L + 1)
        flat = basis.reshape(-1, paths)
        torch.testing.assert_close(flat.T @ flat, ir_out.dim * torch.eye(paths, dtype=torch.float64))
        # equivariant: rotating A by its Wigner D matrices rotates each output by the output's
        for matrix in rotations.values():
            with testing.default_dtype(torch.float64):  # e3nn builds D matrices in the default dtype
                d_in, d_out = BASIS.D_from_matrix(matrix), ir_out.D_from_matrix(matrix)
            torch.testing.assert_close(_on_feature(basis, d_in @ a), d_out @ _on_feature(basis, a), rtol=0, atol=1e-12)


def test_redundant_couplings_are_removed() -> None:
    # mace-torch 0.3.16 (use_reduced_cg=False) keeps one weight per ordered coupling path: 23, 51
    # and 65 for 0e, 1o, 2e at nu = 3 (its U_matrix_real widths, also its weights_max shapes).
    # Only their symmetric parts act on A x A x A: 8, 12 and 14 independent ones.
    widths = {ir: [generalised_cg(BASIS, ir, nu).shape[-1] for nu in (1, 2, 3)] for ir in ("0e", "1o", "2e")}
    assert widths == {"0e": [1, 4, 8], "1o": [1, 3, 12], "2e": [1, 5, 14]}
    all_paths = {ir: len(symmetric._couplings(BASIS, 3, o3.Irrep(ir))) for ir in ("0e", "1o", "2e")}
    assert all_paths == {"0e": 23, "1o": 51, "2e": 65}


def test_coefficients_are_cached_and_not_saved(monkeypatch: pytest.MonkeyPatch) -> None:
    irreps_in, irreps_out = "3x0e + 3x1o + 3x2e", "3x0e + 3x1o"
    assert generalised_cg("0e + 1o + 2e", "1o", 3) is generalised_cg("0e + 1o + 2e", "1o", 3)
    with testing.default_dtype(torch.float64):
        first = SymmetricContraction(irreps_in, irreps_out, correlation=3, num_elements=2)

        def recompute(*args: object) -> None:
            raise AssertionError("the second build recomputed the coupling coefficients")

        monkeypatch.setattr(symmetric, "_couplings", recompute)
        second = SymmetricContraction(irreps_in, irreps_out, correlation=3, num_elements=2)
    assert second.coefficients is first.coefficients  # float64: the cached tensor itself
    assert second.coefficients is symmetric.monomial_plan("0e + 1o + 2e", "0e + 1o", 3).coefficients
    assert not any(name.startswith(("coefficients", "prefix", "factor")) for name in first.state_dict())
    # built in float32 and converted, or loaded from a float32 state dict: exact float64 values
    converted = SymmetricContraction(irreps_in, irreps_out, correlation=3, num_elements=2)
    assert converted.coefficients.dtype == torch.float32
    converted.double()
    assert torch.equal(converted.coefficients, first.coefficients)
    model = _tiny()
    model.load_state_dict(_tiny().float().state_dict())
    for module in model.modules():
        if isinstance(module, SymmetricContraction):
            assert module.coefficients.dtype == torch.float64
            assert torch.equal(module.coefficients, symmetric.monomial_plan(*module._coupling_key).coefficients)


def test_contraction_equals_the_dense_tensor_power() -> None:
    """The monomial shortcut gives sum_nu sum_p W[z, p, c] U_p . a_c^(x nu), written out densely."""
    torch.manual_seed(0)
    irreps_in, irreps_out, channels = o3.Irreps("2x0e + 2x1o + 2x2e"), o3.Irreps("2x0e + 2x1o + 2x2e"), 2
    module = SymmetricContraction(irreps_in, irreps_out, correlation=3, num_elements=3).double()
    x = torch.randn(4, irreps_in.dim, dtype=torch.float64)
    species = torch.tensor([0, 2, 1, 2])
    a = torch.cat([x[:, s].reshape(4, channels, ir.dim) for (_, ir), s in zip(irreps_in, irreps_in.slices())], -1)
    expected = []
    for (_, ir), weight in zip(irreps_out, module.weights):
        out, start = 0, 0
        for nu in (1, 2, 3):
            basis = generalised_cg("0e + 1o + 2e", ir, nu)
            power = torch.einsum("m...ip,nci->ncm...p", basis, a)  # one input axis at a time
            for _ in range(nu - 1):
                power = torch.einsum("ncm...ip,nci->ncm...p", power, a)
            w = weight[species][:, start : start + basis.shape[-1]]
            out = out + torch.einsum("ncmp,npc->ncm", power, w)
            start += basis.shape[-1]
        expected.append(out.reshape(4, -1))
    torch.testing.assert_close(module(x, species), torch.cat(expected, -1), rtol=1e-12, atol=1e-12)


def test_product_is_o3_equivariant() -> None:
    with testing.default_dtype(torch.float64):
        torch.manual_seed(0)
        module = SymmetricContraction("2x0e + 2x1o + 2x2e + 2x3o", "2x0e + 2x1o + 2x2e", 3, num_elements=2)
        species = torch.tensor([1, 0, 1])
        assert_equivariant(
            lambda x: module(x, species),
            args_in=[torch.randn(3, module.irreps_in.dim)],
            irreps_in=[module.irreps_in],
            irreps_out=[module.irreps_out],
            tolerance=1e-10,
        )
        with pytest.raises(ValueError, match="reaches 1e"):
            SymmetricContraction("2x0e", "2x1e", 3, num_elements=2)  # powers of scalars stay 0e
        with pytest.raises(ValueError, match="same number of channels"):
            SymmetricContraction("2x0e + 3x1o", "2x0e", 2, num_elements=2)


# -- the model ------------------------------------------------------------------------------


def _centre_features(model: MACE, neighbours: list[int]) -> Tensor:
    """Features of atom 0 (species 0) whose only edges come from ``neighbours`` (of atoms 1, 2)."""
    pos = torch.tensor([[0.0, 0.0, 0.0], [1.1, 0.2, -0.3], [-0.4, 1.3, 0.5]], dtype=torch.float64)
    edge_index = torch.tensor([[0] * len(neighbours), neighbours], dtype=torch.long).view(2, -1)
    return model(_graph(pos, edge_index, torch.tensor([0, 1, 1])))[0]


def test_correlation_one_is_two_body_and_higher_correlation_is_not() -> None:
    """With nu = 1 (one interaction) an atom's features are linear in sum_j phi(r_ij, z_j): no cross terms."""
    for correlation, additive in ((1, True), (2, False), (3, False)):
        model = _tiny(correlation=correlation, num_interactions=1, avg_num_neighbors=1.0)
        alone = _centre_features(model, [])
        one, two = _centre_features(model, [1]) - alone, _centre_features(model, [2]) - alone
        both = _centre_features(model, [1, 2]) - alone
        assert one.abs().max() > 1e-4 and two.abs().max() > 1e-4  # each neighbour does something
        cross = (both - one - two).abs().max()
        if additive:
            assert cross < 1e-12, f"correlation 1 has a three-body term {cross:.2e}"
        else:
            assert cross > 1e-4, f"correlation {correlation} has no three-body term"


def test_hidden_features_are_o3_equivariant() -> None:
    model = _tiny(num_interactions=3, correlation=3)
    species = torch.tensor([0, 1, 1, 0, 1])
    edge_index = _all_pairs(5)
    hidden = model.interactions[:-1]  # the last layer keeps only scalars
    captured: list[Tensor] = []
    for layer in hidden:
        layer.register_forward_hook(lambda module, args, out: captured.append(out))

    def features(pos: Tensor) -> tuple[Tensor, ...]:
        captured.clear()
        model(_graph(pos, edge_index, species))
        return tuple(captured)

    pos = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 1.2
    assert all(out.abs().max() > 1e-3 for out in features(pos))
    assert [layer.irreps_out for layer in model.interactions] == [
        o3.Irreps("3x0e + 3x1o + 3x2e"),
        o3.Irreps("3x0e + 3x1o + 3x2e"),
        o3.Irreps("3x0e"),
    ]
    with testing.default_dtype(torch.float64):
        assert_equivariant(
            features,
            args_in=[pos],
            irreps_in=["cartesian_points"],
            irreps_out=[layer.irreps_out for layer in hidden],
            tolerance=1e-12,
        )


def test_hyperparameters_are_checked() -> None:
    for bad in ({"correlation": 0}, {"correlation": 4}, {"l_max": -1}, {"max_ell": -1}, {"num_interactions": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            MACE(num_elements=2, cutoff=4.0, **bad)
    with pytest.raises(ValueError, match="avg_num_neighbors"):
        MACE(num_elements=2, cutoff=4.0, avg_num_neighbors=0.0)
    model = _tiny(avg_num_neighbors=3.5)
    assert float(model.state_dict()["avg_num_neighbors"]) == 3.5
    assert "correlation=3" in repr(model) and "max_ell=3" in repr(model)


# mace-torch's counts, measured with mace-torch 0.3.16 (venv of shared/peers/mace/setup.sh):
# mace.modules.ScaleShiftMACE built by build_model() of shared/peers/mace/bench.py with its PAPER
# and SMALL settings, z_table (1, 6, 8), atomic energies 0, avg_num_neighbors 10, then
# sum(p.numel() for p in model.parameters()).
MACE_TORCH_PARAMETERS = {"paper": 2_803_984, "small": 352_592}
SIZES = {
    "paper": {},  # the defaults: 256 channels, l_max 2, max_ell 3, correlation 3, 2 interactions
    "small": {"num_features": 64, "l_max": 1, "num_interactions": 3},
}


@pytest.mark.parametrize("size", sorted(SIZES))
def test_parameter_count_is_within_ten_percent_of_mace_torch(size: str) -> None:
    model = build_model("mace", cutoff=5.0, elements=["H", "C", "O"], **SIZES[size])
    count = sum(p.numel() for p in model.parameters())
    reference = MACE_TORCH_PARAMETERS[size]
    assert math.isclose(count, reference, rel_tol=0.10), f"{size}: gnnpot {count} vs mace-torch {reference}"
