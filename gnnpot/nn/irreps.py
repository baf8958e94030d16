"""e3nn helpers shared by the equivariant families (NequIP, MACE)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import torch
from e3nn import o3
from torch import Tensor, nn
from torch_geometric.data import Data

from gnnpot import keys
from gnnpot.nn.pairs import pair_lengths

_WIGNER_3J = re.compile(r"_w3j_(\d+)_(\d+)_(\d+)$")  # e3nn's name for its coupling-coefficient buffers


def check_irreps(expected: o3.Irreps, given: o3.Irreps, where: str) -> None:
    """Raise ``ValueError`` naming ``where`` when two irreps differ (checked when layers are built)."""
    if o3.Irreps(expected) != o3.Irreps(given):
        raise ValueError(f"{where}: expected irreps {expected}, got {given}")


def refresh_wigner_3j(module: nn.Module) -> None:
    """Recompute e3nn's Wigner 3j buffers exactly in the dtype they now have.

    e3nn stores them in the default dtype when built, so ``model.double()`` (or loading a float32
    state dict) would leave float32-rounded couplings and break float64 equivariance at ~1e-8.
    """
    with torch.no_grad():
        for name, buffer in module.named_buffers():
            match = _WIGNER_3J.search(name)
            if match is not None:
                exact = o3.wigner_3j(*(int(order) for order in match.groups()), dtype=torch.float64)
                buffer.copy_(exact.to(device=buffer.device, dtype=buffer.dtype))


class ExactWigner3j(nn.Module):
    """Base of modules built from e3nn layers: Wigner 3j buffers stay exact in any dtype.

    ``.double()``, ``.float()`` and ``.to()`` (all through ``_apply``) and ``load_state_dict``
    recompute them (:func:`refresh_wigner_3j`). Subclasses call ``super().__init__(...)`` first.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.register_load_state_dict_post_hook(lambda module, _: refresh_wigner_3j(module))

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> ExactWigner3j:
        super()._apply(fn, recurse)
        refresh_wigner_3j(self)
        return self


def edge_basis(
    graph: Data, spherical_harmonics: nn.Module, rbf: nn.Module, envelope: nn.Module
) -> tuple[Tensor, Tensor, bool]:
    """The edge geometry every interaction shares, computed once per forward.

    Args:
        graph: the family graph (``edge_vec`` [E, 3] Å, ``edge_len`` [E] Å, ``edge_paired``).
        spherical_harmonics: e3nn ``SphericalHarmonics`` of the edge vectors.
        rbf: radial basis of the edge lengths, [E'] -> [E', num_rbf].
        envelope: cutoff envelope, [E'] -> [E'].

    Returns:
        ``sh`` [E, irreps_sh.dim], ``radial`` [E', num_rbf] (enveloped; one row per edge pair,
        E' = E // 2, when paired, else per edge) and ``paired``.
    """
    sh = spherical_harmonics(graph[keys.EDGE_VEC])
    paired = bool(graph.get(keys.EDGE_PAIRED, False))
    lengths = pair_lengths(graph[keys.EDGE_LEN], paired)
    radial = rbf(lengths) * envelope(lengths).unsqueeze(-1)
    return sh, radial, paired


# Inputs of dimension up to this (l <= 1) are summed term by term, larger ones by one reduction.
# Measured compiled, energy and forces of 108 Cu atoms, one thread, another job on the other core:
#   - MACE small (l <= 1 only): 265 ms a call unrolled, 332 ms as a reduction;
#   - NequIP paper (l = 3): unrolling every order grew the traced graph from 12,069 nodes (e3nn's
#     einsums) to 20,841, and the first call (compilation) from 680 s to more than 900 s. With
#     orders 2 and 3 reduced: 12,225 nodes, first call 869 s, then 842 ms a call against e3nn's 1,738.
UNROLLED_ORDERS = 3


class ChannelwiseTensorProduct(o3.TensorProduct):
    """e3nn's ``TensorProduct`` for "uvu" paths with one harmonic per irrep, computed by fused products.

    Same constructor, instructions, weights layout, state dict and results as e3nn's (tested to
    1e-12 in float64); only the forward differs. Written by hand because e3nn's generated code
    contracts each path's coupling coefficients through ``opt_einsum`` as matrix products whose
    inner sizes are 1 to 7 (``[E * C, 3] @ [3, 15]``, then a batched ``[E, 3, 5] @ [E, 5, C]``):
    BLAS runs such shapes far below memory speed and TorchInductor cannot fuse them. In a compiled
    MACE step on 108 Cu atoms they took 25 % of the time (torch profiler, one thread).

    Here each path first contracts the edge harmonic with its coefficients, per edge and without
    channels (``b[e, i, k] = sum_j Y[e, j] C[i, j, k]``, cheap); the channel-wise part is then a short
    sum of broadcast products, ``out[e, u, k] = w[e, u] * sum_i x[e, u, i] * b[e, i, k]``, which the
    compiler fuses into one loop per path (with its backward); for inputs of order 2 and 3 the sum
    over ``i`` is one reduction (see :data:`UNROLLED_ORDERS`). Eager runs the same code.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._coefficients: list[str] = []  # buffer name per instruction; paths with the same orders share one
        for n, ins in enumerate(self.instructions):
            if ins.connection_mode != "uvu" or not ins.has_weight or self.irreps_in2[ins.i_in2].mul != 1:
                raise ValueError(f"path {n} ({ins}): only weighted 'uvu' paths with one harmonic are supported")
            orders = (self.irreps_in1[ins.i_in1].ir.l, self.irreps_in2[ins.i_in2].ir.l, self.irreps_out[ins.i_out].ir.l)
            # named like e3nn's own coefficients, so that ExactWigner3j keeps them exact in every dtype
            name = "_paths_w3j_{}_{}_{}".format(*orders)
            if name not in self._buffers:
                self.register_buffer(name, o3.wigner_3j(*orders), persistent=False)
            self._coefficients.append(name)
        if self.shared_weights or self.internal_weights:
            raise ValueError("ChannelwiseTensorProduct takes its weights per edge (shared_weights=False)")

    def forward(self, x: Tensor, y: Tensor, weight: Tensor) -> Tensor:  # type: ignore[override]
        """``x`` [E, irreps_in1.dim], ``y`` [E, irreps_in2.dim], ``weight`` [E, weight_numel] -> [E, irreps_out.dim]."""
        num_edges = x.shape[0]
        parts = zip(self.irreps_in1.slices(), self.irreps_in1, strict=True)
        inputs = [x[:, part].reshape(num_edges, mul, ir.dim) for part, (mul, ir) in parts]
        harmonics = [y[:, part] for part in self.irreps_in2.slices()]
        weights = weight.split([math.prod(ins.path_shape) for ins in self.instructions], dim=1)
        outputs: list[list[Tensor]] = [[] for _ in self.irreps_out]
        contracted: dict[tuple, Tensor] = {}  # paths that differ only in parity share the same b
        for ins, name, w in zip(self.instructions, self._coefficients, weights, strict=True):
            coefficients = getattr(self, name)  # [d_in, d_sh, d_out]
            d_in, d_sh, d_out = coefficients.shape
            key = (ins.i_in2, name, ins.path_weight)
            if key not in contracted:
                b = harmonics[ins.i_in2] @ coefficients.transpose(0, 1).reshape(d_sh, d_in * d_out)
                contracted[key] = (b * ins.path_weight).reshape(num_edges, 1, d_in, d_out)
            b = contracted[key]
            features = inputs[ins.i_in1]
            if d_in <= UNROLLED_ORDERS:
                out = features[:, :, 0, None] * b[:, :, 0]
                for i in range(1, d_in):
                    out = out + features[:, :, i, None] * b[:, :, i]
            else:
                out = (features[:, :, :, None] * b).sum(2)
            mul = features.shape[1]
            outputs[ins.i_out].append((out * w.reshape(num_edges, mul, 1)).reshape(num_edges, mul * d_out))
        return torch.cat([sum(parts[1:], parts[0]) for parts in outputs], dim=1)


def uvu_convolution(irreps_in: o3.Irreps, irreps_sh: o3.Irreps, wanted: o3.Irreps) -> ChannelwiseTensorProduct:
    """The "uvu" tensor product of node features with edge harmonics, weights given per edge.

    Every input channel keeps its own path (no channel mixing) to each output irrep in ``wanted``;
    the outputs are sorted by irrep. Component normalisation, element path normalisation.

    Args:
        irreps_in: irreps of the (neighbour) node features.
        irreps_sh: irreps of the edge spherical harmonics.
        wanted: the output irreps to produce (multiplicities are ignored: each path keeps its input's).

    Returns:
        A :class:`ChannelwiseTensorProduct` (e3nn's ``TensorProduct``, ``internal_weights=False,
        shared_weights=False``): call it as ``conv(x_j, sh, weight)`` with ``weight`` [E, conv.weight_numel].
    """
    irreps_mid, instructions = [], []
    for i, (mul, ir_in) in enumerate(irreps_in):
        for j, (_, ir_sh) in enumerate(irreps_sh):
            for ir_out in ir_in * ir_sh:
                if ir_out in wanted:
                    instructions.append((i, j, len(irreps_mid), "uvu", True))
                    irreps_mid.append((mul, ir_out))
    irreps_mid, perm, _ = o3.Irreps(irreps_mid).sort()
    instructions = [(i, j, perm[k], mode, train) for i, j, k, mode, train in instructions]
    return ChannelwiseTensorProduct(
        irreps_in,
        irreps_sh,
        irreps_mid,
        instructions,
        irrep_normalization="component",
        path_normalization="element",
        internal_weights=False,
        shared_weights=False,
    )
