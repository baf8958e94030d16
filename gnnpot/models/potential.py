"""``Potential`` (energy) and ``ForceField``, the one autograd wrapper for forces and stress."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence

import torch
from ase.data import chemical_symbols
from torch import Tensor, nn
from torch_geometric.data import Data

from gnnpot import keys
from gnnpot.nn import ScaleShift, ZBLRepulsion, edge_vectors, edges_paired, scatter_sum


class Potential(nn.Module):
    """Per-atom energies: representation -> atomwise readout -> shift/scale (+ ZBL prior).

    Args:
        representation: a layer family; ``forward(graph) -> [N, representation.num_features]``.
        readout: invariant features to one number per atom.
        scale_shift: per-element E0 and the energy scale.
        elements: atomic numbers the model knows, in the order of the species index.
        pair_repulsion: optional ZBL prior, added to the per-atom energies.
    """

    def __init__(
        self,
        representation: nn.Module,
        readout: nn.Module,
        scale_shift: ScaleShift,
        elements: Sequence[int],
        pair_repulsion: ZBLRepulsion | None = None,
    ) -> None:
        super().__init__()
        self.representation = representation
        self.readout = readout
        self.scale_shift = scale_shift
        self.pair_repulsion = pair_repulsion
        self.elements = [int(z) for z in elements]
        table = torch.full((119,), -1, dtype=torch.long)
        table[torch.tensor(self.elements)] = torch.arange(len(self.elements))
        self.register_buffer("species_table", table, persistent=False)
        self._baseline_cache: tuple[tuple, Tensor] | None = None
        self._weight_list: list[Tensor] | None = None  # parameters and buffers, see weights_version
        self.register_load_state_dict_post_hook(lambda module, _: module._forget_weights())

    def species(self, z: Tensor) -> Tensor:
        """Map atomic numbers [N] to species indices [N]; unknown elements raise ``ValueError``."""
        species = self.species_table[z.clamp(0, 118)]
        if bool((species < 0).any()):
            unknown = sorted({int(n) for n in z[species < 0]})
            names = [chemical_symbols[n] if 0 < n < 119 else str(n) for n in unknown]
            known = [chemical_symbols[n] for n in self.elements]
            raise ValueError(f"model knows elements {known}, got unknown element(s) {names}")
        return species

    def forward(
        self,
        data: Data,
        species: Tensor | None = None,
        baseline: Tensor | None = None,
        edge_vec: Tensor | None = None,
    ) -> Tensor:
        """Per-atom energies [N] in eV. Edge geometry is computed here from ``pos`` and ``cell``.

        ``species`` (from :meth:`species`), ``baseline`` (from :meth:`isolated_readout`) and
        ``edge_vec`` (from :func:`edge_vectors`) may be given when the caller computed them already
        (a traced graph must not branch on data; forces are taken as gradients of ``edge_vec``).

        The readout is referenced to the isolated atom: ``E_i = scale * (y_i - y_i^isolated) + E0``,
        where ``y^isolated`` is the readout of the same species with no neighbours. An atom with no
        neighbours therefore gets exactly its E0, whatever the weights.
        """
        batch = _batch(data)
        graph = copy.copy(data)
        graph[keys.BATCH] = batch
        graph[keys.SPECIES] = self.species(data[keys.ATOMIC_NUMBERS]) if species is None else species
        if edge_vec is None:
            edge_vec = edge_vectors(
                data[keys.POSITIONS], data[keys.CELL], data[keys.EDGE_INDEX], data[keys.EDGE_SHIFT], batch
            )
        graph[keys.EDGE_VEC] = edge_vec
        graph[keys.EDGE_LEN] = torch.linalg.vector_norm(edge_vec, dim=-1)
        readout = self.readout(self.representation(graph))
        baseline = self._baseline(edge_vec) if baseline is None else baseline
        atomic = self.scale_shift(readout - baseline[graph[keys.SPECIES]], graph[keys.SPECIES])
        if self.pair_repulsion is not None:
            atomic = atomic + self.pair_repulsion(
                data[keys.ATOMIC_NUMBERS], data[keys.EDGE_INDEX], graph[keys.EDGE_LEN]
            )
        return atomic

    def _baseline(self, like: Tensor) -> Tensor:
        """:meth:`isolated_readout`, cached in eval mode until a weight changes.

        The baseline depends on the weights only, and one more pass of the representation costs
        about 15 % of a small molecule's energy + forces. Training needs its gradient, so it is
        recomputed there. The cache is keyed on :meth:`weights_version`.
        """
        if self.training:
            self._baseline_cache = None
            return self.isolated_readout(like)
        key = (like.dtype, like.device, self.weights_version())
        if self._baseline_cache is None or self._baseline_cache[0] != key:
            with torch.no_grad():
                self._baseline_cache = (key, self.isolated_readout(like))
        return self._baseline_cache[1]

    def weights_version(self) -> tuple[int, ...]:
        """The version of every parameter and buffer: changes with any in-place change of a weight
        (an optimizer or EMA step, ``load_state_dict``, ``torch.no_grad()`` edits).

        The tensor list is walked once (walking the module tree costs ~30 us a call) and forgotten on
        ``train``/``eval``, ``.to()``/``.float()`` and ``load_state_dict``. Edits through
        ``param.data`` and parameters replaced by assignment bypass this: call ``model.eval()`` after them.
        """
        if self._weight_list is None:
            self._weight_list = [*self.parameters(), *self.buffers()]
        return tuple(t._version for t in self._weight_list)

    def _forget_weights(self) -> None:
        self._baseline_cache = None
        self._weight_list = None

    def train(self, mode: bool = True) -> Potential:
        self._forget_weights()
        return super().train(mode)

    def _apply(self, fn: Callable, recurse: bool = True) -> Potential:
        self._forget_weights()  # .to(), .float(), .double() may give new tensors
        return super()._apply(fn, recurse)

    def isolated_readout(self, like: Tensor) -> Tensor:
        """Readout of each species as an isolated atom [num_elements], in the dtype of ``like``."""
        num = len(self.elements)
        device = like.device
        empty = torch.zeros(0, dtype=torch.long, device=device)
        arange = torch.arange(num, device=device)
        graph = Data(
            num_nodes=num,
            batch=arange,
            natoms=torch.ones(num, dtype=torch.long, device=device),
            species=arange,
            edge_index=empty.view(2, 0),
            edge_shift=empty.view(0, 3),
            edge_vec=like.new_zeros(0, 3),
            edge_len=like.new_zeros(0),
            triplet_kj_index=empty,  # no triplets either: nothing data-dependent left to build
            triplet_ji_index=empty,
        )
        return self.readout(self.representation(graph))


class ForceField(nn.Module):
    """Energy, forces = -dE/dpos and stress = (1/V) dE/d(strain) for any :class:`Potential`.

    The energy depends on positions and cell only through the edge vectors ``r_e``, so one
    gradient ``g_e = dE/dr_e`` gives both: ``F_i = sum_{e: i_e = i} g_e - sum_{e: j_e = i} g_e`` and
    the virial ``W = sum_e r_e (x) g_e``, whose symmetric part over the cell volume is the stress
    (ASE sign: positive = tensile). Stress is computed for batches with any periodic frame; frames
    with zero cell volume get zero stress. The graph for second derivatives is kept only while
    training (``self.training`` and grad enabled), so inference does not pay for it.

    :meth:`enable_compile` switches to a compiled path: the whole energy-and-gradient function
    (forward and backward of the potential) is traced once into one graph with symbolic sizes and
    compiled with TorchInductor; the same Python code runs in both paths.

    Args:
        potential: the per-atom energy model.
        config: plain-data description used to rebuild the model (see :func:`build_model`).
    """

    def __init__(self, potential: Potential, config: dict | None = None) -> None:
        super().__init__()
        self.potential = potential
        self.config = dict(config or {})
        self.compiled = False
        self._compiled_fns: dict[tuple, Callable] = {}
        self._weights = None  # gnnpot.models.compiled._Weights, made on the first compiled call

    @property
    def cutoff(self) -> float:
        return float(self.potential.representation.cutoff)

    @property
    def elements(self) -> list[int]:
        return list(self.potential.elements)

    def enable_compile(self, enabled: bool = True) -> ForceField:
        """Use the compiled path (``torch.compile``, see :mod:`gnnpot.models.compiled`) from now on.

        The first call for each new kind of input (training or inference, with or without stress,
        dtype, device) traces and compiles, which takes seconds to a minute; later calls reuse it,
        whatever the numbers of atoms and edges.
        """
        self.compiled = bool(enabled)
        self._compiled_fns = {}
        self._weights = None
        return self

    def __getstate__(self) -> dict:
        # compiled functions are neither picklable nor deep-copyable; copies compile again
        state = dict(super().__getstate__())
        state["_compiled_fns"] = {}
        state["_weights"] = None
        return state

    def _apply(self, fn: Callable, recurse: bool = True) -> ForceField:
        self._weights = None  # .to(), .float(), .double() may give new tensors
        return super()._apply(fn, recurse)

    def train(self, mode: bool = True) -> ForceField:
        self._weights = None
        return super().train(mode)

    def forward(self, data: Data) -> dict[str, Tensor]:
        """Returns ``energy`` [B], ``forces`` [N, 3], ``atomic_energy`` [N] and ``stress`` [B, 3, 3]
        (the last only when some frame is periodic)."""
        dtype = self.potential.scale_shift.scale.dtype
        batch = _batch(data)
        num_frames = int(data[keys.CELL].shape[0])
        inputs = GradientInputs(
            pos=data[keys.POSITIONS].to(dtype),
            cell=data[keys.CELL].to(dtype),
            z=data[keys.ATOMIC_NUMBERS],
            species=self.potential.species(data[keys.ATOMIC_NUMBERS]),
            edge_index=data[keys.EDGE_INDEX],
            edge_shift=data[keys.EDGE_SHIFT],
            batch=batch,
            extra={k: data[k] for k in (keys.TRIPLET_KJ, keys.TRIPLET_JI) if data.get(k) is not None},
            paired=edges_paired(data[keys.EDGE_INDEX], data[keys.EDGE_SHIFT]),
        )
        want_virial = bool(data[keys.PBC].any())
        create_graph = self.training and torch.is_grad_enabled()
        if self.compiled:
            from gnnpot.models.compiled import compiled_gradients

            atomic, forces, virial = compiled_gradients(self, inputs, want_virial, create_graph)
        else:
            atomic, forces, virial = energy_gradients(self.potential, inputs, None, want_virial, create_graph)
        out = {keys.ENERGY: scatter_sum(atomic, batch, num_frames), keys.FORCES: forces, keys.ATOMIC_ENERGY: atomic}
        if want_virial:
            virial = scatter_sum(virial, batch, num_frames)
            volume = torch.linalg.det(inputs.cell).abs()
            safe = torch.where(volume > 1e-8, volume, torch.ones_like(volume))
            stress = 0.5 * (virial + virial.transpose(1, 2))
            out[keys.STRESS] = stress / safe.view(-1, 1, 1) * (volume > 1e-8).view(-1, 1, 1)
        return out


@dataclasses.dataclass
class GradientInputs:
    """The tensors :func:`energy_gradients` needs (a plain bundle, so a tracer can take them apart)."""

    pos: Tensor
    cell: Tensor
    z: Tensor
    species: Tensor
    edge_index: Tensor
    edge_shift: Tensor
    batch: Tensor
    extra: dict[str, Tensor]
    paired: bool = False  # edges follow the pair convention of gnnpot.keys


def energy_gradients(
    potential: Callable[..., Tensor],
    inputs: GradientInputs,
    baseline: Tensor | None,
    want_virial: bool,
    create_graph: bool,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Per-atom energies [N], forces [N, 3] and per-atom virials [N, 3, 3] (or ``None``).

    ``potential(graph, species, baseline, edge_vec)`` is a :class:`Potential` or a functional call
    of one. The virial of edge ``e`` is booked on its centre atom ``i_e``. Written as one function of
    tensors with no data-dependent branches, so that :mod:`gnnpot.models.compiled` can trace it.
    """
    i, j = inputs.edge_index[0], inputs.edge_index[1]
    num_atoms = inputs.pos.shape[0]
    with torch.enable_grad():
        edge_vec = edge_vectors(inputs.pos, inputs.cell, inputs.edge_index, inputs.edge_shift, inputs.batch)
        if not edge_vec.requires_grad:  # a leaf unless the caller wants derivatives through pos
            edge_vec.requires_grad_(True)
        graph = Data(
            pos=inputs.pos,
            cell=inputs.cell,
            z=inputs.z,
            edge_index=inputs.edge_index,
            edge_shift=inputs.edge_shift,
            batch=inputs.batch,
            edge_paired=inputs.paired,
            **inputs.extra,
        )
        atomic = potential(graph, inputs.species, baseline, edge_vec)
        (grad,) = torch.autograd.grad(atomic.sum(), [edge_vec], create_graph=create_graph, allow_unused=True)
    if grad is None:  # no edges reach the energy (isolated atoms)
        grad = torch.zeros_like(edge_vec)
    forces = scatter_sum(grad, i, num_atoms) - scatter_sum(grad, j, num_atoms)
    virial = None
    if want_virial:
        virial = scatter_sum(edge_vec.unsqueeze(-1) * grad.unsqueeze(-2), i, num_atoms)
    return atomic, forces, virial


def _batch(data: Data) -> Tensor:
    batch = data.get(keys.BATCH)
    if batch is None:
        batch = torch.zeros(data[keys.POSITIONS].shape[0], dtype=torch.long, device=data[keys.POSITIONS].device)
    return batch
