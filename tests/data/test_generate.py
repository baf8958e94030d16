"""The embedded EMT Cu-Au dataset: deterministic, labelled, the promised kinds of structure."""

import numpy as np
import pytest
from ase.calculators.emt import EMT

from gnnpot.data import frame_labels, read_frames, write_frames
from gnnpot.data.generate import KINDS, generate_emt_dataset


@pytest.fixture(scope="module")
def small():
    return generate_emt_dataset(num_frames=8, seed=3)


def test_same_seed_same_file(tmp_path, small):
    write_frames(tmp_path / "a.xyz", small)
    write_frames(tmp_path / "b.xyz", generate_emt_dataset(num_frames=8, seed=3))
    write_frames(tmp_path / "c.xyz", generate_emt_dataset(num_frames=8, seed=4))
    assert (tmp_path / "a.xyz").read_bytes() == (tmp_path / "b.xyz").read_bytes()
    assert (tmp_path / "a.xyz").read_bytes() != (tmp_path / "c.xyz").read_bytes()


def test_frames_and_labels(tmp_path, small):
    assert len(small) == 8
    assert {a.info["config_type"] for a in small} == set(KINDS)
    for atoms in small:
        assert 8 <= len(atoms) <= 64 and set(atoms.numbers) <= {29, 79}
        labels = frame_labels(atoms)
        assert {"energy", "forces"} <= set(labels)
        if atoms.info["config_type"] == "slab":
            assert atoms.pbc.tolist() == [True, True, False] and "stress" not in labels
        else:
            assert atoms.pbc.all() and labels["stress"].shape == (3, 3)
    # The labels are EMT's for the stored positions, and survive writing and reading.
    write_frames(tmp_path / "small.xyz", small)
    frames = read_frames(tmp_path / "small.xyz", require=("energy", "forces"))
    for atoms in (frames[0], frames[6]):  # bulk and slab
        check = atoms.copy()
        check.calc = EMT()
        assert frame_labels(atoms)["energy"] == pytest.approx(check.get_potential_energy(), abs=1e-6)
        np.testing.assert_allclose(frame_labels(atoms)["forces"], check.get_forces(), atol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_frames"):
        generate_emt_dataset(num_frames=0)


def test_temperatures_and_kinds_choose_the_trajectories():
    frames = generate_emt_dataset(6, seed=2, temperatures=[1200.0], kinds=["bulk", "slab"], frames_per_trajectory=3)
    assert {f.info["temperature_K"] for f in frames} == {1200.0}
    assert {f.info["config_type"] for f in frames} == {"bulk", "slab"}
    with pytest.raises(ValueError, match="kinds must be among"):
        generate_emt_dataset(2, kinds=["liquid"])
    with pytest.raises(ValueError, match="temperatures must be positive"):
        generate_emt_dataset(2, temperatures=[0.0])
