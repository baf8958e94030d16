"""NequIP: E(3)-equivariant convolutions on e3nn irreps features (Batzner et al., 2022).

Each interaction gathers the neighbours' irreps features, couples them with the spherical harmonics
of the edge direction in an e3nn tensor product ("uvu": each input channel keeps its own path, no
channel mixing) whose per-edge weights come from a radial MLP of the enveloped Bessel basis, sums
the messages on the centre atom, divides the sum by ``sqrt(avg_num_neighbors)`` (NequIP's choice: a
sum of ``n`` unit-variance messages has variance ``n``), mixes channels with a linear layer, adds a
species-dependent self-connection and applies a gated nonlinearity. The invariant output is the
``num_features`` even scalars (``0e``) of the last interaction, mixed by one e3nn linear layer.
Channels that cannot reach those scalars are not computed (see ``_layer_targets``); NequIP computes
and discards them.

Defaults follow the paper's revised-MD17 input files (github.com/mir-group/nequip-input-files,
``revmd17/revmd17-*-n950-l3.yaml``): 5 interactions, 64 channels of every irrep up to ``l_max = 3``
in both parities, 8 trainable Bessel functions times the polynomial envelope with ``p = 6``, radial
MLPs with 3 hidden layers of 64 (SiLU, no biases), SiLU on even and tanh on odd scalars and gates,
self-connection on, no extra resnet update, ``avg_num_neighbors = 10``, and a 4 Å cutoff.

Symmetry: every irrep carries its true parity (the edge harmonics are ``0e + 1o + 2e + 3o``), so the
internal features are O(3)-equivariant with ``parity`` on or off, and the energy, built from ``0e``
scalars only, is invariant under every rotation, reflection and inversion in both cases.
``parity=False`` (NequIP's ``parity: false``) keeps only the irreps of natural parity ``(-1)^l``:
half the channels and fewer tensor-product paths (e.g. no ``1o x 1o -> 1e`` cross product). It is
a smaller O(3) model, not an SO(3)-only one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from e3nn import o3
from e3nn.nn import FullyConnectedNet, Gate
from torch import Tensor, nn
from torch_geometric.data import Data

from gnnpot import keys
from gnnpot.data.stats import mean_num_neighbors
from gnnpot.nn import BesselRBF, PolynomialCutoff, gather, materialize, pair_expand, scatter_sum
from gnnpot.nn.irreps import ExactWigner3j, check_irreps, edge_basis, uvu_convolution
from gnnpot.representations.base import Representation

_ACTIVATIONS = {1: F.silu, -1: torch.tanh}  # by parity: SiLU on even scalars, tanh on odd ones


def _hidden_irreps(num_features: int, l_max: int, parity: bool) -> o3.Irreps:
    """``num_features`` channels of every irrep up to ``l_max``: both parities or only ``(-1)^l``."""
    return o3.Irreps(
        [(num_features, (order, p)) for order in range(l_max + 1) for p in ((1, -1) if parity else ((-1) ** order,))]
    )


def _layer_targets(
    hidden: o3.Irreps, irreps_sh: o3.Irreps, scalars: o3.Irreps, num_interactions: int
) -> list[o3.Irreps]:
    """The irreps each layer aims for, pruned backwards from the output.

    Only the ``0e`` scalars of the last layer reach the output, so the last layer computes nothing
    else; an earlier layer drops the irreps that no path of the next layer (tensor product with the
    edge harmonics, or the irrep-preserving linears) turns into something the next layer keeps. With
    ``parity`` this removes the odd-parity half of the second-to-last layer. The energy is the same
    function of the weights that remain: the pruned channels could never influence it.
    """
    targets = [scalars]
    for _ in range(num_interactions - 1):
        wanted = targets[0]
        useful = [
            (mul, ir)
            for mul, ir in hidden
            if ir in wanted or any(ir_out in wanted for _, ir_sh in irreps_sh for ir_out in ir * ir_sh)
        ]
        targets.insert(0, o3.Irreps(useful))
    return targets


def _reachable(irreps_in: o3.Irreps, irreps_sh: o3.Irreps, ir_out: o3.Irrep) -> bool:
    """Whether some path of ``irreps_in x irreps_sh`` produces ``ir_out``."""
    return any(ir_out in ir_in * ir_sh for _, ir_in in irreps_in for _, ir_sh in irreps_sh)


class _Interaction(nn.Module):
    """One NequIP layer: linear, "uvu" convolution with radial weights, linear, self-connection, gate.

    Args:
        irreps_in: irreps of the node features coming in.
        irreps_sh: irreps of the edge spherical harmonics.
        irreps_target: the irreps this layer aims for; those no path reaches are dropped.
        num_elements: number of species (the self-connection is species-dependent).
        num_rbf: width of the radial embedding.
        radial_features: hidden width of the radial MLP.
        radial_layers: number of hidden layers of the radial MLP.
    """

    def __init__(
        self,
        irreps_in: o3.Irreps,
        irreps_sh: o3.Irreps,
        irreps_target: o3.Irreps,
        num_elements: int,
        num_rbf: int,
        radial_features: int,
        radial_layers: int,
    ) -> None:
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_in)
        gate_ir = o3.Irrep("0e")
        if not _reachable(self.irreps_in, irreps_sh, gate_ir):
            raise ValueError(f"no tensor-product path from {self.irreps_in} x {irreps_sh} gives the 0e gates")
        kept = o3.Irreps([(mul, ir) for mul, ir in irreps_target if _reachable(self.irreps_in, irreps_sh, ir)])
        scalars = o3.Irreps([(mul, ir) for mul, ir in kept if ir.l == 0])
        gated = o3.Irreps([(mul, ir) for mul, ir in kept if ir.l > 0])
        self.gate = Gate(
            scalars,
            [_ACTIVATIONS[ir.p] for _, ir in scalars],
            o3.Irreps([(mul, gate_ir) for mul, _ in gated]),
            [_ACTIVATIONS[gate_ir.p]] * len(gated),
            gated,
        )
        irreps_conv = self.gate.irreps_in  # scalars + gates + gated, what the convolution must produce
        self.irreps_out = self.gate.irreps_out

        # "uvu": every input channel keeps its own path to each output irrep the gate wants.
        conv = uvu_convolution(self.irreps_in, irreps_sh, irreps_conv)
        irreps_mid = conv.irreps_out

        self.linear_in = o3.Linear(self.irreps_in, self.irreps_in)
        self.conv = conv
        hidden = [radial_features] * radial_layers
        self.radial = FullyConnectedNet([num_rbf, *hidden, self.conv.weight_numel], F.silu)
        self.linear_out = o3.Linear(irreps_mid.simplify(), irreps_conv)
        self.self_connection = o3.FullyConnectedTensorProduct(
            self.irreps_in, o3.Irreps(f"{num_elements}x0e"), irreps_conv
        )
        check_irreps(irreps_conv, self.linear_out.irreps_out, "linear after the convolution")
        check_irreps(irreps_conv, self.self_connection.irreps_out, "self-connection")

    def reset_parameters(self) -> None:
        """Unit-normal weights (e3nn draws every weight from N(0, 1) and normalises paths in the forward)."""
        for parameter in self.parameters():
            nn.init.normal_(parameter)

    def forward(
        self,
        x: Tensor,
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
            one_hot: [N, num_elements] one-hot species.
            edge_index: [2, E], row 0 centre i, row 1 neighbour j.
            sh: [E, irreps_sh.dim] spherical harmonics of the edge directions.
            radial: [E', num_rbf] enveloped radial basis; one row per edge pair (E' = E // 2) when
                ``paired``, else per edge.
            norm: [] message scale, ``1 / sqrt(avg_num_neighbors)``.
            paired: edges follow the pair convention.

        Returns:
            [N, irreps_out.dim] updated node features.
        """
        # [E, weight_numel], 0 at the cutoff (no biases, silu(0) = 0); the MLP runs once per pair
        weight = pair_expand(self.radial(radial), paired)
        self_connection = self.self_connection(x, one_hot)
        messages = self.conv(gather(self.linear_in(x), edge_index[1]), sh, weight)
        x = materialize(scatter_sum(messages, edge_index[0], x.shape[0])) * norm
        return self.gate(self.linear_out(x) + self_connection)


class NequIP(ExactWigner3j, Representation):
    """NequIP representation: ``forward(graph) -> [N, num_features]`` invariant features.

    Args:
        num_elements: number of species.
        cutoff: neighbour radius, Å.
        num_features: channels of each irrep (multiplicity), and width of the invariant output.
        num_interactions: number of interaction layers.
        num_rbf: number of Bessel functions of the edge length.
        l_max: highest rotation order of the features and of the edge spherical harmonics.
        parity: keep both parities of every irrep (True) or only the natural one ``(-1)^l``.
        avg_num_neighbors: messages summed on an atom are divided by its square root; set it from
            the training data (mean edges per atom; a trainer fills it when it is ``"auto"``).
            ``None`` means no normalisation. Saved as a buffer.
        radial_features: hidden width of the radial MLPs.
        radial_layers: number of hidden layers of the radial MLPs.
        polynomial_p: exponent of the polynomial envelope.
    """

    tiny_hparams = {"num_features": 4, "num_interactions": 2, "num_rbf": 4, "l_max": 2}
    data_statistics = {"avg_num_neighbors": mean_num_neighbors}

    def __init__(
        self,
        num_elements: int,
        cutoff: float,
        num_features: int = 64,
        num_interactions: int = 5,
        num_rbf: int = 8,
        l_max: int = 3,
        parity: bool = True,
        avg_num_neighbors: float | None = 10.0,
        radial_features: int = 64,
        radial_layers: int = 3,
        polynomial_p: int = 6,
    ) -> None:
        super().__init__(cutoff, num_features)
        if l_max < 0:
            raise ValueError(f"l_max must be >= 0, got {l_max!r}")
        if num_interactions < 1:
            raise ValueError(f"num_interactions must be >= 1, got {num_interactions!r}")
        if avg_num_neighbors is not None and not avg_num_neighbors > 0:
            raise ValueError(f"avg_num_neighbors must be > 0 or None, got {avg_num_neighbors!r}")
        self.num_elements = int(num_elements)
        self.l_max = int(l_max)
        self.parity = bool(parity)
        self.register_buffer("avg_num_neighbors", torch.tensor(float(avg_num_neighbors or 1.0)))

        self.embedding = nn.Embedding(num_elements, num_features)
        self.rbf = BesselRBF(num_rbf, cutoff, trainable=True)
        self.envelope = PolynomialCutoff(cutoff, polynomial_p)
        self.irreps_sh = o3.Irreps.spherical_harmonics(l_max)  # 0e + 1o + 2e + ...
        self.spherical_harmonics = o3.SphericalHarmonics(self.irreps_sh, normalize=True, normalization="component")

        scalars = o3.Irreps(f"{num_features}x0e")
        targets = _layer_targets(_hidden_irreps(num_features, l_max, parity), self.irreps_sh, scalars, num_interactions)
        irreps = scalars  # the species embedding
        self.interactions = nn.ModuleList()
        for k, target in enumerate(targets):
            layer = _Interaction(irreps, self.irreps_sh, target, num_elements, num_rbf, radial_features, radial_layers)
            check_irreps(irreps, layer.irreps_in, f"interaction {k} input")
            self.interactions.append(layer)
            irreps = layer.irreps_out
        self.output = o3.Linear(irreps, scalars)
        check_irreps(scalars, self.output.irreps_out, "output")
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Unit-normal weights everywhere, as e3nn expects, and Bessel frequencies n pi / cutoff."""
        nn.init.normal_(self.embedding.weight)  # unit-variance scalars, as e3nn's normalisation expects
        with torch.no_grad():
            freqs = torch.arange(1, self.rbf.num_rbf + 1, dtype=self.rbf.freqs.dtype) * math.pi / self.cutoff
            self.rbf.freqs.copy_(freqs)
        for interaction in self.interactions:
            interaction.reset_parameters()
        for parameter in self.output.parameters():
            nn.init.normal_(parameter)

    def forward(self, graph: Data) -> Tensor:
        """Invariant features [N, num_features]: the ``0e`` scalars of the last interaction, mixed."""
        species, edge_index = graph[keys.SPECIES], graph[keys.EDGE_INDEX]
        sh, radial, paired = edge_basis(graph, self.spherical_harmonics, self.rbf, self.envelope)
        norm = self.avg_num_neighbors.to(sh.dtype).rsqrt()
        x = self.embedding(species)
        one_hot = F.one_hot(species, self.num_elements).to(x.dtype)
        for interaction in self.interactions:
            x = interaction(x, one_hot, edge_index, sh, radial, norm, paired)
        return self.output(x)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(num_features={self.num_features}, "
            f"num_interactions={len(self.interactions)}, num_rbf={self.rbf.num_rbf}, l_max={self.l_max}, "
            f"parity={self.parity}, avg_num_neighbors={float(self.avg_num_neighbors):g}, cutoff={self.cutoff})"
        )
