"""Readers and writers: extxyz, ASE db, MD17/rMD17 npz, key maps, units, frame ids."""

import ase.db
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.singlepoint import SinglePointCalculator

from gnnpot import keys
from gnnpot.data import Frames, build_graphs, frame_labels, read_frames, read_index_file, write_frames
from gnnpot.data.io import KCAL_MOL


def periodic_frame(seed: int) -> Atoms:
    rng = np.random.default_rng(seed)
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.numbers[1] = 79
    atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
    stress = rng.normal(0, 0.01, (3, 3))
    atoms.calc = SinglePointCalculator(
        atoms, energy=-3.0 * seed, forces=rng.normal(size=(4, 3)), stress=stress + stress.T
    )
    atoms.info["config_type"] = "bulk"
    return atoms


def test_extxyz_round_trip(tmp_path):
    frames = [periodic_frame(seed) for seed in range(4)]
    path = tmp_path / "sub" / "frames.xyz"
    write_frames(path, frames)
    read = read_frames(path)
    assert isinstance(read, Frames) and len(read) == 4
    assert read.source == str(path) and read.units == keys.UNITS and read.frame_ids == [0, 1, 2, 3]
    for a, b in zip(frames, read, strict=True):
        np.testing.assert_allclose(b.positions, a.positions, atol=1e-8)
        np.testing.assert_allclose(b.cell.array, a.cell.array, atol=1e-8)
        assert (b.numbers == a.numbers).all() and (b.pbc == a.pbc).all()
        labels = frame_labels(b)
        assert labels["energy"] == pytest.approx(a.get_potential_energy())
        np.testing.assert_allclose(labels["forces"], a.get_forces(), atol=1e-8)
        np.testing.assert_allclose(labels["stress"], a.get_stress(voigt=False), atol=1e-10)
        assert b.info["config_type"] == "bulk"


@pytest.mark.parametrize(
    ("index", "ids"),
    [
        (":", [0, 1, 2, 3, 4]),
        ("1:4", [1, 2, 3]),
        ("::2", [0, 2, 4]),
        (-1, [4]),
        ("3", [3]),
        ([4, 0], [4, 0]),
        (slice(3, None), [3, 4]),
    ],
)
def test_index_keeps_file_frame_ids(tmp_path, index, ids):
    path = tmp_path / "frames.xyz"
    write_frames(path, [periodic_frame(seed) for seed in range(5)])
    frames = read_frames(path, index=index)
    assert frames.frame_ids == ids
    assert [frame_labels(a)["energy"] for a in frames] == pytest.approx([-3.0 * k for k in ids])
    graphs = build_graphs(frames, 3.0)
    assert [int(g[keys.FRAME_ID]) for g in graphs] == ids
    assert frames[1:].frame_ids == ids[1:]
    assert "frame" in frames.where(0) and str(path) in frames.where(0)


def test_key_map_and_virial(tmp_path):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    forces = np.arange(12.0).reshape(4, 3)
    virial = np.array([[1.0, 0.1, 0.0], [0.1, 2.0, 0.0], [0.0, 0.0, 3.0]])
    atoms.info["REF_energy"] = -7.5
    atoms.info["REF_virial"] = virial
    atoms.arrays["DFT_forces"] = forces
    path = tmp_path / "mapped.xyz"
    write_frames(path, [atoms])
    frames = read_frames(path, key_map={"energy": "REF_energy", "forces": "DFT_forces", "virial": "REF_virial"})
    labels = frame_labels(frames[0])
    assert labels["energy"] == -7.5
    np.testing.assert_allclose(labels["forces"], forces)
    np.testing.assert_allclose(labels["stress"], -virial / atoms.get_volume())
    # Written back, the labels carry their standard names.
    write_frames(tmp_path / "again.xyz", frames)
    assert frame_labels(read_frames(tmp_path / "again.xyz")[0])["energy"] == -7.5


def test_isolated_atom_without_forces_gets_zero_forces(tmp_path):
    atom = Atoms("O", pbc=False)
    atom.calc = SinglePointCalculator(atom, energy=-2037.8)
    path = tmp_path / "isolated.xyz"
    write_frames(path, [atom])
    labels = frame_labels(read_frames(path)[0])
    assert labels["energy"] == -2037.8 and (labels["forces"] == 0).all()


def test_ase_db(tmp_path):
    path = tmp_path / "frames.db"
    with ase.db.connect(path) as db:
        for seed in range(3):
            db.write(periodic_frame(seed))
        plain = molecule("H2O")
        db.write(plain, REF_energy=-14.0, data={"REF_forces": np.ones((3, 3))})
    frames = read_frames(path, index=":3")
    assert len(frames) == 3 and frame_labels(frames[2])["energy"] == pytest.approx(-6.0)
    assert frame_labels(frames[1])["stress"].shape == (3, 3)
    mapped = read_frames(path, index=[3], key_map={"energy": "REF_energy", "forces": "REF_forces"})
    assert frame_labels(mapped[0])["energy"] == -14.0 and mapped.frame_ids == [3]


@pytest.mark.parametrize("layout", ["rmd17", "md17"])
def test_md17_npz_converted_to_ev(tmp_path, layout):
    rng = np.random.default_rng(0)
    z = np.array([6, 1, 1, 1, 1], dtype=np.uint8)
    coords = molecule("CH4").positions[None] + rng.normal(0, 0.02, (6, 5, 3))
    energies = rng.normal(-25000.0, 1.0, 6)  # kcal/mol
    forces = rng.normal(0, 10.0, (6, 5, 3))  # kcal/mol/Å
    path = tmp_path / f"{layout}.npz"
    if layout == "rmd17":
        np.savez(path, nuclear_charges=z, coords=coords, energies=energies, forces=forces, old_energies=energies)
    else:
        np.savez(path, z=z, R=coords, E=energies[:, None], F=forces)
    frames = read_frames(path, index="2:")
    assert frames.frame_ids == [2, 3, 4, 5] and frames.units["energy"] == "eV"
    assert KCAL_MOL == pytest.approx(0.0433641, rel=1e-5)
    labels = frame_labels(frames[0])
    assert labels["energy"] == pytest.approx(energies[2] * KCAL_MOL)
    np.testing.assert_allclose(labels["forces"], forces[2] * KCAL_MOL)
    np.testing.assert_allclose(frames[0].positions, coords[2])
    assert not frames[0].pbc.any()


def test_index_file(tmp_path):
    (tmp_path / "idx.txt").write_text("3 1\n4\n")
    (tmp_path / "idx.json").write_text("[3, 1, 4]")
    assert read_index_file(tmp_path / "idx.txt") == read_index_file(tmp_path / "idx.json") == [3, 1, 4]
