"""ErrorMetric and PotentialMetrics: sums and counts, so MAE/RMSE merge exactly across processes."""

import numpy as np
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from torch_geometric.data import Batch

from gnnpot import keys
from gnnpot.data import AtomicData
from gnnpot.data.io import frame_labels
from gnnpot.training import ErrorMetric, PotentialMetrics


def test_error_metric_matches_numpy():
    errors = np.random.default_rng(0).normal(size=(7, 3))
    metric = ErrorMetric()
    metric.update(torch.as_tensor(errors[:2]))
    metric.update(torch.as_tensor(errors[2:]))
    values = metric.compute()
    assert np.isclose(float(values["mae"]), np.abs(errors).mean())
    assert np.isclose(float(values["rmse"]), np.sqrt((errors**2).mean()))
    assert int(values["count"]) == 21


def test_merged_states_are_the_whole_split_not_an_average_of_averages():
    """Two "processes" of unequal size: the merged state (what DDP's sum reduction gives) is exact."""
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=3), 5 + rng.normal(size=30)
    first, second = ErrorMetric(), ErrorMetric()
    first.update(torch.as_tensor(a))
    second.update(torch.as_tensor(b))
    first.merge_state(second)
    both = np.concatenate([a, b])
    assert np.isclose(float(first.compute()["mae"]), np.abs(both).mean())
    assert not np.isclose(float(first.compute()["mae"]), (np.abs(a).mean() + np.abs(b).mean()) / 2)


def test_potential_metrics_in_mev_and_masked():
    frames = []
    for k in range(3):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.rattle(0.05, seed=k)
        atoms.calc = EMT()
        atoms.get_stress()
        labels = frame_labels(atoms)
        if k == 2:
            labels.pop(keys.ENERGY)
        frames.append(AtomicData.from_atoms(atoms, 3.0, labels=labels))
    batch = Batch.from_data_list(frames)
    out = {
        keys.ENERGY: torch.nan_to_num(batch[keys.ENERGY]) + torch.tensor([0.004, -0.008, 100.0]),
        keys.FORCES: batch[keys.FORCES] + 0.002,
        keys.STRESS: batch[keys.STRESS] - 0.001,
    }
    metrics = PotentialMetrics()
    metrics.update(out, batch)
    values = metrics.compute()
    assert np.isclose(values["energy_mae"], 6.0) and np.isclose(values["energy_per_atom_mae"], 1.5)
    assert np.isclose(values["energy_rmse"], np.sqrt((16 + 64) / 2), rtol=1e-5)
    assert np.isclose(values["forces_mae"], 2.0, rtol=1e-4) and np.isclose(values["stress_mae"], 1.0, rtol=1e-4)
    metrics.reset()
    assert metrics.compute() == {}
