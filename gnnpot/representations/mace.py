"""MACE: equivariant message passing with many-body messages (Batatia et al., NeurIPS 2022).

Each interaction builds, on every atom i, an equivariant *atomic basis* and raises it to a
symmetric *product basis*:

    A_i = W_A sum_j R(r_ij) Y(r_ij / |r_ij|) ⊗ (W_up h_j) / avg_num_neighbors
    B_i = sum_(nu <= correlation) sum_p W[z_i, nu, p] U_nu,p · A_i^(⊗nu)     (channel by channel)
    h_i' = W_B B_i + W_self[z_i] h_i

``R`` is a radial MLP (no biases) of the Bessel basis times the polynomial envelope, giving one
weight per tensor-product path and channel; ``Y`` the spherical harmonics up to ``max_ell``; ``⊗``
an e3nn "uvu" tensor product (each channel keeps its own path); ``U`` the generalised
Clebsch-Gordan coefficients of :mod:`gnnpot.nn.symmetric`; ``W[z_i]`` and ``W_self[z_i]`` weights
chosen by the centre atom's species. With ``correlation = nu`` a message carries (nu + 1)-body
terms, so two interactions see far beyond two-body: MACE's point. Nothing here is nonlinear
except the radial MLP and the product itself. Each interaction's ``num_features`` invariant
(``0e``) channels are mixed by an e3nn linear layer, and the family returns the sum over the
interactions (MACE reads out every layer: linearly, then with an MLP at the end; here the
shared ``AtomwiseReadout`` is that MLP).

Irreps: features ``C x 0e + C x 1o + C x 2e`` (``l_max = 2``, natural parity ``(-1)^l``), atomic
basis ``C x (0e + 1o + 2e + 3o)`` (the edge harmonics' irreps, ``max_ell = 3``), and the last
interaction computes its ``0e`` part only. Every irrep carries its true parity, so the energy
is invariant under rotations, reflections and inversion.

Defaults follow the paper's rMD17 setting (its authors' command line for reproducing the paper,
github.com/ACEsuit/mace issue #57): 256 channels, ``l_max = 2``, ``max_ell = 3``,
``correlation = 3``, 2 interactions, 8 Bessel functions (fixed frequencies), envelope ``p = 5``,
radial MLP 3 x 64 (SiLU), 5 Å cutoff. ``avg_num_neighbors`` comes from the training data.

Parameters for H, C, O (``cutoff = 5``, shared readout included), against
``mace.modules.ScaleShiftMACE`` of mace-torch 0.3.16 built as in ``shared/peers/mace/bench.py``
(its ``sum(p.numel() for p in model.parameters())``):
    paper (256 channels, l_max 2, 2 interactions): gnnpot 2,867,713, mace-torch 2,803,984 (+2.3 %);
    small (64 channels, l_max 1, 3 interactions): gnnpot 341,057, mace-torch 352,592 (-3.3 %).
Everything else matching, the differences are: mace-torch keeps one product weight per ordered
coupling path of ``A^(⊗nu)`` (1 + 4 + 23, 1 + 6 + 51 and 1 + 7 + 65 for 0e, 1o, 2e), but only the
symmetric part of each acts on a symmetric power; here the redundant ones are removed
(1 + 4 + 8, 1 + 3 + 12, 1 + 5 + 14): 47,616 product weights instead of 143,616 at paper size.
Against that, each interaction's readout here is ``C x C`` (mace-torch: ``C x 1``, and
``C -> 16 -> 1`` for the last) and the shared readout adds ``C -> C/2 -> 1``: 164,097 readout
weights instead of 4,368.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from e3nn import o3
from e3nn.nn import FullyConnectedNet
from torch import Tensor, nn
from torch_geometric.data import Data

from gnnpot import keys
from gnnpot.data.stats import mean_num_neighbors
from gnnpot.nn import BesselRBF, PolynomialCutoff, gather, materialize, pair_expand, scatter_sum
from gnnpot.nn.irreps import ExactWigner3j, check_irreps, edge_basis, uvu_convolution
from gnnpot.nn.symmetric import SymmetricContraction, generalised_cg
from gnnpot.representations.base import Representation

MAX_CORRELATION = 3  # the paper's; nu = 4 would build its coefficients from dense D^4-sized couplings


def _reachable_by_product(irreps_a: o3.Irreps, ir: o3.Irrep, correlation: int) -> bool:
    """Whether some power of ``irreps_a`` up to ``correlation`` has a symmetric coupling to ``ir``."""
    single = o3.Irreps([(1, ir_a) for _, ir_a in irreps_a])
    return any(generalised_cg(single, ir, nu).shape[-1] > 0 for nu in range(1, correlation + 1))


class _Interaction(nn.Module):
    """One MACE layer: atomic basis A, product basis B, linear, species-dependent self-connection.

    Args:
        irreps_in: irreps of the node features coming in.
        irreps_sh: irreps of the edge spherical harmonics.
        irreps_target: the irreps this layer aims for; those no product reaches are dropped.
        num_features: channels C of the atomic basis (``C x`` each harmonic irrep).
        num_elements: number of species.
        correlation: highest order of the symmetric product.
        num_rbf: width of the radial embedding.
        radial_features: hidden width of the radial MLP.
        radial_layers: number of hidden layers of the radial MLP.
    """

    def __init__(
        self,
        irreps_in: o3.Irreps,
        irreps_sh: o3.Irreps,
        irreps_target: o3.Irreps,
        num_features: int,
        num_elements: int,
        correlation: int,
        num_rbf: int,
        radial_features: int,
        radial_layers: int,
    ) -> None:
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_in)
        # "uvu" paths from each input channel and harmonic to the atomic basis C x (irreps of Y)
        conv = uvu_convolution(self.irreps_in, irreps_sh, o3.Irreps([(num_features, ir) for _, ir in irreps_sh]))
        irreps_mid = conv.irreps_out
        self.irreps_a = o3.Irreps([(num_features, ir) for _, ir in irreps_mid.simplify()])
        kept = [(mul, ir) for mul, ir in irreps_target if _reachable_by_product(self.irreps_a, ir, correlation)]
        self.irreps_out = o3.Irreps(kept)

        self.linear_up = o3.Linear(self.irreps_in, self.irreps_in)
        self.conv = conv
        self.radial = FullyConnectedNet([num_rbf, *[radial_features] * radial_layers, self.conv.weight_numel], F.silu)
        self.linear_a = o3.Linear(irreps_mid.simplify(), self.irreps_a)
        self.product = SymmetricContraction(self.irreps_a, self.irreps_out, correlation, num_elements)
        self.linear_b = o3.Linear(self.irreps_out, self.irreps_out)
        self.self_connection = o3.FullyConnectedTensorProduct(
            self.irreps_in, o3.Irreps(f"{num_elements}x0e"), self.irreps_out
        )
        check_irreps(self.irreps_a, self.linear_a.irreps_out, "atomic basis")
        check_irreps(self.irreps_out, self.self_connection.irreps_out, "self-connection")

    def reset_parameters(self) -> None:
        """Unit-normal weights (e3nn normalises paths in the forward); the product resets its own."""
        for name, parameter in self.named_parameters():
            if not name.startswith("product."):
                nn.init.normal_(parameter)
        self.product.reset_parameters()

    def forward(
        self,
        x: Tensor,
        species: Tensor,
        one_hot: Tensor,
        edge_index: Tensor,
        sh: Tensor,
        radial: Tensor,
        norm: Tensor,
        paired: bool = False,
    ) -> Tensor:
        """One interaction.

        Args:
            x: [N, irreps_in.dim] node features.
            species: [N] species index.
            one_hot: [N, num_elements] one-hot species.
            edge_index: [2, E], row 0 centre i, row 1 neighbour j.
            sh: [E, irreps_sh.dim] spherical harmonics of the edge directions.
            radial: [E', num_rbf] enveloped radial basis; one row per edge pair (E' = E // 2) when
                ``paired``, else per edge.
            norm: [] message scale, ``1 / avg_num_neighbors``.
            paired: edges follow the pair convention.

        Returns:
            [N, irreps_out.dim] updated node features.
        """
        # [E, weight_numel], 0 at the cutoff (no biases, silu(0) = 0); the MLP runs once per pair
        weight = pair_expand(self.radial(radial), paired)
        messages = self.conv(gather(self.linear_up(x), edge_index[1]), sh, weight)
        a = self.linear_a(materialize(scatter_sum(messages, edge_index[0], x.shape[0]))) * norm
        return self.linear_b(self.product(a, species)) + self.self_connection(x, one_hot)


class MACE(ExactWigner3j, Representation):
    """MACE representation: ``forward(graph) -> [N, num_features]`` invariant features.

    Args:
        num_elements: number of species.
        cutoff: neighbour radius, Å.
        num_features: channels C of every irrep, and width of the invariant output.
        l_max: highest rotation order of the hidden features (``C x 0e + C x 1o + ...``).
        max_ell: highest rotation order of the edge spherical harmonics (and the atomic basis).
        correlation: highest order nu of the symmetric product (1 to 3): (nu + 1)-body messages.
        num_interactions: number of interaction layers.
        num_rbf: number of Bessel functions of the edge length.
        avg_num_neighbors: the summed messages are divided by it; set it from the training data
            (mean edges per atom; a trainer fills it when it is ``"auto"``). ``None`` means 1.
            Saved as a buffer.
        radial_features: hidden width of the radial MLPs.
        radial_layers: number of hidden layers of the radial MLPs.
        polynomial_p: exponent of the polynomial envelope.
    """

    tiny_hparams = {
        "num_features": 4,
        "l_max": 1,
        "max_ell": 2,
        "correlation": 3,
        "num_interactions": 2,
        "num_rbf": 4,
        "radial_features": 8,
        "radial_layers": 1,
    }
    data_statistics = {"avg_num_neighbors": mean_num_neighbors}

    def __init__(
        self,
        num_elements: int,
        cutoff: float,
        num_features: int = 256,
        l_max: int = 2,
        max_ell: int = 3,
        correlation: int = 3,
        num_interactions: int = 2,
        num_rbf: int = 8,
        avg_num_neighbors: float | None = 10.0,
        radial_features: int = 64,
        radial_layers: int = 3,
        polynomial_p: int = 5,
    ) -> None:
        super().__init__(cutoff, num_features)
        if l_max < 0:
            raise ValueError(f"l_max must be >= 0, got {l_max!r}")
        if max_ell < 0:
            raise ValueError(f"max_ell must be >= 0, got {max_ell!r}")
        if not 1 <= correlation <= MAX_CORRELATION:
            raise ValueError(f"correlation must be in 1..{MAX_CORRELATION}, got {correlation!r}")
        if num_interactions < 1:
            raise ValueError(f"num_interactions must be >= 1, got {num_interactions!r}")
        if avg_num_neighbors is not None and not avg_num_neighbors > 0:
            raise ValueError(f"avg_num_neighbors must be > 0 or None, got {avg_num_neighbors!r}")
        self.num_elements = int(num_elements)
        self.l_max, self.max_ell, self.correlation = int(l_max), int(max_ell), int(correlation)
        self.register_buffer("avg_num_neighbors", torch.tensor(float(avg_num_neighbors or 1.0)))

        self.embedding = nn.Embedding(num_elements, num_features)
        self.rbf = BesselRBF(num_rbf, cutoff)  # fixed frequencies n pi / cutoff, as MACE
        self.envelope = PolynomialCutoff(cutoff, polynomial_p)
        self.irreps_sh = o3.Irreps.spherical_harmonics(max_ell)  # 0e + 1o + 2e + 3o
        self.spherical_harmonics = o3.SphericalHarmonics(self.irreps_sh, normalize=True, normalization="component")

        scalars = o3.Irreps(f"{num_features}x0e")
        hidden = o3.Irreps([(num_features, (order, (-1) ** order)) for order in range(l_max + 1)])
        irreps = scalars  # the species embedding
        self.interactions = nn.ModuleList()
        self.readouts = nn.ModuleList()
        for k in range(num_interactions):
            last = k == num_interactions - 1  # feeds only its readout: its 0e are all it needs
            layer = _Interaction(
                irreps,
                self.irreps_sh,
                scalars if last else hidden,
                num_features=num_features,
                num_elements=num_elements,
                correlation=correlation,
                num_rbf=num_rbf,
                radial_features=radial_features,
                radial_layers=radial_layers,
            )
            self.interactions.append(layer)
            self.readouts.append(o3.Linear(layer.irreps_out, scalars))
            check_irreps(scalars, self.readouts[-1].irreps_out, f"readout {k}")
            irreps = layer.irreps_out
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Unit-normal weights as e3nn expects; the products scale theirs by the number of paths."""
        nn.init.normal_(self.embedding.weight)
        for interaction in self.interactions:
            interaction.reset_parameters()
        for readout in self.readouts:
            for parameter in readout.parameters():
                nn.init.normal_(parameter)

    def forward(self, graph: Data) -> Tensor:
        """Invariant features [N, num_features]: the sum of every interaction's mixed ``0e`` channels."""
        species, edge_index = graph[keys.SPECIES], graph[keys.EDGE_INDEX]
        sh, radial, paired = edge_basis(graph, self.spherical_harmonics, self.rbf, self.envelope)
        norm = self.avg_num_neighbors.to(sh.dtype).reciprocal()
        x = self.embedding(species)
        one_hot = F.one_hot(species, self.num_elements).to(x.dtype)
        features = []
        for interaction, readout in zip(self.interactions, self.readouts):
            x = interaction(x, species, one_hot, edge_index, sh, radial, norm, paired)
            features.append(readout(x))
        return torch.stack(features).sum(0)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(num_features={self.num_features}, l_max={self.l_max}, "
            f"max_ell={self.max_ell}, correlation={self.correlation}, num_interactions={len(self.interactions)}, "
            f"num_rbf={self.rbf.num_rbf}, avg_num_neighbors={float(self.avg_num_neighbors):g}, cutoff={self.cutoff})"
        )
