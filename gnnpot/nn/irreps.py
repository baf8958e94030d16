"""e3nn helpers shared by the equivariant families (NequIP, MACE)."""

from __future__ import annotations

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


def uvu_convolution(irreps_in: o3.Irreps, irreps_sh: o3.Irreps, wanted: o3.Irreps) -> o3.TensorProduct:
    """The "uvu" tensor product of node features with edge harmonics, weights given per edge.

    Every input channel keeps its own path (no channel mixing) to each output irrep in ``wanted``;
    the outputs are sorted by irrep. Component normalisation, element path normalisation.

    Args:
        irreps_in: irreps of the (neighbour) node features.
        irreps_sh: irreps of the edge spherical harmonics.
        wanted: the output irreps to produce (multiplicities are ignored: each path keeps its input's).

    Returns:
        An e3nn ``TensorProduct`` with ``internal_weights=False, shared_weights=False``: call it as
        ``conv(x_j, sh, weight)`` with ``weight`` [E, conv.weight_numel].
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
    return o3.TensorProduct(
        irreps_in,
        irreps_sh,
        irreps_mid,
        instructions,
        irrep_normalization="component",
        path_normalization="element",
        internal_weights=False,
        shared_weights=False,
    )
