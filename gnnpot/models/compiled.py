"""The compiled path of :class:`~gnnpot.models.potential.ForceField` (``enable_compile``).

Written by hand because no library call does it: ``torch.compile`` stops its graph at
``torch.autograd.grad`` (the forces), and its ahead-of-time autograd cannot take the double
backward that force training needs. So :func:`torch.fx.experimental.proxy_tensor.make_fx` first
traces :func:`~gnnpot.models.potential.energy_gradients` -- the potential's forward *and* the
backward that gives forces and virials -- into one plain graph of aten operations with symbolic
sizes. That graph is an ordinary differentiable function of the weights, so ``torch.compile``
(TorchInductor) compiles it and, while training, differentiates it once more for the loss.

One graph is traced per kind of input: training or inference, with or without virials, paired
edges or not, dtype, device, extra inputs (DimeNet triplets), and which sizes are 0, 1 or larger (the tracer
specialises on those). Numbers of atoms, edges and frames are otherwise free: an MD run or a
training epoch compiles once per kind.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.fx.experimental._config as fx_config
from torch import Tensor
from torch.func import functional_call
from torch.fx.experimental.proxy_tensor import make_fx
from torch_geometric.data import Data

from gnnpot import keys

if TYPE_CHECKING:
    from gnnpot.models.potential import ForceField, GradientInputs

_TENSORS = ("pos", "cell", "z", "species", "edge_index", "edge_shift", "batch")


def compiled_gradients(
    forcefield: ForceField, inputs: GradientInputs, want_virial: bool, create_graph: bool
) -> tuple[Tensor, Tensor, Tensor | None]:
    """:func:`~gnnpot.models.potential.energy_gradients` through a compiled graph.

    Weights enter as inputs: detached for inference, as they are while training so that the loss
    reaches them. Returns per-atom energies, forces and per-atom virials (or ``None``).
    """
    potential = forcefield.potential
    inputs = dataclasses.replace(inputs, extra={**_prepare(potential.representation, inputs), **inputs.extra})
    weights = forcefield._weights
    if weights is None:
        weights = forcefield._weights = _Weights(potential)
    if potential.training:  # the baseline is part of the traced graph (its gradient is needed)
        params, baseline = weights.live, None
        if not create_graph:
            params = {name: p.detach() for name, p in params.items()}
    else:
        params, baseline = weights.frozen(), potential._baseline(inputs.pos)
    tensors = [getattr(inputs, name) for name in _TENSORS]
    extra_keys = tuple(sorted(inputs.extra))
    tensors += [inputs.extra[k] for k in extra_keys]
    if baseline is not None:
        tensors.append(baseline)
    key = (
        inputs.paired,
        create_graph,
        want_virial,
        potential.training,
        baseline is not None,
        extra_keys,
        tuple((t.dtype, t.device, tuple(min(int(n), 2) for n in t.shape)) for t in tensors),
    )
    fn = forcefield._compiled_fns.get(key)
    if fn is None:
        shared = _architecture(forcefield, params)
        fn = _SHARED.get((shared, key)) if shared is not None else None
        if fn is None:
            fn = _compile(
                forcefield, params, tensors, extra_keys, baseline is not None, inputs.paired, want_virial, create_graph
            )
            if shared is not None:
                _SHARED[(shared, key)] = fn
        forcefield._compiled_fns[key] = fn
    atomic, forces, virial = fn(params, tensors)
    return atomic, forces, (virial if want_virial else None)


# Compiled graphs by architecture: the weights are graph inputs, so models built from the same
# config (a calculator's copy, committee members, an EMA copy) share one compilation.
_SHARED: dict[tuple, Callable] = {}


def _architecture(forcefield: ForceField, params: dict[str, Tensor]) -> tuple | None:
    """What fixes the traced graph besides the inputs: the config and the weights' names, shapes
    and dtypes. ``None`` (no sharing) for a model without a config."""
    if not forcefield.config:
        return None
    config = json.dumps(forcefield.config, sort_keys=True, default=repr)
    return config, tuple((name, tuple(p.shape), p.dtype, p.device) for name, p in params.items())


class _Weights:
    """The potential's weights as graph inputs, kept between calls.

    Walking the module tree for them and detaching each costs ~70 us, a tenth of a small
    molecule's compiled call. Here the walk happens once; in eval mode the detached weights are
    reused while :meth:`Potential.weights_version` is unchanged. ``ForceField`` drops this object on
    ``.to()``/``.float()``, ``train()``/``eval()`` and ``enable_compile``.
    """

    def __init__(self, potential: torch.nn.Module) -> None:
        self.potential = potential
        self.live = {**dict(potential.named_parameters()), **dict(potential.named_buffers())}
        self._version: tuple | None = None
        self._detached: dict[str, Tensor] = {}

    def frozen(self) -> dict[str, Tensor]:
        """The weights, detached (for inference graphs)."""
        version = self.potential.weights_version()
        if version != self._version:
            self._detached = {name: t.detach() for name, t in self.live.items()}
            self._version = version
        return self._detached


def _prepare(representation: torch.nn.Module, inputs: GradientInputs) -> dict[str, Tensor]:
    """Data-dependent index work a traced graph cannot hold (DimeNet's triplets), done eagerly."""
    if not hasattr(representation, "triplets") or keys.TRIPLET_KJ in inputs.extra:
        return {}
    graph = Data(edge_index=inputs.edge_index, edge_shift=inputs.edge_shift, species=inputs.species)
    triplet_kj, triplet_ji = representation.triplets(graph)
    return {keys.TRIPLET_KJ: triplet_kj, keys.TRIPLET_JI: triplet_ji}


def _compile(
    forcefield: ForceField,
    params: dict[str, Tensor],
    tensors: list[Tensor],
    extra_keys: tuple[str, ...],
    has_baseline: bool,
    paired: bool,
    want_virial: bool,
    create_graph: bool,
) -> Callable:
    from gnnpot.models.potential import GradientInputs, energy_gradients

    potential = forcefield.potential

    def function(params: dict[str, Tensor], tensors: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        named = dict(zip(_TENSORS, tensors[: len(_TENSORS)], strict=True))
        rest = tensors[len(_TENSORS) :]
        extra = dict(zip(extra_keys, rest[: len(extra_keys)], strict=True))
        baseline = rest[len(extra_keys)] if has_baseline else None
        inputs = GradientInputs(**named, extra=extra, paired=paired)

        def call(graph: Data, species: Tensor, baseline: Tensor | None, edge_vec: Tensor) -> Tensor:
            return functional_call(potential, params, (graph, species, baseline, edge_vec))

        atomic, forces, virial = energy_gradients(call, inputs, baseline, want_virial, create_graph)
        # a graph output must be a tensor: an empty one stands for "no virial"
        return atomic, forces, virial if virial is not None else forces.new_zeros(0)

    # Without duck sizing, sizes that happen to be equal in the example (atoms and edges, say)
    # stay separate symbols instead of being assumed equal for all later inputs.
    with fx_config.patch(use_duck_shape=False):
        traced = make_fx(function, tracing_mode="symbolic")(
            {name: p.detach() for name, p in params.items()}, [t.detach() for t in tensors]
        )
    if create_graph:
        _drop_detach(traced)
    return torch.compile(traced, backend=_inductor, dynamic=True, fullgraph=True)


def _drop_detach(traced: torch.fx.GraphModule) -> None:
    """Make the traced force backward differentiable in everything it depends on.

    Autograd saves the outputs of some operations (``sqrt``, ``exp``, ``sigmoid``, norms) for their
    backward; the tracer records each reuse as ``detach(output)``. Eager autograd re-attaches
    such outputs when ``create_graph`` is set, but in the traced graph the ``detach`` would stop
    the second derivative, and the force loss would miss paths (PaiNN's gradients were off by up
    to 100 % before this). gnnpot's models never detach inside the forward, so every ``detach``
    in the graph is one of these and is replaced by its input.
    """
    for node in list(traced.graph.nodes):
        if node.op == "call_function" and node.target is torch.ops.aten.detach.default:
            node.replace_all_uses_with(node.args[0])
            traced.graph.erase_node(node)
    traced.recompile()


def _inductor(graph: torch.fx.GraphModule, example_inputs: list) -> Callable:
    """TorchInductor, but ``index_add`` stays a call to the aten kernel.

    Inductor's own lowering turns each ``index_add`` (every message sum, and the backward of every
    gather) into a generated loop of atomic adds, measured 5-8x slower on CPU than the aten kernel
    at these sizes (50-60 us against 8 us for 420 edges x 64 features). ``aten::index_add`` is on
    Inductor's list of operators allowed to fall back, so dropping its decomposition is enough.
    """
    from torch._inductor.compile_fx import compile_fx
    from torch._inductor.decomposition import select_decomp_table

    keep = (torch.ops.aten.index_add, torch.ops.aten.index_add_)
    table = {op: fn for op, fn in select_decomp_table().items() if getattr(op, "overloadpacket", None) not in keep}
    return compile_fx(graph, example_inputs, decompositions=table)
