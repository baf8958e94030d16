"""Symmetric tensor powers of irreps features: the many-body product of MACE (Batatia et al., 2022).

Take one channel of an equivariant feature, ``a`` in ``irreps_in`` with one copy of each irrep (for
MACE's atomic basis ``0e + 1o + 2e + 3o``, D = 16 numbers). Its nu-fold tensor power
``a ⊗ ... ⊗ a`` is symmetric under any reordering of the nu factors, so of all equivariant linear
maps from that power to an output irrep ``L`` only their symmetric part acts on it.
:func:`generalised_cg` builds a basis of those symmetric maps, the generalised Clebsch-Gordan
coefficients, a [2L+1, D, ..., D, P] tensor:

    1. couple the factors one after the other with e3nn's Wigner 3j symbols,
       ``((l1 ⊗ l2 -> k) ⊗ l3 -> ...) -> L``, over every intermediate irrep ``k`` (these span all
       equivariant maps from the power to ``L``);
    2. symmetrise each coupling over the nu! orders of the factors;
    3. keep the linearly independent ones: Gram-Schmidt in the fixed order of step 1. Unlike an
       SVD, whose basis inside a degenerate subspace depends on the LAPACK build, this gives the
       same basis on every machine, so trained weights keep their meaning wherever they are loaded.

Each basis map has unit norm times ``sqrt(2L + 1)`` (e3nn's "component" normalisation: unit-variance
inputs give outputs of about unit variance). The bases are computed once in float64 and cached.

:class:`SymmetricContraction` evaluates MACE's product basis
``B[c, M] = sum_nu sum_p W[z, nu, p, c] sum_(i1..i_nu) U_nu[M, i1, ..., i_nu, p] a[c, i1] ... a[c, i_nu]``
channel by channel, with weights indexed by the centre atom's species ``z``. Because ``U`` is
symmetric it never forms the D^nu power: it contracts the distinct monomials
``a[i1] ... a[i_nu]`` (``i1 <= ... <= i_nu``, 816 instead of 4096 for D = 16, nu = 3), with each
multiplicity folded into the coefficients, in one matrix product. Of those it builds only the ones
some output needs (:func:`monomial_plan`): selection rules leave most of them without a coupling to
low output orders (``0e + 1o + 2e + 3o`` to ``0e``: 94 of 968 up to nu = 3; to ``0e + 1o``: 410).

Written by hand: e3nn has no symmetric tensor power, and mace-torch's contraction forms each
species' weighted ``U`` per atom (an [N, C, 2L+1, D^nu] tensor), which is what makes it slow on CPU.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from e3nn import o3
from torch import Tensor, nn

# A symmetrised coupling whose norm, after removing its projection on the kept ones, is below this
# fraction of its norm before symmetrisation, is a combination of those (or zero) and is dropped.
_DEPENDENT = 1e-9

# The module-level caches: float64, CPU; built once per process.
_CG_CACHE: dict[tuple[str, str, int], Tensor] = {}
_MONOMIAL_CACHE: dict[tuple[str, str, int], Tensor] = {}
_PLAN_CACHE: dict[tuple[str, str, int], MonomialPlan] = {}
# A monomial whose coefficients are all below this fraction of the largest is structurally zero.
_ZERO_ROW = 1e-12


def _single_copies(irreps: o3.Irreps | str) -> o3.Irreps:
    irreps = o3.Irreps(irreps)
    if any(mul != 1 for mul, _ in irreps):
        raise ValueError(f"coupling irreps need one copy of each irrep (e.g. '0e + 1o + 2e'), got {irreps}")
    return irreps


def _couplings(irreps: o3.Irreps, nu: int, ir_out: o3.Irrep) -> list[np.ndarray]:
    """Every sequential coupling of ``nu`` factors to ``ir_out``, each [2L+1, D, ..., D] (float64)."""
    dim, l_in = irreps.dim, irreps.lmax
    # one factor: the embedding of each irrep's block, [2l+1, D]
    paths = []
    for (_, ir), block in zip(irreps, irreps.slices()):
        embed = np.zeros((ir.dim, dim))
        embed[:, block] = np.eye(ir.dim)
        paths.append((ir, embed))
    for step in range(2, nu + 1):
        remaining = nu - step  # factors still to come: they change l by at most remaining * l_in
        coupled = []
        for ir_mid, tensor in paths:
            for (_, ir_in), block in zip(irreps, irreps.slices()):
                for ir in ir_mid * ir_in:
                    if abs(ir.l - ir_out.l) > remaining * l_in or (remaining == 0 and ir != ir_out):
                        continue
                    w3j = o3.wigner_3j(ir_mid.l, ir_in.l, ir.l, dtype=torch.float64).numpy()
                    new = np.zeros((ir.dim, *tensor.shape[1:], dim))
                    new[..., block] = np.einsum("a...,abc->c...b", tensor, w3j)
                    coupled.append((ir, new))
        paths = coupled
    return [tensor for ir, tensor in paths if ir == ir_out]


def _symmetrise(tensor: np.ndarray, nu: int) -> np.ndarray:
    """The mean of ``tensor`` [M, D, ..., D] over the nu! orders of its last ``nu`` axes."""
    orders = list(itertools.permutations(range(1, nu + 1)))
    return sum(tensor.transpose(0, *order) for order in orders) / len(orders)


def generalised_cg(irreps_in: o3.Irreps | str, ir_out: o3.Irrep | str, nu: int) -> Tensor:
    """Basis of the symmetric equivariant maps from the ``nu``-th tensor power of ``irreps_in`` to ``ir_out``.

    Args:
        irreps_in: one copy of each irrep, e.g. ``"0e + 1o + 2e + 3o"`` (dimension D).
        ir_out: the output irrep ``L``.
        nu: number of factors (correlation order), >= 1.

    Returns:
        [2L+1, D, ..., D (nu times), P] float64, symmetric in the nu input axes; ``P`` (possibly 0)
        independent maps. Cached: every call with the same arguments returns the same tensor.
    """
    irreps, ir_out = _single_copies(irreps_in), o3.Irrep(ir_out)
    if nu < 1:
        raise ValueError(f"nu must be >= 1, got {nu!r}")
    key = (str(irreps), str(ir_out), int(nu))
    if key not in _CG_CACHE:
        shape = (ir_out.dim, *[irreps.dim] * nu)
        basis = np.zeros((0, math.prod(shape)))  # orthonormal rows
        for tensor in _couplings(irreps, nu, ir_out):
            vector = _symmetrise(tensor, nu).reshape(-1)
            for _ in range(2):  # Gram-Schmidt twice: orthogonal to rounding
                vector = vector - (basis @ vector) @ basis
            norm = np.linalg.norm(vector)
            if norm > _DEPENDENT * np.linalg.norm(tensor):
                basis = np.concatenate([basis, vector[None] / norm])
        basis = basis.T
        _CG_CACHE[key] = torch.from_numpy(basis.reshape(*shape, -1) * math.sqrt(ir_out.dim))
    return _CG_CACHE[key]


def _monomials(dim: int, nu: int) -> list[tuple[int, ...]]:
    """The distinct monomials of degree ``nu`` in ``dim`` variables, as sorted index tuples."""
    return list(itertools.combinations_with_replacement(range(dim), nu))


def monomial_coefficients(irreps_in: o3.Irreps | str, irreps_out: o3.Irreps | str, correlation: int) -> Tensor:
    """The generalised CG coefficients of every order up to ``correlation`` on distinct monomials.

    Args:
        irreps_in: one copy of each irrep (dimension D).
        irreps_out: one copy of each output irrep.
        correlation: highest order nu.

    Returns:
        [Q, K] float64 (cached): rows are the monomials of orders 1..correlation (sorted index
        tuples, order by order), columns the output irreps one after the other, each [2L+1, P_L]
        with ``P_L`` the paths of every order (order 1 first). Monomial ``t`` times column ``(M, p)``
        sums to ``U[M, t..., p]`` times the number of distinct orderings of ``t``.
    """
    irreps, outputs = _single_copies(irreps_in), _single_copies(irreps_out)
    key = (str(irreps), str(outputs), int(correlation))
    if key not in _MONOMIAL_CACHE:
        dim = irreps.dim
        rows = [_monomials(dim, nu) for nu in range(1, correlation + 1)]
        offsets = [0, *itertools.accumulate(len(r) for r in rows)]
        columns = []
        for _, ir in outputs:
            bases = [generalised_cg(irreps, ir, nu) for nu in range(1, correlation + 1)]
            block = torch.zeros(offsets[-1], ir.dim, sum(b.shape[-1] for b in bases), dtype=torch.float64)
            start = 0
            for nu, (basis, tuples) in enumerate(zip(bases, rows), start=1):
                index = torch.tensor([sum(i * dim ** (nu - 1 - k) for k, i in enumerate(t)) for t in tuples])
                orderings = torch.tensor(
                    [math.factorial(nu) / math.prod(math.factorial(t.count(i)) for i in set(t)) for t in tuples],
                    dtype=torch.float64,
                )
                flat = basis.reshape(ir.dim, dim**nu, -1)[:, index] * orderings[:, None]  # [M, Q_nu, P_nu]
                block[offsets[nu - 1] : offsets[nu], :, start : start + basis.shape[-1]] = flat.transpose(0, 1)
                start += basis.shape[-1]
            columns.append(block.reshape(offsets[-1], -1))
        _MONOMIAL_CACHE[key] = torch.cat(columns, 1)
    return _MONOMIAL_CACHE[key]


@dataclass(frozen=True)
class MonomialPlan:
    """The monomials an output needs, built order by order, and their coefficients.

    Attributes:
        coefficients: [Q', K] float64, the rows of :func:`monomial_coefficients` for the kept
            monomials: every order-1 one, then the kept ones of each higher order.
        prefixes: for each order nu >= 2, the position of each kept monomial's first nu - 1 factors
            among the kept ones of order nu - 1.
        factors: for each order nu >= 2, each kept monomial's last factor (an index into D).
    """

    coefficients: Tensor
    prefixes: tuple[Tensor, ...]
    factors: tuple[Tensor, ...]


def monomial_plan(irreps_in: o3.Irreps | str, irreps_out: o3.Irreps | str, correlation: int) -> MonomialPlan:
    """Which monomials to build for :func:`monomial_coefficients`, dropping those no output couples to.

    A monomial of order nu is kept when its coefficient row is not zero or when a kept one of order
    nu + 1 is built from it; all order-1 monomials (the input itself) are kept. Cached.
    """
    irreps, outputs = _single_copies(irreps_in), _single_copies(irreps_out)
    key = (str(irreps), str(outputs), int(correlation))
    if key not in _PLAN_CACHE:
        full = monomial_coefficients(irreps, outputs, correlation)
        needed = full.abs().amax(1) > _ZERO_ROW * full.abs().max()
        orders = [_monomials(irreps.dim, nu) for nu in range(1, correlation + 1)]
        offsets = [0, *itertools.accumulate(len(r) for r in orders)]
        kept: list[list[tuple[int, ...]]] = [[] for _ in orders]
        kept[0] = orders[0]
        for nu in range(correlation, 1, -1):
            wanted = {t[:-1] for t in kept[nu]} if nu < correlation else set()
            kept[nu - 1] = [t for k, t in enumerate(orders[nu - 1]) if needed[offsets[nu - 1] + k] or t in wanted]
        rows, prefixes, factors = [], [], []
        for nu, (tuples, chosen) in enumerate(zip(orders, kept), start=1):
            position = {t: k for k, t in enumerate(tuples)}
            rows += [offsets[nu - 1] + position[t] for t in chosen]
            if nu > 1:
                previous = {t: k for k, t in enumerate(kept[nu - 2])}
                prefixes.append(torch.tensor([previous[t[:-1]] for t in chosen], dtype=torch.long))
                factors.append(torch.tensor([t[-1] for t in chosen], dtype=torch.long))
        _PLAN_CACHE[key] = MonomialPlan(full[torch.tensor(rows)], tuple(prefixes), tuple(factors))
    return _PLAN_CACHE[key]


class SymmetricContraction(nn.Module):
    """MACE's product basis: species-weighted symmetric powers of each channel, up to ``correlation``.

    Args:
        irreps_in: ``C x ir_1 + C x ir_2 + ...``: C channels of each irrep, the same C for all.
        irreps_out: ``C x L_1 + C x L_2 + ...``, each reachable from some power (see
            :func:`generalised_cg`).
        correlation: highest number of factors nu (the message's body order is nu + 1).
        num_elements: number of species; the weights depend on the centre atom's species.
    """

    def __init__(
        self, irreps_in: o3.Irreps | str, irreps_out: o3.Irreps | str, correlation: int, num_elements: int
    ) -> None:
        super().__init__()
        self.irreps_in, self.irreps_out = o3.Irreps(irreps_in), o3.Irreps(irreps_out)
        channels = {mul for mul, _ in self.irreps_in} | {mul for mul, _ in self.irreps_out}
        if len(channels) != 1:
            raise ValueError(
                f"every irrep needs the same number of channels, got {self.irreps_in} -> {self.irreps_out}"
            )
        if correlation < 1:
            raise ValueError(f"correlation must be >= 1, got {correlation!r}")
        self.num_channels, self.correlation, self.num_elements = channels.pop(), int(correlation), int(num_elements)
        self._coupling_key = (
            o3.Irreps([(1, ir) for _, ir in self.irreps_in]),
            o3.Irreps([(1, ir) for _, ir in self.irreps_out]),
            self.correlation,
        )
        self.paths = [  # [output irrep][nu - 1]: independent couplings
            [generalised_cg(self._coupling_key[0], ir, nu).shape[-1] for nu in range(1, correlation + 1)]
            for _, ir in self.irreps_out
        ]
        for (_, ir), paths in zip(self.irreps_out, self.paths):
            if sum(paths) == 0:
                raise ValueError(f"no power of {self._coupling_key[0]} up to {correlation} reaches {ir}")
        # The monomials of order nu are kept ones of order nu - 1 times one more factor: index buffers.
        plan = monomial_plan(*self._coupling_key)
        for nu, (prefix, factor) in enumerate(zip(plan.prefixes, plan.factors), start=2):
            self.register_buffer(f"prefix_{nu}", prefix, persistent=False)
            self.register_buffer(f"factor_{nu}", factor, persistent=False)
        self.register_buffer("coefficients", plan.coefficients.to(torch.get_default_dtype()), persistent=False)
        self.weights = nn.ParameterList(
            nn.Parameter(torch.empty(num_elements, sum(paths), self.num_channels)) for paths in self.paths
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Normal weights, each order's scaled by ``1 / sqrt(paths)`` so that each order adds O(1)."""
        with torch.no_grad():
            for weight, paths in zip(self.weights, self.paths):
                for block, count in zip(weight.split(paths, dim=1), paths):
                    block.normal_(0.0, 1.0 / math.sqrt(max(count, 1)))

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> SymmetricContraction:
        # .double(), .float(), .to() all land here: the coefficients are recomputed from the float64
        # cache in the new dtype, so float64 gets exact values, not float32 ones widened.
        super()._apply(fn, recurse)
        exact = monomial_plan(*self._coupling_key).coefficients
        self.coefficients = exact.to(device=self.coefficients.device, dtype=self.coefficients.dtype)
        return self

    def forward(self, x: Tensor, species: Tensor) -> Tensor:
        """The product basis of each atom.

        Args:
            x: [N, irreps_in.dim] features (e3nn layout).
            species: [N] species index of each atom (selects the weights).

        Returns:
            [N, irreps_out.dim] features (e3nn layout).
        """
        num, channels = x.shape[0], self.num_channels
        # [D, N * C]: one copy of every irrep first, then atoms and channels. Building the monomials
        # selects whole rows, and one plain matrix product contracts them (1.5x faster, with
        # forces and their backward, than gathering along a last axis of size D).
        a = torch.cat(
            [
                x[:, block].reshape(num, channels, ir.dim).permute(2, 0, 1)
                for (_, ir), block in zip(self.irreps_in, self.irreps_in.slices())
            ],
            dim=0,
        ).reshape(-1, num * channels)
        monomials = [a]
        for nu in range(2, self.correlation + 1):
            prefix, factor = getattr(self, f"prefix_{nu}"), getattr(self, f"factor_{nu}")
            monomials.append(monomials[-1].index_select(0, prefix) * a.index_select(0, factor))
        products = self.coefficients.t() @ torch.cat(monomials, dim=0)  # [K, N * C]
        outputs, start = [], 0
        for (_, ir), weight in zip(self.irreps_out, self.weights):
            paths = weight.shape[1]
            block = products[start : start + ir.dim * paths].view(ir.dim, paths, num, channels)
            out = (block * weight[species].transpose(0, 1)).sum(1)  # [2L+1, N, C]
            outputs.append(out.permute(1, 2, 0).reshape(num, channels * ir.dim))
            start += ir.dim * paths
        return torch.cat(outputs, dim=-1)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.irreps_in} -> {self.irreps_out}, correlation={self.correlation}, "
            f"num_elements={self.num_elements}, paths={self.paths})"
        )
