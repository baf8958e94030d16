"""``gnnpot data label``: reference labels equal the calculator's, killed runs resume, failures are reported."""

import json

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.emt import EMT

from gnnpot.cli import main
from gnnpot.data import DataError, read_frames, write_frames
from gnnpot.data.label import INDEX_KEY, METHOD_KEY, label_file, make_calculator

LOGGED = "tests.data.label_calculators:LoggedEMT"


def structures(count=6):
    frames = []
    for i in range(count):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.rattle(0.05, seed=i)
        if i % 2:
            atoms.numbers[0] = 79
        atoms.info["tag"] = i
        frames.append(atoms)
    return frames


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "structures.xyz"
    write_frames(path, structures())
    return path


def test_two_workers_give_emt_labels_in_input_order(tmp_path, source):
    out = tmp_path / "labelled.xyz"
    report = label_file(source, out, "emt", workers=2, threads=1)
    assert (report.labelled, report.skipped, report.failed) == (6, 0, {})
    frames = read_frames(out, require=("energy", "forces", "stress"))
    assert [atoms.info[INDEX_KEY] for atoms in frames] == list(range(6))
    assert {atoms.info[METHOD_KEY] for atoms in frames} == {"emt"}
    for atoms, original in zip(frames, structures()):
        np.testing.assert_allclose(atoms.positions, original.positions, atol=1e-7)  # extxyz keeps 8 decimals
        reference = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=True, calculator=EMT())
        assert atoms.get_potential_energy() == pytest.approx(reference.get_potential_energy(), abs=1e-9)
        np.testing.assert_allclose(atoms.get_forces(), reference.get_forces(), atol=1e-7)  # 8 decimals
        np.testing.assert_allclose(atoms.get_stress(), reference.get_stress(), atol=1e-9)


def test_a_killed_run_resumes_and_recomputes_only_what_is_missing(tmp_path, source):
    """Three whole frames and a torn fourth: the re-run computes frames 3, 4, 5 and ends as a clean run."""
    log, out, clean = tmp_path / "calls.log", tmp_path / "labelled.xyz", tmp_path / "clean.xyz"
    args = {"log": str(log)}
    label_file(source, clean, LOGGED, calc_args=args)
    label_file(source, out, LOGGED, calc_args=args, index="0:4")
    text = out.read_text()
    fourth = text.index("\n4\n", text.index("\n4\n", text.index("\n4\n") + 1) + 1) + 1  # start of frame 3
    out.write_text(text[: fourth + 200])  # killed while writing frame 3
    log.unlink()
    report = label_file(source, out, LOGGED, calc_args=args)
    assert report.torn and (report.labelled, report.skipped) == (3, 3)
    assert log.read_text().split() == ["3", "4", "5"]
    assert out.read_text() == clean.read_text()
    assert label_file(source, out, LOGGED, calc_args=args).labelled == 0


def test_failed_frames_are_reported_never_written(tmp_path, capsys):
    frames = structures(4)
    frames[2].info["fail"] = True
    source, out = tmp_path / "structures.xyz", tmp_path / "labelled.xyz"
    write_frames(source, frames)
    argv = ["data", "label", "--in", str(source), "--out", str(out), "--calculator", LOGGED]
    argv += ["--calc-args", json.dumps({"log": str(tmp_path / "calls.log")})]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "frame 2: RuntimeError: SCF did not converge (a stand-in)" in err and "a re-run tries them again" in err
    assert [atoms.info[INDEX_KEY] for atoms in read_frames(out)] == [0, 1, 3]
    failed = json.loads((tmp_path / "labelled.xyz.failed.json").read_text())
    assert list(failed) == ["2"] and str(source) in failed["2"]
    assert main(argv) == 1  # tried again, still failing; the others are skipped
    assert "labelled 0 frames, 3 already in" in capsys.readouterr().out


def test_another_method_or_unknown_calculator_is_refused(tmp_path, source):
    out = tmp_path / "labelled.xyz"
    label_file(source, out, "emt", index="0:2")
    with pytest.raises(DataError, match="labelled with 'emt', this run uses 'emt {\"asap_cutoff\": true}'"):
        label_file(source, out, "emt", calc_args={"asap_cutoff": True})
    with pytest.raises(ValueError, match="must be one of"):
        make_calculator("nonsense")
    with pytest.raises(ValueError, match="cannot import Nope from ase.calculators.emt"):
        make_calculator("ase.calculators.emt:Nope")


def finite_difference_forces(atoms: Atoms, calc, step: float = 1e-3) -> np.ndarray:
    forces = np.zeros((len(atoms), 3))
    for i in range(len(atoms)):
        for k in range(3):
            energies = []
            for sign in (1, -1):
                moved = atoms.copy()
                moved.positions[i, k] += sign * step
                moved.calc = calc
                energies.append(moved.get_potential_energy())
            forces[i, k] = -(energies[0] - energies[1]) / (2 * step)
    return forces


def test_pyscf_forces_are_the_gradient_of_its_energy():
    pytest.importorskip("pyscf")
    water = molecule("H2O")
    water.rattle(0.05, seed=0)
    calc = make_calculator("pyscf", {"method": "hf", "basis": "sto-3g"})
    water.calc = calc
    forces = water.get_forces()
    assert water.get_potential_energy() == pytest.approx(-74.96 * 27.211386, rel=2e-3)  # HF/STO-3G water, ~-74.96 Ha
    np.testing.assert_allclose(forces, finite_difference_forces(water, calc), atol=2e-5)


def test_pyscf_unconverged_scf_is_a_failed_frame(tmp_path):
    pytest.importorskip("pyscf")
    source, out = tmp_path / "water.xyz", tmp_path / "labelled.xyz"
    write_frames(source, [molecule("H2O")])
    report = label_file(source, out, "pyscf", calc_args={"method": "b3lyp", "basis": "sto-3g", "max_cycle": 1})
    assert report.labelled == 0 and "SCFNotConverged" in report.failed[0] and not out.exists()


def test_xtb_forces_are_the_gradient_of_its_energy():
    pytest.importorskip("tblite")
    ethanol = molecule("CH3CH2OH")
    ethanol.rattle(0.05, seed=1)
    calc = make_calculator("xtb")
    ethanol.calc = calc
    np.testing.assert_allclose(ethanol.get_forces(), finite_difference_forces(ethanol, calc), atol=1e-4)
