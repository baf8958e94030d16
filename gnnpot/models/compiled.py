"""Tracing and compiling the energy-and-gradient function (``ForceField.enable_compile``).

Written by hand because no library call does it: ``torch.compile`` stops its graph at
``torch.autograd.grad`` (the forces), and its ahead-of-time autograd cannot take the double
backward that force training needs. So :func:`torch.fx.experimental.proxy_tensor.make_fx` first
traces the function -- the potential's forward *and* the backward that gives forces and virials
(:func:`~gnnpot.models.forces.energy_gradients`) -- into one plain graph of aten operations with
symbolic sizes. That graph is an ordinary differentiable function of the weights, so
``torch.compile`` (TorchInductor) compiles it and, while training, differentiates it once more for
the loss.

One graph is traced per kind of input: training or inference, with or without virials, paired
edges or not, dtype, device, the family's prepared inputs (DimeNet triplets), and which sizes are
0, 1 or larger (the tracer specialises on those). Numbers of atoms, edges and frames are otherwise
free: an MD run or a training epoch compiles once per kind. This module knows nothing of models:
:class:`~gnnpot.models.forces.ForceField` hands it a function of ``(weights, tensors)``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

import torch
import torch.fx.experimental._config as fx_config
from torch import Tensor
from torch.fx.experimental.proxy_tensor import make_fx

GradientFunction = Callable[[dict[str, Tensor], list[Tensor]], tuple[Tensor, ...]]

# Compiled graphs by architecture: the weights are graph inputs, so models built from the same
# config (a calculator's copy, committee members, an EMA copy) share one compilation.
_SHARED: dict[tuple, GradientFunction] = {}


def size_signature(tensors: list[Tensor]) -> tuple:
    """What a traced graph is specialised on: dtype, device and which sizes are 0, 1 or larger."""
    return tuple((t.dtype, t.device, tuple(min(int(n), 2) for n in t.shape)) for t in tensors)


def compile_shared(
    architecture: Hashable | None,
    key: Hashable,
    function: GradientFunction,
    params: dict[str, Tensor],
    tensors: list[Tensor],
    create_graph: bool,
) -> GradientFunction:
    """:func:`trace_and_compile`, reusing the graph of an earlier model of the same ``architecture``.

    Args:
        architecture: what fixes the graph besides the inputs (config, weight shapes); ``None``
            compiles afresh.
        key: the kind of input (see the module docstring).
        function: ``function(params, tensors) -> tuple of tensors``, with no data-dependent branches.
        params: example weights by name.
        tensors: example inputs.
        create_graph: the graph will be differentiated again (training).
    """
    if architecture is not None and (architecture, key) in _SHARED:
        return _SHARED[(architecture, key)]
    compiled = trace_and_compile(function, params, tensors, create_graph)
    if architecture is not None:
        _SHARED[(architecture, key)] = compiled
    return compiled


def trace_and_compile(
    function: GradientFunction, params: dict[str, Tensor], tensors: list[Tensor], create_graph: bool
) -> GradientFunction:
    """Trace ``function`` with symbolic sizes into one aten graph and compile it with Inductor."""
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
    bypass(traced, torch.ops.aten.detach.default)


def bypass(graph: torch.fx.GraphModule, target: Callable) -> None:
    """Replace every call of ``target`` in ``graph`` by its first argument (an identity for the values)."""
    for node in list(graph.graph.nodes):
        if node.op == "call_function" and node.target is target:
            node.replace_all_uses_with(node.args[0])
            graph.graph.erase_node(node)
    graph.recompile()


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
    return compile_fx(graph, example_inputs, decompositions=_DecompositionTable(table))


class _DecompositionTable(dict):
    """Inductor's decomposition table less ``index_add``, with a cache key Inductor can hash.

    Inductor's on-disk cache of compiled graphs hashes the compile options; some entries of the
    table are C++ functions that cannot be pickled, so with a plain dict every compilation bypassed
    the cache and recompiled from scratch (ethanol MACE: 119 s before the first training step).
    The table is fixed by the torch version and the operators left out, so those are its key.
    """

    def __reduce_ex__(self, protocol: object) -> tuple:
        return (str, (f"inductor decompositions of torch {torch.__version__} without index_add",))
