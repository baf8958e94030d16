"""DimeNet++: directional message passing over edges and triplets (Klicpera et al., 2020).

Messages live on edges ``i -> j``. Each interaction updates a message from the messages of the
edges ``j -> k`` through a spherical basis of the distance ``|jk|`` and the angle at ``j``
(spherical Bessel functions times Legendre polynomials, as in DimeNet). Output blocks sum the
messages on each atom; the family returns the sum of all output blocks, [N, num_features].

Defaults follow DimeNet++ (Klicpera, Giri, Margraf, Günnemann, "Fast and Uncertainty-Aware
Directional Message Passing for Non-Equilibrium Molecules", 2020, the setting used for MD17):
128 features, 4 interaction blocks, int_emb_size 64, basis_emb_size 8, out_emb_size 256,
7 spherical x 6 radial basis functions, envelope exponent 5, one residual layer before and two
after the skip connection, three dense layers per output block, swish activations.

Deviations: the output blocks end in ``num_features`` channels instead of the target count (the
shared readout maps them to energies) and their last layer is Glorot-orthogonal, not zero; the
radial part of the spherical basis is ``N_ln j_l(z_ln r / r_c) u(r / r_c)`` as in the paper's
equations, without the extra ``1 / r`` of the reference code.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Data

from gnnpot import keys
from gnnpot.nn import BesselRBF, PolynomialCutoff, gather, scatter_sum
from gnnpot.nn.triplets import build_triplets
from gnnpot.representations.base import Representation

# --- spherical Bessel functions j_l, all orders at once ------------------------------------------
# j_l(x) is evaluated by its power series below x = l + 1 and by upward recurrence from
# j_0 = sin(x)/x and j_1 above it, where the recurrence is stable. Both branches are smooth and
# their inputs are clamped apart, so first and second derivatives are finite everywhere.


def _series_table(num_orders: int, tol: float = 1e-17) -> tuple[Tensor, Tensor]:
    """Thresholds [L] and power-series coefficients [L, M] (float64) of ``j_l`` on ``[0, l + 1]``.

    ``j_l(x) = t^l sum_k a_lk (t^2)^k`` with ``t = x / (l + 1)`` in [0, 1], so the Horner sum and
    its derivatives stay bounded in float32 as well.
    """
    thresholds = [float(order + 1) for order in range(num_orders)]
    rows = []
    for order, thr in enumerate(thresholds):
        # c_0 = thr^l / (2l + 1)!!, c_{k+1} / c_k = -thr^2 / (2 (k + 1) (2l + 2k + 3)).
        coeff = thr**order / math.prod(range(1, 2 * order + 2, 2))
        row = [coeff]
        k = 0
        while abs(coeff) > tol * abs(row[0]):
            coeff *= -(thr**2) / (2 * (k + 1) * (2 * order + 2 * k + 3))
            row.append(coeff)
            k += 1
        rows.append(row)
    width = max(len(row) for row in rows)
    table = torch.zeros(num_orders, width, dtype=torch.float64)
    for order, row in enumerate(rows):
        table[order, : len(row)] = torch.tensor(row, dtype=torch.float64)
    return torch.tensor(thresholds, dtype=torch.float64), table


def _spherical_jn(x: Tensor, thresholds: Tensor, coeffs: Tensor) -> Tensor:
    """``j_l(x[..., l, :])`` for every order l: x [..., L, K] -> [..., L, K]; needs x > 0."""
    num_orders = coeffs.shape[0]
    thr = thresholds.unsqueeze(-1)
    small = x < thr
    # Series branch on t = x / thr <= 1.
    t = torch.where(small, x, thr.expand_as(x)) / thr
    u = t * t
    series = coeffs[:, -1:].expand_as(x)
    for m in range(coeffs.shape[1] - 2, -1, -1):
        series = series * u + coeffs[:, m : m + 1]
    orders = torch.arange(num_orders, dtype=x.dtype, device=x.device).unsqueeze(-1)
    series = series * t.pow(orders)
    # Recurrence branch on x >= thr >= 1.
    xr = torch.where(small, thr.expand_as(x), x)
    inv = 1.0 / xr
    sin, cos = torch.sin(xr), torch.cos(xr)
    j_prev, j_cur = sin * inv, (sin * inv - cos) * inv
    rows = [j_prev[..., 0, :], j_cur[..., 1, :]] if num_orders > 1 else [j_prev[..., 0, :]]
    for order in range(1, num_orders - 1):
        j_prev, j_cur = j_cur, (2 * order + 1) * inv * j_cur - j_prev
        rows.append(j_cur[..., order + 1, :])
    return torch.where(small, series, torch.stack(rows, dim=-2))


def _spherical_jn_zeros(num_orders: int, num_roots: int) -> Tensor:
    """First ``num_roots`` positive zeros of ``j_l`` for l < num_orders: [L, num_roots] float64.

    The zeros of ``j_l`` interlace those of ``j_(l-1)``, so each lies in a bracket between two
    zeros of the order below; bisection in float64 finds it.
    """
    thresholds, coeffs = _series_table(num_orders)
    count = num_roots + num_orders - 1
    zeros = torch.zeros(num_orders, count, dtype=torch.float64)
    zeros[0] = torch.arange(1, count + 1, dtype=torch.float64) * math.pi
    for order in range(1, num_orders):
        lo, hi = zeros[order - 1, : count - order].clone(), zeros[order - 1, 1 : count - order + 1].clone()
        f_lo = _eval_order(lo, order, thresholds, coeffs)
        for _ in range(64):  # halves a bracket of width < pi down to float64 resolution
            mid = 0.5 * (lo + hi)
            f_mid = _eval_order(mid, order, thresholds, coeffs)
            left = torch.sign(f_mid) == torch.sign(f_lo)
            lo, f_lo = torch.where(left, mid, lo), torch.where(left, f_mid, f_lo)
            hi = torch.where(left, hi, mid)
        zeros[order, : count - order] = 0.5 * (lo + hi)
    return zeros[:, :num_roots]


def _eval_order(x: Tensor, order: int, thresholds: Tensor, coeffs: Tensor) -> Tensor:
    """``j_order(x)`` for a flat x [K] (helper for the root search)."""
    grid = x.unsqueeze(0).expand(coeffs.shape[0], -1)
    return _spherical_jn(grid, thresholds, coeffs)[order]


class SphericalBasis(nn.Module):
    """DimeNet's 2D basis ``N_ln j_l(z_ln r / r_c) Y_l0(theta)``, times the envelope u(r).

    ``z_ln`` is the n-th zero of ``j_l``; ``N_ln = sqrt(2) / |j_(l+1)(z_ln)|`` normalises the radial
    functions on [0, 1]; ``Y_l0 = sqrt((2l+1) / 4 pi) P_l(cos theta)``.
    """

    def __init__(self, num_spherical: int, num_radial: int, cutoff: float) -> None:
        super().__init__()
        self.num_spherical, self.num_radial, self.cutoff = int(num_spherical), int(num_radial), float(cutoff)
        zeros = _spherical_jn_zeros(num_spherical, num_radial)
        # j_(l+1) at the zeros of j_l: row l + 1 of the grid holds the zeros of order l.
        grid = torch.cat([zeros[:1], zeros])
        j_next = _spherical_jn(grid, *_series_table(num_spherical + 1))[1:]
        thresholds, coeffs = _series_table(num_spherical)
        dtype = torch.get_default_dtype()
        self.register_buffer("zeros", zeros.to(dtype))
        self.register_buffer("norm", (math.sqrt(2.0) / j_next.abs()).to(dtype))
        self.register_buffer("thresholds", thresholds.to(dtype))
        self.register_buffer("coeffs", coeffs.to(dtype))
        ynorm = [math.sqrt((2 * order + 1) / (4 * math.pi)) for order in range(num_spherical)]
        self.register_buffer("ynorm", torch.tensor(ynorm, dtype=dtype))

    def forward(self, edge_len: Tensor, envelope: Tensor, cos_angle: Tensor, triplet_kj: Tensor) -> Tensor:
        """The spherical basis of every triplet.

        Args:
            edge_len: [E] edge lengths, Å.
            envelope: [E] cutoff envelope of each edge.
            cos_angle: [T] cosine of each triplet's angle at ``j``.
            triplet_kj: [T] the edge ``j -> k`` of each triplet.

        Returns:
            [T, num_spherical * num_radial], the radial part taken on the edge ``j -> k``.
        """
        x = (edge_len / self.cutoff).view(-1, 1, 1) * self.zeros
        radial = _spherical_jn(x, self.thresholds, self.coeffs) * self.norm * envelope.view(-1, 1, 1)
        legendre = [torch.ones_like(cos_angle), cos_angle]
        for order in range(1, self.num_spherical - 1):
            legendre.append(((2 * order + 1) * cos_angle * legendre[-1] - order * legendre[-2]) / (order + 1))
        angular = torch.stack(legendre[: self.num_spherical], dim=-1) * self.ynorm
        return (gather(radial, triplet_kj) * angular.unsqueeze(-1)).flatten(1)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(num_spherical={self.num_spherical}, "
            f"num_radial={self.num_radial}, cutoff={self.cutoff})"
        )


# --- blocks --------------------------------------------------------------------------------------


def _glorot_orthogonal(weight: Tensor) -> None:
    """Orthogonal matrix rescaled to the Glorot variance ``2 / (fan_in + fan_out)`` (DimeNet's init)."""
    if weight.numel() < 2:
        nn.init.xavier_uniform_(weight)
        return
    nn.init.orthogonal_(weight)
    fan_out, fan_in = weight.shape
    with torch.no_grad():
        weight.mul_(torch.sqrt(2.0 / ((fan_in + fan_out) * weight.var())))


def _reset_linears(module: nn.Module) -> None:
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            _glorot_orthogonal(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


class ResidualLayer(nn.Module):
    """``x + act(W2 act(W1 x))``."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.lin1 = nn.Linear(num_features, num_features)
        self.lin2 = nn.Linear(num_features, num_features)

    def forward(self, x: Tensor) -> Tensor:
        """``x + act(W2 act(W1 x))`` for x [..., F]."""
        return x + F.silu(self.lin2(F.silu(self.lin1(x))))


class EmbeddingBlock(nn.Module):
    """Initial edge messages ``m_ij = act(W [h_i, h_j, act(W_rbf rbf_ij)])``.

    The concatenated weight is applied piecewise: the atom parts once per atom, then gathered.
    """

    def __init__(self, num_elements: int, num_features: int, num_rbf: int) -> None:
        super().__init__()
        self.num_features = num_features
        self.embedding = nn.Embedding(num_elements, num_features)
        self.lin_rbf = nn.Linear(num_rbf, num_features)
        self.lin = nn.Linear(3 * num_features, num_features)

    def reset_parameters(self) -> None:
        """Uniform embedding in [-sqrt 3, sqrt 3], Glorot-orthogonal linears."""
        nn.init.uniform_(self.embedding.weight, -math.sqrt(3.0), math.sqrt(3.0))
        _reset_linears(self)

    def forward(self, species: Tensor, rbf: Tensor, centre: Tensor, neighbour: Tensor) -> Tensor:
        """Initial edge messages.

        Args:
            species: [N] species index of each atom.
            rbf: [E, num_rbf] enveloped radial basis.
            centre: [E] centre atom ``i`` of each edge.
            neighbour: [E] neighbour atom ``j`` of each edge.

        Returns:
            [E, F] messages.
        """
        h = self.embedding(species)
        w_i, w_j, w_rbf = self.lin.weight.split(self.num_features, dim=1)
        out = gather(F.linear(h, w_i, self.lin.bias), centre) + gather(F.linear(h, w_j), neighbour)
        return F.silu(out + F.linear(F.silu(self.lin_rbf(rbf)), w_rbf))


class InteractionBlock(nn.Module):
    """DimeNet++ interaction: triplet messages in a narrow ``int_emb_size`` space, then residuals."""

    def __init__(
        self,
        num_features: int,
        int_emb_size: int,
        basis_emb_size: int,
        num_rbf: int,
        num_sbf: int,
        num_before_skip: int,
        num_after_skip: int,
    ) -> None:
        super().__init__()
        self.lin_rbf = nn.Sequential(
            nn.Linear(num_rbf, basis_emb_size, bias=False), nn.Linear(basis_emb_size, num_features, bias=False)
        )
        self.lin_sbf = nn.Sequential(
            nn.Linear(num_sbf, basis_emb_size, bias=False), nn.Linear(basis_emb_size, int_emb_size, bias=False)
        )
        self.lin_ji = nn.Linear(num_features, num_features)
        self.lin_kj = nn.Linear(num_features, num_features)
        self.lin_down = nn.Linear(num_features, int_emb_size, bias=False)
        self.lin_up = nn.Linear(int_emb_size, num_features, bias=False)
        self.before_skip = nn.Sequential(*(ResidualLayer(num_features) for _ in range(num_before_skip)))
        self.lin_skip = nn.Linear(num_features, num_features)
        self.after_skip = nn.Sequential(*(ResidualLayer(num_features) for _ in range(num_after_skip)))

    def reset_parameters(self) -> None:
        """Glorot-orthogonal weights, zero biases."""
        _reset_linears(self)

    def forward(self, m: Tensor, rbf: Tensor, sbf: Tensor, triplet_kj: Tensor, triplet_ji: Tensor) -> Tensor:
        """One interaction on the edge messages.

        Args:
            m: [E, F] edge messages.
            rbf: [E, num_rbf] enveloped radial basis.
            sbf: [T, num_sbf] spherical basis of each triplet.
            triplet_kj: [T] the edge ``j -> k`` of each triplet.
            triplet_ji: [T] the edge ``i -> j`` of each triplet.

        Returns:
            [E, F] updated messages.
        """
        x_ji = F.silu(self.lin_ji(m))
        x_kj = F.silu(self.lin_kj(m)) * self.lin_rbf(rbf)
        x_kj = gather(F.silu(self.lin_down(x_kj)), triplet_kj) * self.lin_sbf(sbf)
        x_kj = F.silu(self.lin_up(scatter_sum(x_kj, triplet_ji, m.shape[0])))
        h = self.before_skip(x_ji + x_kj)
        return self.after_skip(F.silu(self.lin_skip(h)) + m)


class OutputBlock(nn.Module):
    """Edge messages, weighted by the radial basis, summed on the centre atom, then an MLP."""

    def __init__(self, num_features: int, out_emb_size: int, num_rbf: int, num_layers: int) -> None:
        super().__init__()
        self.lin_rbf = nn.Linear(num_rbf, num_features, bias=False)
        self.lin_up = nn.Linear(num_features, out_emb_size, bias=False)
        self.layers = nn.ModuleList(nn.Linear(out_emb_size, out_emb_size) for _ in range(num_layers))
        self.lin_out = nn.Linear(out_emb_size, num_features, bias=False)

    def reset_parameters(self) -> None:
        """Glorot-orthogonal weights, zero biases."""
        _reset_linears(self)

    def forward(self, m: Tensor, rbf: Tensor, centre: Tensor, num_atoms: int) -> Tensor:
        """Messages summed on their centre atoms, then the block's MLP.

        Args:
            m: [E, F] edge messages.
            rbf: [E, num_rbf] enveloped radial basis.
            centre: [E] centre atom of each edge.
            num_atoms: N.

        Returns:
            [N, F] atom features.
        """
        x = self.lin_up(scatter_sum(self.lin_rbf(rbf) * m, centre, num_atoms))
        for layer in self.layers:
            x = F.silu(layer(x))
        return self.lin_out(x)


class DimeNetPlusPlus(Representation):
    """DimeNet++ representation: ``forward(graph) -> [N, num_features]`` invariant features.

    :meth:`prepare` gives the triplets: those the data pipeline stored (``keys.TRIPLET_KJ`` and
    ``keys.TRIPLET_JI``), or else built from the edge list.

    Args:
        num_elements: size of the species embedding.
        cutoff: neighbour radius, Å.
        num_features: width of edge messages and of the output features (``emb_size``).
        num_interactions: number of interaction blocks (``num_blocks``).
        num_rbf: radial Bessel functions, and radial functions per order of the spherical basis.
        num_spherical: orders l = 0..num_spherical-1 of the spherical basis.
        int_emb_size: width of the triplet messages.
        basis_emb_size: bottleneck width of the basis projections.
        out_emb_size: width of the output-block MLPs.
        envelope_exponent: ``p`` of DimeNet's polynomial envelope (PolynomialCutoff with ``p + 1``).
        num_before_skip: residual layers before the skip connection.
        num_after_skip: residual layers after the skip connection.
        num_output_layers: dense layers per output block.
    """

    tiny_hparams = {"num_features": 8, "num_interactions": 2, "num_rbf": 4}

    def __init__(
        self,
        num_elements: int,
        cutoff: float,
        num_features: int = 128,
        num_interactions: int = 4,
        num_rbf: int = 6,
        num_spherical: int = 7,
        int_emb_size: int = 64,
        basis_emb_size: int = 8,
        out_emb_size: int = 256,
        envelope_exponent: int = 5,
        num_before_skip: int = 1,
        num_after_skip: int = 2,
        num_output_layers: int = 3,
    ) -> None:
        super().__init__(cutoff, num_features)
        if num_spherical < 1 or num_rbf < 1:
            raise ValueError(f"num_spherical and num_rbf must be >= 1, got {num_spherical!r}, {num_rbf!r}")
        self.rbf = BesselRBF(num_rbf, cutoff, trainable=True)
        self.envelope = PolynomialCutoff(cutoff, p=envelope_exponent + 1)
        self.sbf = SphericalBasis(num_spherical, num_rbf, cutoff)
        self.embedding = EmbeddingBlock(num_elements, num_features, num_rbf)
        self.interactions = nn.ModuleList(
            InteractionBlock(
                num_features,
                int_emb_size,
                basis_emb_size,
                num_rbf,
                num_spherical * num_rbf,
                num_before_skip,
                num_after_skip,
            )
            for _ in range(num_interactions)
        )
        self.outputs = nn.ModuleList(
            OutputBlock(num_features, out_emb_size, num_rbf, num_output_layers) for _ in range(num_interactions + 1)
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Bessel frequencies n pi / cutoff, then every block's own initialisation."""
        with torch.no_grad():
            steps = torch.arange(1, self.rbf.num_rbf + 1, dtype=self.rbf.freqs.dtype)
            self.rbf.freqs.copy_(steps * math.pi / self.cutoff)
        self.embedding.reset_parameters()
        for block in (*self.interactions, *self.outputs):
            block.reset_parameters()

    def prepare(self, data: Data) -> dict[str, Tensor]:
        """The triplets [T] of :mod:`gnnpot.keys`: stored on ``data``, or built from its edges."""
        triplet_kj, triplet_ji = data.get(keys.TRIPLET_KJ), data.get(keys.TRIPLET_JI)
        edge_index = data[keys.EDGE_INDEX]
        if triplet_kj is None or triplet_ji is None:
            if edge_index.shape[1] == 0:  # no edges, no triplets (and nothing data-dependent to trace)
                triplet_kj = triplet_ji = edge_index.new_zeros(0)
            else:
                triplet_kj, triplet_ji = build_triplets(edge_index, data[keys.EDGE_SHIFT], data.num_nodes)
        return {keys.TRIPLET_KJ: triplet_kj, keys.TRIPLET_JI: triplet_ji}

    def forward(self, graph: Data) -> Tensor:
        """Invariant features [N, num_features]: the sum of all output blocks."""
        edge_index, edge_vec, edge_len = graph[keys.EDGE_INDEX], graph[keys.EDGE_VEC], graph[keys.EDGE_LEN]
        centre, neighbour = edge_index[0], edge_index[1]
        num_atoms = graph[keys.SPECIES].shape[0]
        triplet_kj, triplet_ji = graph[keys.TRIPLET_KJ], graph[keys.TRIPLET_JI]
        # Bases are computed once and shared by all blocks. Every use of an edge's message is
        # weighted by its enveloped basis, so contributions vanish smoothly at the cutoff.
        envelope = self.envelope(edge_len)
        rbf = self.rbf(edge_len) * envelope.unsqueeze(-1)
        # Angle at j between j -> i (= -edge_vec of i -> j) and j -> k; cos only, no arccos.
        unit = edge_vec / edge_len.unsqueeze(-1)
        cos_angle = -(gather(unit, triplet_ji) * gather(unit, triplet_kj)).sum(-1)
        sbf = self.sbf(edge_len, envelope, cos_angle, triplet_kj)

        m = self.embedding(graph[keys.SPECIES], rbf, centre, neighbour)
        out = self.outputs[0](m, rbf, centre, num_atoms)
        for interaction, output in zip(self.interactions, self.outputs[1:]):
            m = interaction(m, rbf, sbf, triplet_kj, triplet_ji)
            out = out + output(m, rbf, centre, num_atoms)
        return out

    def __repr__(self) -> str:
        block = self.interactions[0] if len(self.interactions) else None
        int_emb = block.lin_down.out_features if block is not None else None
        return (
            f"{self.__class__.__name__}(num_features={self.num_features}, "
            f"num_interactions={len(self.interactions)}, num_rbf={self.rbf.num_rbf}, "
            f"num_spherical={self.sbf.num_spherical}, int_emb_size={int_emb}, "
            f"out_emb_size={self.outputs[0].lin_up.out_features}, cutoff={self.cutoff})"
        )
