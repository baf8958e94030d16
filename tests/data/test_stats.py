"""Statistics: E0 by least squares and from isolated atoms, scales, neighbour counts."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.singlepoint import SinglePointCalculator

from gnnpot.data import build_graphs, fit_e0, force_rms, lstsq_e0, mean_num_neighbors, per_atom_energy_std
from gnnpot.data.stats import dataset_stats, format_stats, isolated_atom_energies

E0 = {29: -3.5, 79: -2.25}


def alloy_frames(num_frames: int = 12, seed: int = 0, noise: float = 0.01) -> list[Atoms]:
    """Cu-Au cells of varying composition with E = sum of E0 + noise (eV)."""
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(num_frames):
        atoms = bulk("Cu", "fcc", a=3.7, cubic=True) * (1, 1, 1 + k % 2)
        atoms.numbers[rng.random(len(atoms)) < rng.random()] = 79
        atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
        energy = sum(E0[int(z)] for z in atoms.numbers) + rng.normal(0, noise) * len(atoms)
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=rng.normal(0, 0.5, (len(atoms), 3)))
        frames.append(atoms)
    return frames


def isolated(symbol: str, energy: float) -> Atoms:
    atom = Atoms(symbol, pbc=False)
    atom.calc = SinglePointCalculator(atom, energy=energy, forces=np.zeros((1, 3)))
    return atom


def test_lstsq_recovers_e0():
    frames = alloy_frames(noise=0.0)
    e0, rank = lstsq_e0(frames)
    assert rank == 2
    assert e0 == pytest.approx(E0, abs=1e-9)
    assert fit_e0(frames) == pytest.approx(E0, abs=1e-9)
    assert per_atom_energy_std(frames, e0) == pytest.approx(0.0, abs=1e-9)


def test_graphs_and_atoms_agree():
    frames = alloy_frames()
    graphs = build_graphs(frames, 3.0)
    assert fit_e0(graphs, [29, 79]) == pytest.approx(fit_e0(frames, [29, 79]), abs=1e-4)
    assert force_rms(graphs) == pytest.approx(force_rms(frames), rel=1e-5)
    assert mean_num_neighbors(graphs) == pytest.approx(mean_num_neighbors(frames, 3.0))


def test_single_composition_is_rank_deficient_but_exact():
    """An rMD17-like molecule: one composition, so E0 is not unique; the fit must not crash."""
    rng = np.random.default_rng(1)
    frames = []
    for _ in range(5):
        atoms = molecule("CH3CH2OH")
        atoms.calc = SinglePointCalculator(atoms, energy=-4209.0 + rng.normal(0, 0.1), forces=np.zeros((9, 3)))
        frames.append(atoms)
    e0, rank = lstsq_e0(frames)
    assert rank == 1
    mean_energy = np.mean([a.get_potential_energy() for a in frames])
    # Exact on the one composition, and the solution closest to one common per-atom energy.
    assert sum(e0[int(z)] for z in frames[0].numbers) == pytest.approx(mean_energy)
    assert set(np.round(list(e0.values()), 9)) == {round(mean_energy / 9, 9)}
    stats = dataset_stats(frames, cutoff=3.0)
    assert stats["e0"]["lstsq_rank"] == 1 and "not unique" in stats["notes"][0]


def test_isolated_atoms_give_e0():
    frames = alloy_frames() + [isolated("Cu", -0.5), isolated("Au", -0.25)]
    assert isolated_atom_energies(frames) == {29: -0.5, 79: -0.25}
    assert fit_e0(frames) == {29: -0.5, 79: -0.25}
    # Least squares leaves the isolated atoms out.
    assert fit_e0(frames, method="lstsq") == pytest.approx(E0, abs=0.05)
    stats = dataset_stats(frames, cutoff=3.0)
    assert stats["e0"]["method"] == "isolated" and stats["num_isolated_atom_frames"] == 2
    assert -3.0 < stats["e0"]["energy_vs_isolated_per_atom"] < -2.0  # between Cu (-3) and Au (-2)
    assert not stats["warnings"]


def test_isolated_atoms_missing_an_element():
    frames = alloy_frames() + [isolated("Cu", -0.5)]
    assert fit_e0(frames) == pytest.approx(E0, abs=0.05)  # auto: falls back to least squares
    with pytest.raises(ValueError, match="no isolated-atom frame for"):
        fit_e0(frames, method="isolated")


def test_warning_when_isolated_and_fit_disagree():
    """Isolated atoms in other units (here kcal/mol-sized numbers) are flagged."""
    frames = alloy_frames() + [isolated("Cu", -80.7), isolated("Au", -51.9)]
    stats = dataset_stats(frames, cutoff=3.0)
    assert len(stats["warnings"]) == 1 and "disagree strongly" in stats["warnings"][0]
    assert "WARNING" in format_stats(stats)


def test_element_without_energy_data_warns():
    with pytest.warns(UserWarning, match="no energy data"):
        e0 = fit_e0(alloy_frames(), elements=[1, 29, 79])
    assert e0[1] == 0.0


def test_scales_and_neighbours():
    atoms = bulk("Cu", "fcc", a=3.6) * (2, 2, 2)
    forces = np.zeros((8, 3))
    forces[0] = [3.0, 0.0, 4.0]
    atoms.calc = SinglePointCalculator(atoms, energy=-28.0, forces=forces)
    assert force_rms([atoms]) == pytest.approx(np.sqrt(25.0 / 24))
    assert mean_num_neighbors([atoms], 3.0) == pytest.approx(12.0)  # first fcc shell at 2.55 Å
    assert mean_num_neighbors([atoms], 4.0) == pytest.approx(18.0)  # second shell at 3.6 Å


def test_dataset_stats_is_complete():
    frames = alloy_frames()
    stats = dataset_stats(frames, cutoff=3.0)
    assert stats["num_frames"] == 12 and stats["num_elements"] == 2
    assert set(stats["elements"]) == {"Cu", "Au"} and stats["units"]["energy"] == "eV"
    assert stats["e0"]["values"] == pytest.approx({"Cu": -3.5, "Au": -2.25}, abs=0.05)
    assert 0 < stats["energy_per_atom_std"] < 0.05 and stats["forces_rms"] == pytest.approx(0.5, rel=0.3)
    assert stats["mean_num_neighbors"] > 0 and stats["num_labelled"]["stress"] == 0
    text = format_stats(stats)
    assert "E0 (eV)" in text and "forces RMS" in text
