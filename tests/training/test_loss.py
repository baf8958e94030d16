"""PotentialLoss: weighted per-atom energy, force and stress terms; unlabelled frames masked out."""

import math

import pytest
import torch
from ase.build import bulk, molecule
from ase.calculators.emt import EMT
from torch_geometric.data import Batch

from gnnpot import keys
from gnnpot.data import AtomicData
from gnnpot.data.io import frame_labels
from gnnpot.training import PotentialLoss


def graphs(drop_energy=False):
    cu = bulk("Cu", "fcc", a=3.6, cubic=True)
    cu.rattle(0.05, seed=0)
    cu.calc = EMT()
    cu.get_stress()
    mol = molecule("H2O")
    labels_cu = frame_labels(cu)
    labels_mol = {keys.FORCES: torch.randn(3, 3).numpy()}  # no energy, no stress
    if not drop_energy:
        labels_mol[keys.ENERGY] = -3.0
    return Batch.from_data_list(
        [AtomicData.from_atoms(cu, 3.0, labels=labels_cu), AtomicData.from_atoms(mol, 3.0, labels=labels_mol)]
    )


def fake_output(batch, noise=0.1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        keys.ENERGY: torch.nan_to_num(batch[keys.ENERGY]) + noise * torch.randn(2, generator=g),
        keys.FORCES: torch.nan_to_num(batch[keys.FORCES]) + noise * torch.randn(batch.num_nodes, 3, generator=g),
        keys.STRESS: torch.nan_to_num(batch[keys.STRESS]) + noise * torch.randn(2, 3, 3, generator=g),
    }


def test_terms_are_weighted_means_over_labelled_frames():
    batch = graphs(drop_energy=True)
    out = fake_output(batch)
    loss = PotentialLoss(energy_weight=2.0, forces_weight=3.0, stress_weight=5.0)(out, batch)
    natoms = batch[keys.NUM_ATOMS]
    energy = ((out[keys.ENERGY][0] - batch[keys.ENERGY][0]) / natoms[0]) ** 2  # frame 1 has no energy
    forces = (out[keys.FORCES] - batch[keys.FORCES]).square().mean()
    stress = (out[keys.STRESS][0] - batch[keys.STRESS][0]).square().mean()  # the molecule has no stress
    assert torch.isclose(loss[keys.ENERGY], energy) and torch.isclose(loss[keys.FORCES], forces)
    assert torch.isclose(loss[keys.STRESS], stress)
    assert torch.isclose(loss["loss"], 2 * energy + 3 * forces + 5 * stress)


def test_missing_labels_give_finite_loss_and_gradients():
    batch = graphs(drop_energy=True)
    assert torch.isnan(batch[keys.ENERGY]).any() and torch.isnan(batch[keys.STRESS]).any()
    out = {k: v.clone().requires_grad_(True) for k, v in fake_output(batch).items()}
    loss = PotentialLoss()(out, batch)["loss"]
    loss.backward()
    assert math.isfinite(float(loss.detach()))
    assert all(torch.isfinite(v.grad).all() for v in out.values())
    assert out[keys.ENERGY].grad[1] == 0  # the unlabelled frame gets no gradient


def test_term_without_any_label_is_zero():
    batch = graphs()
    batch[keys.STRESS_WEIGHT] = torch.zeros(2)
    out = fake_output(batch)
    assert float(PotentialLoss()(out, batch)[keys.STRESS]) == 0.0
    out.pop(keys.STRESS)
    assert float(PotentialLoss()(out, batch)[keys.STRESS]) == 0.0


def test_huber_is_quadratic_then_linear():
    batch = graphs()
    small, large = fake_output(batch, noise=1e-4), fake_output(batch, noise=10.0)
    mse, huber = PotentialLoss(kind="mse"), PotentialLoss(kind="huber", huber_delta=0.01)
    assert torch.isclose(huber(small, batch)[keys.FORCES], 0.5 * mse(small, batch)[keys.FORCES], rtol=1e-4)
    assert huber(large, batch)[keys.FORCES] < 0.01 * mse(large, batch)[keys.FORCES]


def test_bad_arguments():
    with pytest.raises(ValueError, match="loss kind"):
        PotentialLoss(kind="l1")
    with pytest.raises(ValueError, match="forces_weight must be >= 0"):
        PotentialLoss(forces_weight=-1.0)
