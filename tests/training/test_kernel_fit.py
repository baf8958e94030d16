"""Closed-form kernel fits and ``gnnpot fit-kernel``.

The rows are the model's own energies and forces, known weights are recovered, forces help, inducing
environments are shared fairly, and the command writes a model file that ``gnnpot eval`` reads.
"""

import json
import re
import warnings

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator
from torch_geometric.data import Batch

from gnnpot import keys, load_model, save_model, testing
from gnnpot.cli import main
from gnnpot.data import build_graphs, write_frames
from gnnpot.data.generate import generate_emt_dataset
from gnnpot.training.evaluate import predict
from gnnpot.training.kernel import fit_sparse_kernel, kernel_rows, select_inducing

CUTOFF = 3.0  # the first fcc shell only: small and fast
TINY = {"num_inducing": 30, "num_channels": 2, "num_radial": 3, "num_angular": 2}


@pytest.fixture(scope="module")
def cuau_frames():
    """30 EMT Cu-Au bulk frames (8 to 32 atoms): 20 to fit, 10 held out (other trajectories)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ASE deprecations of the MD set-up
        return generate_emt_dataset(num_frames=30, seed=3, kinds=("bulk",), frames_per_trajectory=5)


def labelled(frames, model):
    """Copies of ``frames`` labelled with ``model``'s energy and forces."""
    out = []
    for atoms, result in zip(frames, testing.evaluate(model, frames)):
        copy = atoms.copy()
        copy.calc = SinglePointCalculator(copy, energy=result[keys.ENERGY], forces=result[keys.FORCES])
        out.append(copy)
    return out


def isolated(symbol: str, energy: float) -> Atoms:
    atoms = Atoms(symbol)
    atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=np.zeros((1, 3)))
    return atoms


@pytest.mark.parametrize("system", ["molecules", "bulk"])
def test_rows_are_the_models_energies_and_forces(system, cuau_frames):
    """Rows times the weights give the model's energies (minus E0) and forces, in either direction.

    Molecules take the forward-mode derivatives (3 x 9 coordinates < M = 30), the bulk frames the
    reverse mode (3 x 32 > M).
    """
    frames = [molecule("CH3CH2OH"), molecule("H2O")] if system == "molecules" else cuau_frames[5:7]
    for atoms in frames:
        atoms.rattle(0.05, seed=4)
        atoms.calc = SinglePointCalculator(atoms, energy=0.0, forces=np.zeros((len(atoms), 3)))
    elements = sorted({int(z) for atoms in frames for z in atoms.numbers})
    torch.manual_seed(0)
    model = random_kernel_model(elements)
    batch = Batch.from_data_list(build_graphs(frames, CUTOFF))
    rows = kernel_rows(model, batch)
    alpha = model.potential.readout.weight.detach()
    out = model(batch)
    e0 = torch.zeros(len(frames), dtype=torch.float64).index_add_(
        0, batch[keys.BATCH], model.potential.scale_shift.shift[model.potential.species(batch[keys.ATOMIC_NUMBERS])]
    )
    torch.testing.assert_close(rows.energy @ alpha, out[keys.ENERGY].detach() - e0, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(rows.forces @ alpha, out[keys.FORCES].detach().reshape(-1), rtol=1e-10, atol=1e-12)
    assert out[keys.FORCES].abs().max() > 1e-3


def random_kernel_model(elements):
    from gnnpot import build_model

    return build_model("kernel", cutoff=CUTOFF, elements=elements, e0={z: -1.0 for z in elements}, scale=0.7,
                       **TINY).double().eval()  # fmt: skip


def test_fit_recovers_the_weights_of_a_model_of_the_same_form(cuau_frames, tmp_path):
    """Labels from a kernel model with known weights: the fit gives those weights back.

    Isolated atoms among the frames fix E0 to the teacher's (``fit_e0`` takes them), and the
    inducing environments are chosen again from the same atoms, so the fit has the teacher's form.
    """
    frames = [*cuau_frames[:10], isolated("Cu", -0.3), isolated("Au", -0.2)]
    structure, _ = fit_sparse_kernel(frames, CUTOFF, **TINY)
    generator = torch.Generator().manual_seed(1)
    alpha = torch.randn(TINY["num_inducing"], generator=generator, dtype=torch.float64)
    with torch.no_grad():
        structure.potential.readout.weight.copy_(alpha)
    teacher = structure.eval()
    student, report = fit_sparse_kernel(labelled(frames, teacher), CUTOFF, sigma_energy=1e-7, sigma_forces=1e-7, **TINY)
    torch.testing.assert_close(student.potential.representation.inducing, teacher.potential.representation.inducing)
    recovered = student.potential.readout.weight.detach()
    assert (recovered - alpha).abs().max() < 1e-5 * alpha.abs().max(), (recovered - alpha).abs().max()
    assert report["train"]["forces_mae"] < 1e-6 and report["inducing_per_element"]["Cu"] > 0
    held_out = cuau_frames[20:23]
    for want, got in zip(testing.evaluate(teacher, held_out), testing.evaluate(student, held_out)):
        assert abs(want[keys.ENERGY] - got[keys.ENERGY]) < 1e-7
        np.testing.assert_allclose(got[keys.FORCES], want[keys.FORCES], atol=1e-7)
    # The fitted model's file gives the same outputs.
    loaded = load_model(save_model(student, tmp_path / "kernel.pt"))
    for want, got in zip(testing.evaluate(student, held_out), testing.evaluate(loaded, held_out)):
        assert want[keys.ENERGY] == got[keys.ENERGY] and np.array_equal(want[keys.FORCES], got[keys.FORCES])


def test_forces_lower_the_held_out_force_error(cuau_frames):
    train, test = cuau_frames[:20], build_graphs(cuau_frames[20:], CUTOFF)
    errors = {}
    for use_forces in (True, False):
        model, _ = fit_sparse_kernel(train, CUTOFF, use_forces=use_forces, **TINY)
        errors[use_forces] = predict(model, test)[0]["forces_mae"]
    assert errors[True] < 0.6 * errors[False], errors


def test_validation_chooses_the_noise(cuau_frames):
    model, report = fit_sparse_kernel(cuau_frames[:15], CUTOFF, val_frames=cuau_frames[15:20], **TINY)
    chosen = min(report["selection"], key=lambda entry: entry["val"]["forces_mae"])
    assert report["sigma_forces"] == chosen["sigma_forces"] and len(report["selection"]) == 5
    assert report["val"] == chosen["val"]


def test_inducing_environments_are_shared_by_element_and_spread():
    """Quotas follow the atoms (at least one each); farthest-point sampling never repeats a point."""
    generator = torch.Generator().manual_seed(0)
    points = torch.rand(100, 4, generator=generator, dtype=torch.float64)
    points = points / points.norm(dim=-1, keepdim=True)
    species = torch.tensor([0] * 90 + [1] * 8 + [2] * 2)
    chosen = select_inducing(points, species, 10, 3)
    assert torch.bincount(species[chosen], minlength=3).tolist() == [7, 2, 1]
    assert len(set(chosen.tolist())) == 10
    with pytest.raises(ValueError, match="num_inducing must be between the number of elements"):
        select_inducing(points, species, 2, 3)


def test_fit_kernel_then_eval(cuau_frames, tmp_path, capsys):
    data, model = tmp_path / "train.xyz", tmp_path / "kernel.pt"
    write_frames(data, cuau_frames[:12])
    args = ["fit-kernel", "--data", str(data), "--out", str(model), "--cutoff", str(CUTOFF), "--num-inducing", "20"]
    assert main([*args, "--val-fraction", "0.25"]) == 0
    assert "validation energy" in capsys.readouterr().out
    fitted = load_model(model)
    assert fitted.metadata["representation"] == "kernel" and fitted.metadata["kernel_fit"]["use_forces"]
    assert fitted.metadata["training_data"]["num_frames"] == 9
    assert main(["eval", "--model", str(model), "--data", str(data), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["num_frames"] == 12 and 0 < result["metrics"]["forces_mae"] < 1000
    # Bad input: one line, exit status 1.
    assert main([*args[:-1], "500"]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    expected = r"gnnpot fit-kernel: error: num_inducing must be between the number of elements \(2\) and of "
    assert re.fullmatch(expected + r"training atoms \(\d+\), got 500", line), line
    assert main(["fit-kernel", "--data", str(data), "--out", str(model), "--sigma-forces", "0"]) == 1
    assert "sigma_forces must be > 0, got 0.0" in capsys.readouterr().err
