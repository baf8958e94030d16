"""``ForceField``: energy, forces and stress of any :class:`~gnnpot.models.potential.Potential`.

The data flows one way: the input graph's tensors (:class:`EnergyInputs`, with the family's
``prepare`` done once, eagerly) go into :func:`energy_gradients`, which computes the edge vectors,
builds the family's graph (:func:`~gnnpot.representations.family_graph`) and takes one gradient.
The same function runs eagerly or traced and compiled (:mod:`gnnpot.models.compiled`).

The energy of a local model depends on positions and cell only through the edge vectors ``r_e``,
so one gradient ``g_e = dE/dr_e`` gives both: ``F_i = sum_{e: i_e = i} g_e - sum_{e: j_e = i} g_e``
and the virial ``W = sum_e r_e (x) g_e``, whose symmetric part over the cell volume is the stress
(ASE sign: positive = tensile, ``stress = (1/V) dE/d(strain)``).

A model with a long-range head or a dispersion term (:attr:`Potential.direct_geometry`) also
depends on positions and cell directly (Ewald phases, all-pairs Coulomb, D3 pairs). Its graph then
carries ``pos`` and ``cell`` as tensors of their own, apart from the ones the edge vectors are
computed from, and the same gradient call also takes ``g_pos = dE/dpos`` and ``g_cell = dE/dcell``
(partial derivatives: the paths through the edge vectors are in ``g_e``). A symmetric strain
``eps`` moves both, ``pos -> pos (1 + eps)`` and ``cell -> cell (1 + eps)``, so those paths add
``-g_pos`` to the forces and ``dE/d(eps) = pos^T g_pos + cell^T g_cell`` to the virial; the total
derivative is the sum of the partial ones, so nothing is counted twice. The cell term is booked
evenly on the frame's atoms. The compiled path does not cover such models
(:meth:`ForceField.enable_compile` refuses them).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch_geometric.data import Data

from gnnpot import keys
from gnnpot.models import compiled
from gnnpot.models.potential import Potential
from gnnpot.nn import edge_vectors, edges_paired, gather, scatter_sum
from gnnpot.representations import family_graph


@dataclasses.dataclass
class EnergyInputs:
    """The tensors :func:`energy_gradients` needs: a plain bundle, so a tracer can take it apart.

    Attributes:
        pos: [N, 3] Å. cell: [B, 3, 3] Å. z: [N] atomic numbers. species: [N] species index.
        edge_index: [2, E]. edge_shift: [E, 3] integer. batch: [N] frame of each atom.
        prepared: the tensors of :meth:`Potential.prepare` (the family's, and the extra terms').
        paired: edges follow the pair convention of :mod:`gnnpot.keys`.
        direct_geometry: the energy depends on ``pos`` and ``cell`` directly, not only through the
            edge vectors (:attr:`Potential.direct_geometry`: a long-range head or dispersion).
    """

    pos: Tensor
    cell: Tensor
    z: Tensor
    species: Tensor
    edge_index: Tensor
    edge_shift: Tensor
    batch: Tensor
    prepared: dict[str, Tensor]
    paired: bool = False
    direct_geometry: bool = False

    TENSORS: ClassVar[tuple[str, ...]] = ("pos", "cell", "z", "species", "edge_index", "edge_shift", "batch")

    def tensors(self) -> list[Tensor]:
        """The tensors in a fixed order: :data:`TENSORS`, then ``prepared`` by sorted key."""
        return [getattr(self, name) for name in self.TENSORS] + [self.prepared[k] for k in sorted(self.prepared)]

    @classmethod
    def from_tensors(cls, tensors: list[Tensor], prepared_keys: tuple[str, ...], paired: bool) -> EnergyInputs:
        """The inverse of :meth:`tensors` (``prepared_keys`` sorted)."""
        count = len(cls.TENSORS)
        named = dict(zip(cls.TENSORS, tensors[:count], strict=True))
        prepared = dict(zip(prepared_keys, tensors[count:], strict=True))
        return cls(**named, prepared=prepared, paired=paired)


def energy_gradients(
    potential: Callable[[Data, Tensor | None], Tensor],
    inputs: EnergyInputs,
    baseline: Tensor | None,
    want_virial: bool,
    create_graph: bool,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Per-atom energies [N] (eV), forces [N, 3] (eV/Å) and per-atom virials [N, 3, 3] (eV) or ``None``.

    Args:
        potential: ``potential(graph, baseline) -> [N]``: a :class:`Potential` or a functional call of one.
        inputs: the graph's tensors.
        baseline: the potential's isolated-atom readout, or ``None`` to compute it inside.
        want_virial: also return per-atom virials; the virial of edge ``e`` is booked on its centre ``i_e``.
        create_graph: keep the graph of the gradient (force training needs the second derivative).

    Written as one function of tensors with no data-dependent branches, so that
    :mod:`gnnpot.models.compiled` can trace it (``inputs.direct_geometry`` is fixed per model).
    """
    i, j = inputs.edge_index[0], inputs.edge_index[1]
    num_atoms = inputs.pos.shape[0]
    with torch.enable_grad():
        edge_vec = edge_vectors(inputs.pos, inputs.cell, inputs.edge_index, inputs.edge_shift, inputs.batch)
        if not edge_vec.requires_grad:  # a leaf unless the caller wants derivatives through pos
            edge_vec.requires_grad_(True)
        prepared, direct = inputs.prepared, []
        if inputs.direct_geometry:
            direct = [_direct_input(inputs.pos), _direct_input(inputs.cell)]
            prepared = {**prepared, keys.POSITIONS: direct[0], keys.CELL: direct[1]}
        graph = family_graph(
            inputs.z,
            inputs.species,
            inputs.edge_index,
            inputs.edge_shift,
            edge_vec,
            inputs.batch,
            inputs.paired,
            prepared,
        )
        atomic = potential(graph, baseline)
        grad, *direct_grads = torch.autograd.grad(
            atomic.sum(), [edge_vec, *direct], create_graph=create_graph, allow_unused=True
        )
    if grad is None:  # no edges reach the energy (isolated atoms)
        grad = torch.zeros_like(edge_vec)
    forces = scatter_sum(grad, i, num_atoms) - scatter_sum(grad, j, num_atoms)
    virial = None
    if want_virial:
        virial = scatter_sum(edge_vec.unsqueeze(-1) * grad.unsqueeze(-2), i, num_atoms)
    if inputs.direct_geometry:
        forces, virial = _add_direct(inputs, direct_grads, forces, virial)
    return atomic, forces, virial


def _direct_input(tensor: Tensor) -> Tensor:
    """A copy of ``pos`` or ``cell`` for the direct dependence, differentiable on its own.

    A copy, so that its gradient holds only the paths through it, not those through the edge
    vectors computed from the original; still connected to the original when the caller
    differentiates through positions.
    """
    copy = tensor.clone()
    if not copy.requires_grad:
        copy.requires_grad_(True)
    return copy


def _add_direct(
    inputs: EnergyInputs, grads: list[Tensor | None], forces: Tensor, virial: Tensor | None
) -> tuple[Tensor, Tensor | None]:
    """Forces and per-atom virials with the direct paths added (see the module docstring).

    Args:
        inputs: the graph's tensors.
        grads: ``[dE/dpos [N, 3], dE/dcell [B, 3, 3]]``, ``None`` where the energy does not reach them.
        forces: [N, 3] forces through the edge vectors.
        virial: [N, 3, 3] per-atom virials through the edge vectors, or ``None``.
    """
    grad_pos, grad_cell = grads
    grad_pos = torch.zeros_like(inputs.pos) if grad_pos is None else grad_pos
    grad_cell = torch.zeros_like(inputs.cell) if grad_cell is None else grad_cell
    forces = forces - grad_pos
    if virial is not None:
        num_frames = inputs.cell.shape[0]
        counts = scatter_sum(torch.ones_like(inputs.pos[:, 0]), inputs.batch, num_frames).clamp(min=1)
        cell_virial = inputs.cell.transpose(1, 2) @ grad_cell / counts.view(-1, 1, 1)
        virial = virial + inputs.pos.unsqueeze(-1) * grad_pos.unsqueeze(-2) + gather(cell_virial, inputs.batch)
    return forces, virial


def centred_positions(pos: Tensor, batch: Tensor, num_frames: int, dtype: torch.dtype) -> Tensor:
    """Positions in the model's dtype; cast to a narrower dtype after moving each frame's centre to the origin.

    The energy depends on positions only through differences, so a common translation of a frame
    changes nothing but the rounding: a molecule at 1e8 Å cast to float32 as it is keeps no digit
    of its bond lengths (float32 spacing there is 8 Å), cast after centring in float64 it keeps
    them all. Periodic frames translate with their lattice, which leaves every edge vector as it is.

    Args:
        pos: [N, 3] positions as the graph holds them (float64 from :func:`gnnpot.data.build_graphs`).
        batch: [N] frame of each atom.
        num_frames: number of frames.
        dtype: the model's float dtype.
    """
    if pos.dtype == dtype or torch.finfo(pos.dtype).eps >= torch.finfo(dtype).eps or pos.shape[0] == 0:
        return pos.to(dtype)
    with torch.no_grad():  # a translation: no contribution to forces, so no gradient to keep
        counts = scatter_sum(torch.ones_like(pos[:, :1]), batch, num_frames).clamp(min=1)
        centre = scatter_sum(pos, batch, num_frames) / counts
    return (pos - gather(centre, batch)).to(dtype)


def virial_to_stress(virial: Tensor, cell: Tensor) -> Tensor:
    """Stress [B, 3, 3] (eV/Å³, ASE sign) from per-frame virials [B, 3, 3] (eV) and cells [B, 3, 3] (Å).

    The symmetric part of the virial over the cell volume; frames with zero volume (molecules in a
    mixed batch) get zero stress.
    """
    volume = torch.linalg.det(cell).abs()
    safe = torch.where(volume > 1e-8, volume, torch.ones_like(volume))
    stress = 0.5 * (virial + virial.transpose(1, 2))
    return stress / safe.view(-1, 1, 1) * (volume > 1e-8).view(-1, 1, 1)


class ForceField(nn.Module):
    """Energy, forces = -dE/dpos and stress = (1/V) dE/d(strain) for any :class:`Potential`.

    Stress is computed for batches with any periodic frame. The graph for second derivatives is
    kept only while training (``self.training`` and grad enabled), so inference does not pay for it.

    The ForceField owns every cache of the model: in eval mode the isolated-atom baseline and the
    detached weights are kept until a weight changes (:meth:`weights_version`), and the compiled
    graphs of :meth:`enable_compile` are kept per kind of input.

    Args:
        potential: the per-atom energy model.
        config: plain-data description used to rebuild the model (see :func:`~gnnpot.models.build_model`).
    """

    def __init__(self, potential: Potential, config: dict | None = None) -> None:
        super().__init__()
        self.potential = potential
        self.config = dict(config or {})
        self.compiled = False
        self._compiled_fns: dict[tuple, Callable] = {}
        self._forget_weights()
        self.register_load_state_dict_post_hook(lambda module, _: module._forget_weights())

    @property
    def cutoff(self) -> float:
        """Neighbour radius, Å."""
        return float(self.potential.representation.cutoff)

    @property
    def elements(self) -> list[int]:
        """Atomic numbers the model knows, in the order of the species index."""
        return list(self.potential.elements)

    def enable_compile(self, enabled: bool = True) -> ForceField:
        """Use the compiled path (``torch.compile``, see :mod:`gnnpot.models.compiled`) from now on.

        The first call for each new kind of input (training or inference, with or without stress,
        dtype, device) traces and compiles, which takes seconds to a minute; later calls reuse it,
        whatever the numbers of atoms and edges.

        Raises:
            ValueError: the model has a long-range head or a dispersion term. Their pair lists,
                k-vectors and loops over periodic frames change with every input, which a graph
                traced once cannot follow; such a model runs eagerly.
        """
        if enabled and self.potential.direct_geometry:
            raise ValueError(
                "the compiled path does not cover models with a long-range head or dispersion "
                "(long_range, dispersion); run them eagerly (compile: false)"
            )
        self.compiled = bool(enabled)
        self._compiled_fns = {}
        return self

    def forward(self, data: Data) -> dict[str, Tensor]:
        """Energy, forces, per-atom energies and stress of a (batched) graph.

        Args:
            data: an :class:`~gnnpot.data.AtomicData` or a batch of them.

        Returns:
            ``energy`` [B] eV, ``forces`` [N, 3] eV/Å, ``atomic_energy`` [N] eV and, when some frame
            is periodic, ``stress`` [B, 3, 3] eV/Å³.
        """
        dtype = self.potential.scale_shift.scale.dtype
        batch = data.get(keys.BATCH)
        if batch is None:
            batch = torch.zeros(data[keys.POSITIONS].shape[0], dtype=torch.long, device=data[keys.POSITIONS].device)
        num_frames = int(data[keys.CELL].shape[0])
        # Host facts a graph builder attached (the calculator's device-resident path) replace the
        # checks that would read device tensors back to the host.
        paired = data.get(keys.PAIRED_EDGES)
        if not isinstance(paired, bool):
            paired = edges_paired(data[keys.EDGE_INDEX], data[keys.EDGE_SHIFT])
        inputs = EnergyInputs(
            pos=centred_positions(data[keys.POSITIONS], batch, num_frames, dtype),
            cell=data[keys.CELL].to(dtype),
            z=data[keys.ATOMIC_NUMBERS],
            species=self.potential.species(data[keys.ATOMIC_NUMBERS], checked=data.get(keys.ELEMENTS_CHECKED) is True),
            edge_index=data[keys.EDGE_INDEX],
            edge_shift=data[keys.EDGE_SHIFT],
            batch=batch,
            prepared=self.potential.prepare(data),
            paired=paired,
            direct_geometry=self.potential.direct_geometry,
        )
        want_virial = data.get(keys.ANY_PERIODIC)
        if not isinstance(want_virial, bool):
            want_virial = bool(data[keys.PBC].any())
        create_graph = self.training and torch.is_grad_enabled()
        if self.compiled:
            atomic, forces, virial = self._compiled_gradients(inputs, want_virial, create_graph)
        else:
            baseline = None if self.potential.training else self._baseline(inputs.pos)
            atomic, forces, virial = energy_gradients(self.potential, inputs, baseline, want_virial, create_graph)
        out = {keys.ENERGY: scatter_sum(atomic, batch, num_frames), keys.FORCES: forces, keys.ATOMIC_ENERGY: atomic}
        if want_virial:
            out[keys.STRESS] = virial_to_stress(scatter_sum(virial, batch, num_frames), inputs.cell)
        return out

    # --- caches --------------------------------------------------------------------------------

    def weights_version(self) -> tuple[int, ...]:
        """The version of every parameter and buffer.

        It changes with any in-place change of a weight (an optimizer or EMA step,
        ``load_state_dict``, ``torch.no_grad()`` edits).

        The tensor list is walked once (walking the module tree costs ~30 us a call) and forgotten on
        ``train``/``eval``, ``.to()``/``.float()`` and ``load_state_dict``. Edits through
        ``param.data`` and parameters replaced by assignment bypass this: call ``model.eval()`` after them.
        """
        return tuple(t._version for t in self._weight_dict().values())

    def _weight_dict(self) -> dict[str, Tensor]:
        """The potential's parameters and buffers by name (walked once, see :meth:`weights_version`)."""
        if self._weights is None:
            self._weights = {**dict(self.potential.named_parameters()), **dict(self.potential.named_buffers())}
        return self._weights

    def _baseline(self, like: Tensor) -> Tensor:
        """:meth:`Potential.isolated_readout` for inference, kept until a weight changes.

        The baseline depends on the weights only, and one more pass of the representation costs
        about 15 % of a small molecule's energy + forces.
        """
        key = (like.dtype, like.device, self.weights_version())
        if self._baseline_cache is None or self._baseline_cache[0] != key:
            with torch.no_grad():
                self._baseline_cache = (key, self.potential.isolated_readout(like))
        return self._baseline_cache[1]

    def _frozen_weights(self) -> dict[str, Tensor]:
        """The weights, detached (inputs of inference graphs), kept while :meth:`weights_version` holds.

        Detaching each weight costs ~70 us, a tenth of a small molecule's compiled call.
        """
        version = self.weights_version()
        if self._detached is None or self._detached[0] != version:
            self._detached = (version, {name: t.detach() for name, t in self._weight_dict().items()})
        return self._detached[1]

    def _forget_weights(self) -> None:
        self._weights: dict[str, Tensor] | None = None
        self._baseline_cache: tuple[tuple, Tensor] | None = None
        self._detached: tuple[tuple, dict[str, Tensor]] | None = None

    def train(self, mode: bool = True) -> ForceField:
        """Set training mode, and forget the cached weights (see :meth:`weights_version`)."""
        self._forget_weights()
        return super().train(mode)

    def _apply(self, fn: Callable, recurse: bool = True) -> ForceField:
        self._forget_weights()  # .to(), .float(), .double() may give new tensors
        return super()._apply(fn, recurse)

    def __getstate__(self) -> dict:
        # compiled functions are neither picklable nor deep-copyable; copies compile again
        state = dict(super().__getstate__())
        state.update(_compiled_fns={}, _weights=None, _baseline_cache=None, _detached=None)
        return state

    # --- the compiled path -----------------------------------------------------------------------

    def _compiled_gradients(
        self, inputs: EnergyInputs, want_virial: bool, create_graph: bool
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """:func:`energy_gradients` through a compiled graph, the weights as its inputs.

        Weights are detached for inference, live while training so that the loss reaches them. One
        graph is compiled per kind of input (see :mod:`gnnpot.models.compiled`).
        """
        training = self.potential.training
        if training:  # the baseline is part of the traced graph (its gradient is needed)
            params, baseline = self._weight_dict(), None
            if not create_graph:
                params = {name: p.detach() for name, p in params.items()}
        else:
            params, baseline = self._frozen_weights(), self._baseline(inputs.pos)
        tensors = inputs.tensors() + ([baseline] if baseline is not None else [])
        prepared_keys = tuple(sorted(inputs.prepared))
        key = (
            inputs.paired,
            create_graph,
            want_virial,
            training,
            baseline is not None,
            prepared_keys,
            compiled.size_signature(tensors),
        )
        fn = self._compiled_fns.get(key)
        if fn is None:
            function = self._gradient_function(
                prepared_keys, baseline is not None, inputs.paired, want_virial, create_graph
            )
            fn = compiled.compile_shared(self._architecture(params), key, function, params, tensors, create_graph)
            self._compiled_fns[key] = fn
        atomic, forces, virial = fn(params, tensors)
        return atomic, forces, (virial if want_virial else None)

    def _gradient_function(
        self, prepared_keys: tuple[str, ...], has_baseline: bool, paired: bool, want_virial: bool, create_graph: bool
    ) -> Callable[[dict[str, Tensor], list[Tensor]], tuple[Tensor, Tensor, Tensor]]:
        """:func:`energy_gradients` as a function of (weights, tensors), for the tracer."""
        potential = self.potential

        def function(params: dict[str, Tensor], tensors: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
            baseline = tensors[-1] if has_baseline else None
            inputs = EnergyInputs.from_tensors(tensors[: len(tensors) - has_baseline], prepared_keys, paired)

            def call(graph: Data, baseline: Tensor | None) -> Tensor:
                return functional_call(potential, params, (graph, baseline))

            atomic, forces, virial = energy_gradients(call, inputs, baseline, want_virial, create_graph)
            # a graph output must be a tensor: an empty one stands for "no virial"
            return atomic, forces, virial if virial is not None else forces.new_zeros(0)

        return function

    def _architecture(self, params: dict[str, Tensor]) -> tuple | None:
        """What fixes the traced graph besides the inputs.

        The config and the weights' names, shapes, dtypes and devices; ``None`` (no sharing) for a
        model without a config.
        """
        if not self.config:
            return None
        config = json.dumps(self.config, sort_keys=True, default=repr)
        return config, tuple((name, tuple(p.shape), p.dtype, p.device) for name, p in params.items())
