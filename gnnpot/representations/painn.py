"""PaiNN: polarizable atom interaction neural network (Schütt, Unke and Gastegger, ICML 2021).

Every atom carries invariant scalar features ``s`` [N, F] and equivariant vector features ``v``
[N, 3, F] (one 3-vector per channel). Each interaction is a message block, which passes scalar
and vector messages along edges with filters built from a radial basis, followed by an update
block, which mixes the channels of each atom and couples scalars and vectors through norms and
dot products. Vector features start at zero, so the first message block is what creates them.

Defaults follow the paper's MD17 setting: 128 features, 3 interactions, 20 sinc
(Bessel) radial functions ``sin(n pi r / r_c) / r``, cosine cutoff at 5 Å, SiLU activations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Data

from gnnpot import keys
from gnnpot.nn import BesselRBF, CosineCutoff, gather, pair_lengths, pair_mul, scatter_sum
from gnnpot.representations.base import Representation


def _reset_linear(module: nn.Module) -> None:
    """Xavier-uniform weights and zero biases for every ``nn.Linear`` inside ``module``."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


class PaiNNMessage(nn.Module):
    """Message block: ``s_i += sum_j ds_ij`` and ``v_i += sum_j dv_ij``.

    ``phi(s_j) * W(r_ij)`` gives three channel sets per edge: ``ds`` (scalar message), a gate on the
    neighbour's vectors ``v_j`` and a weight on the unit edge direction ``r_ij / |r_ij|``.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = int(num_features)
        self.context = nn.Sequential(
            nn.Linear(num_features, num_features), nn.SiLU(), nn.Linear(num_features, 3 * num_features)
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform weights, zero biases."""
        _reset_linear(self)

    def forward(
        self,
        s: Tensor,
        v: Tensor | None,
        edge_index: Tensor,
        filters: Tensor,
        direction: Tensor,
        paired: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """One message block.

        Args:
            s: [N, F] scalar features.
            v: [N, 3, F] vector features, or ``None`` when they are all zero (the first block);
                this skips gathering and gating zeros over every edge.
            edge_index: [2, E], row 0 centre i, row 1 neighbour j.
            filters: [E', 3F] radial filters ``W(r_ij)``, already multiplied by the envelope;
                one row per edge pair (E' = E // 2) when ``paired``, else per edge.
            direction: [E, 3] unit edge vectors.
            paired: edges follow the pair convention (:mod:`gnnpot.nn.pairs`).

        Returns:
            updated ``s`` [N, F] and ``v`` [N, 3, F].
        """
        centre, neighbour = edge_index[0], edge_index[1]
        num_atoms = s.shape[0]
        messages = pair_mul(gather(self.context(s), neighbour), filters, paired)
        ds, gate_v, gate_dir = messages.split(self.num_features, dim=-1)
        dv = direction.unsqueeze(-1) * gate_dir.unsqueeze(1)
        if v is not None:
            dv = dv + gather(v, neighbour) * gate_v.unsqueeze(1)
        dv = scatter_sum(dv, centre, num_atoms)
        v = dv if v is None else v + dv
        return s + scatter_sum(ds, centre, num_atoms), v


class PaiNNUpdate(nn.Module):
    """Update block: atom-wise channel mixing of scalars and vectors.

    With ``U v`` and ``V v`` two linear channel mixes of the vectors, ``a(s, |V v|)`` gives three
    gates: ``v += a_vv * U v`` and ``s += a_ss + a_sv * <U v, V v>``. The norm is
    ``sqrt(|V v|^2 + eps)``, which is smooth at ``v = 0`` (where every atom starts), so that the
    second derivatives needed for force training stay finite.

    Args:
        num_features: F.
        eps: added under the square root of the vector norm.
    """

    def __init__(self, num_features: int, eps: float = 1e-8) -> None:
        super().__init__()
        self.num_features = int(num_features)
        self.eps = float(eps)
        self.vector_mix = nn.Linear(num_features, 2 * num_features, bias=False)
        self.gates = nn.Sequential(
            nn.Linear(2 * num_features, num_features), nn.SiLU(), nn.Linear(num_features, 3 * num_features)
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform weights, zero biases."""
        _reset_linear(self)

    def forward(self, s: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """One update block.

        Args:
            s: [N, F] scalar features.
            v: [N, 3, F] vector features.

        Returns:
            Updated ``s`` [N, F] and ``v`` [N, 3, F].
        """
        uv, vv = self.vector_mix(v).split(self.num_features, dim=-1)
        norm = torch.sqrt(vv.pow(2).sum(dim=1) + self.eps)
        a_vv, a_sv, a_ss = self.gates(torch.cat([s, norm], dim=-1)).split(self.num_features, dim=-1)
        s = s + a_ss + a_sv * (uv * vv).sum(dim=1)
        v = v + a_vv.unsqueeze(1) * uv
        return s, v


class PaiNN(Representation):
    """PaiNN representation: ``forward(graph) -> [N, num_features]`` invariant scalar features.

    The radial basis and envelope are computed once per forward, and each layer's filters by one
    matrix product over the edges (pairs), before the message blocks run.

    Args:
        num_elements: size of the species embedding.
        cutoff: neighbour radius, Å.
        num_features: width F of the scalar and the vector features.
        num_interactions: number of message + update blocks.
        num_rbf: number of Bessel radial functions on ``(0, cutoff)``.
        shared_filters: one radial filter network for all interactions instead of one per layer.
        eps: added under the square root of the vector norms in the update blocks.
    """

    tiny_hparams = {"num_features": 8, "num_interactions": 2, "num_rbf": 6}

    def __init__(
        self,
        num_elements: int,
        cutoff: float,
        num_features: int = 128,
        num_interactions: int = 3,
        num_rbf: int = 20,
        shared_filters: bool = False,
        eps: float = 1e-8,
    ) -> None:
        super().__init__(cutoff, num_features)
        if num_interactions < 1:
            raise ValueError(f"num_interactions must be >= 1, got {num_interactions!r}")
        self.num_interactions = int(num_interactions)
        self.shared_filters = bool(shared_filters)
        self.embedding = nn.Embedding(num_elements, num_features)
        self.rbf = BesselRBF(num_rbf, cutoff)
        self.envelope = CosineCutoff(cutoff)
        num_filter_sets = 1 if shared_filters else num_interactions
        self.filter_net = nn.Linear(num_rbf, num_filter_sets * 3 * num_features)
        self.messages = nn.ModuleList(PaiNNMessage(num_features) for _ in range(num_interactions))
        self.updates = nn.ModuleList(PaiNNUpdate(num_features, eps) for _ in range(num_interactions))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-initialise the embedding, the filters and every block."""
        self.embedding.reset_parameters()
        _reset_linear(self.filter_net)
        for message, update in zip(self.messages, self.updates, strict=True):
            message.reset_parameters()
            update.reset_parameters()

    def features(self, graph: Data) -> tuple[Tensor, Tensor]:
        """Scalar features [N, F] (invariant) and vector features [N, 3, F] (rotate with the input)."""
        edge_index, edge_vec, edge_len = graph[keys.EDGE_INDEX], graph[keys.EDGE_VEC], graph[keys.EDGE_LEN]
        direction = edge_vec / edge_len.unsqueeze(-1)
        paired = bool(graph.get(keys.EDGE_PAIRED, False))
        lengths = pair_lengths(edge_len, paired)  # filters depend on the length: one per edge pair
        basis = self.rbf(lengths)
        envelope = self.envelope(lengths).unsqueeze(-1)
        # One product per layer with its block of rows of the filter weight, not one [E', L * 3F]
        # product split afterwards: the split views of that matrix were copied to contiguous
        # [E', 3F] tensors (and their gradients back), a per-edge copy per layer at every step.
        width = 3 * self.num_features
        blocks = zip(self.filter_net.weight.split(width), self.filter_net.bias.split(width), strict=True)
        layer_filters = [F.linear(basis, weight, bias) * envelope for weight, bias in blocks]
        if self.shared_filters:
            layer_filters = layer_filters * self.num_interactions
        s = self.embedding(graph[keys.SPECIES])
        v: Tensor | None = None  # vectors start at zero: the first message block creates them
        for message, update, w in zip(self.messages, self.updates, layer_filters, strict=True):
            s, v = message(s, v, edge_index, w, direction, paired)
            s, v = update(s, v)
        return s, v

    def forward(self, graph: Data) -> Tensor:
        """Invariant scalar features [N, num_features] (see :meth:`features`)."""
        return self.features(graph)[0]

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(num_features={self.num_features}, "
            f"num_interactions={self.num_interactions}, num_rbf={self.rbf.num_rbf}, "
            f"cutoff={self.cutoff}, shared_filters={self.shared_filters})"
        )
