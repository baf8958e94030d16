"""The reference data in ../shared/data: rMD17 npz, acetylacetone with isolated atoms, Si/Mo with stress.

Skipped when the folder is absent (see conftest.shared_data).
"""

import json

import numpy as np
import pytest

from gnnpot import keys
from gnnpot.cli import main
from gnnpot.data import AtomsDataModule, build_graphs, fit_e0, frame_labels, read_frames
from gnnpot.data.io import KCAL_MOL
from gnnpot.data.stats import dataset_stats


def test_rmd17_energies_in_ev(shared_data):
    path = shared_data / "rmd17" / "rmd17_ethanol_train_01.npz"
    raw = np.load(path)
    frames = read_frames(path, index=":20")
    assert len(frames) == 20 and frames.units["energy"] == "eV"
    energy = frame_labels(frames[3])["energy"]
    assert energy == pytest.approx(raw["energies"][3] * KCAL_MOL)
    assert -4300 < energy < -4100  # eV; in kcal/mol it would be about -97 000
    np.testing.assert_allclose(frame_labels(frames[3])["forces"], raw["forces"][3] * KCAL_MOL)
    assert frames[3].get_chemical_formula() == "C2H6O"


def test_rmd17_stats_cli_json(shared_data, capsys):
    path = shared_data / "rmd17" / "rmd17_ethanol_train_01.npz"
    assert main(["data", "stats", str(path), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["num_frames"] == 1000 and stats["units"]["energy"] == "eV"
    assert stats["energy_per_atom_mean"] == pytest.approx(-467.7, abs=1.0)  # eV/atom
    assert stats["e0"]["lstsq_rank"] == 1 and stats["notes"]  # one composition: said, not crashed
    assert sum(stats["e0"]["values"][s] * n for s, n in (("C", 2), ("H", 6), ("O", 1))) == pytest.approx(
        9 * stats["energy_per_atom_mean"]
    )
    assert 0.001 < stats["energy_per_atom_std"] < 0.1 and 0.3 < stats["forces_rms"] < 3.0


def test_rmd17_protocol_split(shared_data, tmp_path):
    """950 train / 50 validation from the train file, test from the test file."""
    folder = shared_data / "rmd17"
    dm = AtomsDataModule(
        str(folder / "rmd17_ethanol_train_01.npz"),
        test_file=str(folder / "rmd17_ethanol_test_01.npz"),
        val_fraction=0.05,
        cutoff=5.0,
        run_dir=str(tmp_path),
    )
    dm.setup("fit")
    assert (len(dm.train_data), len(dm.val_data), len(dm.test_data)) == (950, 50, 1000)
    assert json.loads((tmp_path / "split.json").read_text())["test"]["file"].endswith("test_01.npz")


def test_acac_e0_from_isolated_atoms(shared_data):
    folder = shared_data / "acac"
    frames = read_frames(folder / "train_300K.xyz", index=":50")
    isolated = read_frames(folder / "isolated_atoms.xyz", require=("energy",))
    assert len(isolated) == 3
    expected = {int(a.numbers[0]): frame_labels(a)["energy"] for a in isolated}
    assert fit_e0(list(frames) + list(isolated)) == expected
    assert expected[1] == pytest.approx(-13.568422178253735)
    stats = dataset_stats(list(frames) + list(isolated), cutoff=5.0)
    assert stats["e0"]["method"] == "isolated" and not stats["warnings"]
    assert -10 < stats["e0"]["energy_vs_isolated_per_atom"] < -1  # atomization energy, eV/atom


@pytest.mark.parametrize("name", ["Si_test.xyz", "Mo_test.xyz"])
def test_mlearn_stress(shared_data, name):
    frames = read_frames(shared_data / "mlearn" / name, require=("energy", "forces", "stress"))
    assert all(a.pbc.all() for a in frames)
    stress = np.array([frame_labels(a)["stress"] for a in frames])
    assert stress.shape == (len(frames), 3, 3)
    np.testing.assert_allclose(stress, stress.transpose(0, 2, 1), atol=1e-8)
    assert np.abs(stress).max() < 1.0  # eV/Å^3 (1 eV/Å^3 = 160 GPa)
    graphs = build_graphs(frames, 5.0)
    assert all(g.has_label(keys.STRESS) for g in graphs)
    assert {a.info["config_type"] for a in frames} <= {"AIMD-NVT", "Elastic", "Vacancy", "Surface"}
