"""The compiled path (``ForceField.enable_compile``) against the eager one, in float64.

Every registered family is checked. SchNet runs in the default suite (a compile takes ~10 s
here); the others compile for 30-100 s each on two cores, so they are marked slow (``pytest -m slow``).
"""

import copy

import pytest
import torch
from ase.build import bulk, molecule
from torch_geometric.data import Batch

from gnnpot import REGISTRY, GNNPotCalculator, build_model, keys, testing
from gnnpot.data import AtomicData
from gnnpot.models import clone_model

ELEMENTS = ["H", "C", "O", "Cu", "Au"]
E0 = {1: -13.6, 6: -1030.5, 8: -2040.1, 29: -1.3, 79: -0.7}
FAMILIES = [pytest.param(name, marks=() if name == "schnet" else pytest.mark.slow) for name in sorted(REGISTRY)]


def make_pair(name: str):
    torch.manual_seed(0)
    eager = build_model(
        name, cutoff=4.0, elements=ELEMENTS, e0=E0, scale=0.7, train_e0=name == "schnet", **testing.tiny_hparams(name)
    )
    eager = eager.double()
    compiled = clone_model(eager).enable_compile()
    return eager, compiled


def batch_of(*atoms_list, labels: bool = False) -> Batch:
    graphs = []
    for atoms in atoms_list:
        graph = AtomicData.from_atoms(atoms, 4.0, dtype=torch.float64)
        if labels:
            graph[keys.ENERGY] = torch.tensor([-3.0 * len(atoms)], dtype=torch.float64)
            generator = torch.Generator().manual_seed(len(atoms))
            graph[keys.FORCES] = torch.randn(len(atoms), 3, generator=generator, dtype=torch.float64)
        graphs.append(graph)
    return Batch.from_data_list(graphs)


def rattled(atoms, seed: int):
    atoms = atoms.copy()
    atoms.rattle(0.05, seed=seed)
    return atoms


def assert_outputs_close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-9, atol=1e-10, msg=f"{key} differs")


@pytest.mark.parametrize("name", FAMILIES)
def test_inference_matches_eager_and_sizes_reuse_the_compiled_graph(name):
    eager, compiled = make_pair(name)
    eager.eval()
    compiled.eval()
    first = batch_of(rattled(molecule("CH3CH2OH"), 0), testing.triclinic_cell())
    assert_outputs_close(compiled(first), eager(first))
    assert keys.STRESS in compiled(first)
    # other numbers of atoms, edges and frames: same kind of input, no new trace
    second = batch_of(
        rattled(molecule("C6H6"), 1),
        rattled(bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 1, 1), 2),
        testing.triclinic_cell(),
    )
    assert_outputs_close(compiled(second), eager(second))
    assert len(compiled._compiled_fns) == 1
    # a molecule alone has no stress: a second kind of input, compiled once more
    alone = batch_of(rattled(molecule("CH3CH2OH"), 3))
    assert_outputs_close(compiled(alone), eager(alone))
    assert len(compiled._compiled_fns) == 2


@pytest.mark.parametrize("name", FAMILIES)
def test_training_gradients_match_eager(name):
    eager, compiled = make_pair(name)
    data = batch_of(rattled(molecule("CH3CH2OH"), 0), testing.triclinic_cell(), labels=True)
    grads = []
    for model in (eager, compiled):
        model.train()
        model.zero_grad(set_to_none=True)
        out = model(data)
        loss = (
            (out[keys.ENERGY] - data[keys.ENERGY]).square().mean()
            + 10 * (out[keys.FORCES] - data[keys.FORCES]).square().mean()
            + 100 * out[keys.STRESS].square().mean()
        )
        loss.backward()
        grads.append({k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 0
    for key in grads[0]:
        torch.testing.assert_close(grads[1][key], grads[0][key], rtol=1e-8, atol=1e-10, msg=f"grad of {key}")


def test_calculator_compile_flag_and_copies():
    eager, compiled = make_pair("schnet")
    atoms = rattled(bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 2), 4)
    results = []
    for calc in (GNNPotCalculator(eager), GNNPotCalculator(eager, compile=True), GNNPotCalculator(compiled)):
        calc.calculate(atoms, ["energy", "forces", "stress"])
        results.append(calc.results)
    assert not GNNPotCalculator(eager).model.compiled
    assert GNNPotCalculator(compiled).model.compiled
    for other in results[1:]:
        assert other["energy"] == pytest.approx(results[0]["energy"], rel=1e-10)
        assert abs(other["forces"] - results[0]["forces"]).max() < 1e-10
        assert abs(other["stress"] - results[0]["stress"]).max() < 1e-10
    copied = copy.deepcopy(compiled)
    assert copied.compiled and copied._compiled_fns == {}
    assert not copy.deepcopy(compiled.enable_compile(False)).compiled


def test_compiled_graphs_can_use_inductors_disk_cache():
    """Inductor can hash the compile options, so a graph compiled before loads from its disk cache.

    With a plain dict of decompositions (some are C++ functions, which cannot be pickled) every
    compilation bypassed the cache and started from scratch.
    """
    from torch._dynamo.utils import counters

    from gnnpot.models.compiled import trace_and_compile

    def function(params, tensors):
        x, index = tensors
        return (torch.zeros(4, 3).index_add(0, index, x * params["w"]).sin().sum(),)

    counters.clear()
    w = torch.ones(3, requires_grad=True)
    compiled = trace_and_compile(function, {"w": w}, [torch.randn(6, 3), torch.tensor([0, 1, 2, 3, 0, 1])], True)
    x, index = torch.randn(7, 3), torch.tensor([0, 1, 2, 3, 0, 1, 2])
    (energy,) = compiled({"w": w}, [x, index])
    (expected,) = function({"w": w}, [x, index])
    torch.testing.assert_close(energy, expected)
    assert torch.autograd.grad(energy, w)[0].shape == (3,)
    assert counters["inductor"]["fxgraph_cache_bypass"] == 0
    assert counters["inductor"]["fxgraph_cache_hit"] + counters["inductor"]["fxgraph_cache_miss"] > 0
    assert counters["inductor"]["extern_calls"] > 0  # index_add stays the aten kernel
