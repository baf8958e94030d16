"""gnnpot.predict: batched results equal the calculator's, one structure at a time."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, fcc111, molecule

from gnnpot import REGISTRY, GNNPotCalculator, build_model, predict, testing

ELEMENTS = ["H", "C", "O", "Cu", "Au"]


def mixed_structures() -> list[Atoms]:
    """Molecules, a slab and periodic cells of different sizes, some smaller than the cutoff."""
    cuau = bulk("Cu", "fcc", a=3.7, cubic=True)
    cuau.numbers[[1, 2]] = 79
    cuau.rattle(0.05, seed=1)
    big = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
    big.rattle(0.03, seed=2)
    slab = fcc111("Cu", size=(2, 2, 2), vacuum=4.0)  # periodic in x and y only: no stress
    slab.rattle(0.02, seed=3)
    ethanol = molecule("CH3CH2OH")
    ethanol.rattle(0.02, seed=4)
    return [ethanol, cuau, bulk("Cu", "fcc", a=3.6), slab, molecule("H2O"), big, bulk("Au", "fcc", a=4.1)]


def tiny_model(name: str):
    torch.manual_seed(0)
    return build_model(name, cutoff=4.0, elements=ELEMENTS, **testing.tiny_hparams(name)).double()


def assert_equal_to_calculator(results: list[dict], structures: list[Atoms], model) -> None:
    calc = GNNPotCalculator(model, dtype="float64")
    assert len(results) == len(structures)
    for atoms, result in zip(structures, results, strict=True):
        atoms = atoms.copy()
        atoms.calc = calc
        assert abs(result["energy"] - atoms.get_potential_energy()) < 1e-10
        assert result["free_energy"] == result["energy"]
        assert result["forces"].shape == (len(atoms), 3)
        np.testing.assert_allclose(result["forces"], atoms.get_forces(), rtol=0, atol=1e-10)
        np.testing.assert_allclose(result["energies"], atoms.get_potential_energies(), rtol=0, atol=1e-10)
        if atoms.pbc.all():
            np.testing.assert_allclose(result["stress"], atoms.get_stress(), rtol=0, atol=1e-10)
        else:
            assert "stress" not in result


@pytest.mark.parametrize("batch_size", [1, 3, 100])
def test_batches_equal_the_calculator(batch_size):
    structures = mixed_structures()
    model = tiny_model("painn")
    assert_equal_to_calculator(predict(structures, model, batch_size=batch_size), structures, model)


@pytest.mark.parametrize("name", sorted(set(REGISTRY) - {"painn"}))
def test_every_family(name):
    """Batching offsets (triplets, pairs) hold for every family."""
    structures = mixed_structures()
    model = tiny_model(name)
    assert_equal_to_calculator(predict(structures, model, batch_size=4), structures, model)


def test_order_is_kept_and_input_left_alone():
    structures = mixed_structures()
    before = [atoms.copy() for atoms in structures]
    model = tiny_model("schnet")
    forward = predict(structures, model, batch_size=3)
    backward = predict(structures[::-1], model, batch_size=3)
    for a, b in zip(forward, backward[::-1], strict=True):
        assert abs(a["energy"] - b["energy"]) < 1e-10
        np.testing.assert_allclose(a["forces"], b["forces"], rtol=0, atol=1e-10)
    assert [len(r["forces"]) for r in forward] == [len(atoms) for atoms in structures]
    for atoms, old in zip(structures, before, strict=True):
        assert atoms == old and atoms.calc is None
    assert next(model.parameters()).requires_grad  # the caller's model is left alone


def test_generator_and_pretrained_name():
    cells = [bulk("Cu", "fcc", a=3.6, cubic=True).repeat((n, 1, 1)) for n in (1, 2, 3)]
    results = predict((atoms for atoms in cells), "painn-emt-cuau", batch_size=2, dtype="float64")
    assert [r["forces"].shape for r in results] == [(4, 3), (8, 3), (12, 3)]
    energies = np.array([r["energy"] / len(atoms) for r, atoms in zip(results, cells, strict=True)])
    np.testing.assert_allclose(energies, energies[0], rtol=0, atol=1e-8)  # the same crystal


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (molecule("NH3"), r"structures, frame 4: element\(s\) \['N'\] unknown to the model"),
        (Atoms(), r"structures, frame 4: the structure has no atoms"),
        (Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.01]]), r"structures, frame 4: atoms 0 and 1 are"),
        ("H2O", r"structures, frame 4: expected an ase.Atoms, got str"),
    ],
)
def test_bad_input_names_the_structure(bad, message):
    structures = mixed_structures()[:4] + [bad] + mixed_structures()[:2]
    with pytest.raises(ValueError, match=message):
        predict(structures, tiny_model("schnet"), batch_size=3)


def test_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size must be an integer > 0, got 0"):
        predict([molecule("H2O")], tiny_model("schnet"), batch_size=0)


def test_eval_streams_through_the_same_loop(tmp_path):
    """``gnnpot eval`` batches with predict's loop: the metrics of prebuilt graphs; errors name file and frame."""
    from ase.calculators.singlepoint import SinglePointCalculator

    from gnnpot.data import write_frames
    from gnnpot.data.io import build_graphs, read_frames
    from gnnpot.training.evaluate import evaluate_file
    from gnnpot.training.evaluate import predict as score_graphs

    model = tiny_model("painn")
    frames = []
    for k, atoms in enumerate(mixed_structures()):
        labelled = atoms.copy()
        rng = np.random.default_rng(k)
        results = {"energy": float(rng.normal()), "forces": rng.normal(size=(len(atoms), 3))}
        if atoms.pbc.all():
            results["stress"] = rng.normal(size=6)
        if k != 2:  # a frame without labels is left out of the metrics, as in training
            labelled.calc = SinglePointCalculator(labelled, **results)
        frames.append(labelled)
    path = tmp_path / "mixed.xyz"
    write_frames(path, frames)
    summary, predictions = evaluate_file(model, path, batch_size=3)
    expected, expected_predictions = score_graphs(model, build_graphs(read_frames(path, require=()), model.cutoff), 3)
    assert summary["metrics"] == pytest.approx(expected, rel=1e-12) and "stress_mae" in expected
    for key, value in expected_predictions.items():
        np.testing.assert_allclose(predictions[key], value, rtol=1e-12, atol=1e-12)
    broken = [atoms.copy() for atoms in frames[:3]]
    broken[1].positions[0, 0] = np.nan
    write_frames(tmp_path / "broken.xyz", broken)
    with pytest.raises(ValueError, match=r"broken\.xyz, frame 1"):
        evaluate_file(model, tmp_path / "broken.xyz", batch_size=2)
