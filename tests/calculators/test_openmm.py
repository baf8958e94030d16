"""gnnpot in OpenMM through OpenMM-ML (``MLPotential("gnnpot", ...)``, extra ``engines``).

Energies and forces against the ASE calculator in float64, Langevin and NVE MD of ethanol with a
shipped model, a periodic Cu-Au cell, a subset of the atoms, serialisation and the errors.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk, molecule
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet

openmm = pytest.importorskip("openmm")
pytest.importorskip("openmmml")
from openmm import unit  # noqa: E402
from openmmml import MLPotential  # noqa: E402

from gnnpot.calculators import GNNPotCalculator  # noqa: E402
from gnnpot.calculators.openmm_potential import KJ_PER_MOL_PER_EV, topology_from_atoms  # noqa: E402

ETHANOL = "schnet-rmd17-ethanol"
CUAU = "painn-emt-cuau"
FORCE_UNIT = unit.kilojoule_per_mole / unit.nanometer


def _context(atoms: Atoms, model: str, integrator=None, **options) -> openmm.Context:
    topology, positions = topology_from_atoms(atoms)
    system = MLPotential("gnnpot", model=model, dtype="float64", **options).createSystem(topology)
    integrator = integrator or openmm.VerletIntegrator(0.5 * unit.femtosecond)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    return context


def _energy_forces(context: openmm.Context) -> tuple[float, np.ndarray]:
    """Potential energy (eV) and forces (eV/Å) of the context's current state."""
    state = context.getState(getEnergy=True, getForces=True)
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / KJ_PER_MOL_PER_EV
    return energy, state.getForces(asNumpy=True).value_in_unit(FORCE_UNIT) / (10 * KJ_PER_MOL_PER_EV)


def _reference(atoms: Atoms, model: str) -> tuple[float, np.ndarray]:
    atoms = atoms.copy()
    atoms.calc = GNNPotCalculator(model, dtype="float64")
    return atoms.get_potential_energy(), atoms.get_forces()


def _cuau_cell() -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True).repeat(2)
    atoms.numbers[::4] = 79
    atoms.rattle(0.05, seed=1)
    return atoms


def _assert_matches(context: openmm.Context, atoms: Atoms, model: str) -> None:
    energy, forces = _energy_forces(context)
    ref_energy, ref_forces = _reference(atoms, model)
    assert energy == pytest.approx(ref_energy, rel=1e-8, abs=0)
    assert np.abs(forces - ref_forces).max() <= 1e-8 * np.abs(ref_forces).max()


def test_ethanol_matches_ase_and_runs_langevin():
    """1,000 Langevin steps (0.5 fs, 300 K) with a shipped model after an exact first frame."""
    atoms = molecule("CH3CH2OH")
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 10 / unit.picosecond, 0.5 * unit.femtosecond)
    integrator.setRandomNumberSeed(7)
    context = _context(atoms, ETHANOL, integrator)
    _assert_matches(context, atoms, ETHANOL)
    temperatures = []
    for _ in range(10):
        integrator.step(100)
        state = context.getState(getEnergy=True, getPositions=True)
        kinetic = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
        temperatures.append(2 * kinetic / (3 * len(atoms) * unit.MOLAR_GAS_CONSTANT_R.value_in_unit(
            unit.kilojoule_per_mole / unit.kelvin)))  # fmt: skip
    positions = state.getPositions(asNumpy=True).value_in_unit(unit.angstrom)
    assert np.isfinite(positions).all()
    # the molecule holds together: every atom within 1.6 Å of another (C-H, C-C, C-O, O-H bonds)
    distances = np.linalg.norm(positions[:, None] - positions[None], axis=-1) + 10 * np.eye(len(atoms))
    assert distances.min(axis=1).max() < 1.6
    assert 100 < np.mean(temperatures[5:]) < 600  # the thermostat's 300 K, noisy for 9 atoms


def test_nve_conserves_energy_like_ase():
    """OpenMM's Verlet and ASE's velocity Verlet from the same state: the same size of energy fluctuation."""
    atoms = molecule("CH3CH2OH")
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(3))
    steps, dt_fs = 400, 0.5
    context = _context(atoms, ETHANOL, openmm.VerletIntegrator(dt_fs * unit.femtosecond))
    # ASE's velocity unit is Å per (Å sqrt(amu/eV)); times units.fs it is Å/fs, times 100 nm/ps
    context.setVelocities(atoms.get_velocities() * units.fs * 100 * unit.nanometer / unit.picosecond)
    totals = []
    for _ in range(steps // 10):
        context.getIntegrator().step(10)
        state = context.getState(getEnergy=True)
        totals.append((state.getPotentialEnergy() + state.getKineticEnergy()).value_in_unit(unit.kilojoule_per_mole))
    openmm_spread = np.ptp(totals) / KJ_PER_MOL_PER_EV

    reference = atoms.copy()
    reference.calc = GNNPotCalculator(ETHANOL, dtype="float64")
    dynamics = VelocityVerlet(reference, timestep=dt_fs * units.fs)
    ase_totals = []
    for _ in range(steps // 10):
        dynamics.run(10)
        ase_totals.append(reference.get_total_energy())
    ase_spread = np.ptp(ase_totals)
    assert openmm_spread < 0.02 and ase_spread < 0.02  # eV, against ~0.5 eV of kinetic energy
    assert openmm_spread < 3 * ase_spread


def test_periodic_cuau_cell():
    atoms = _cuau_cell()
    context = _context(atoms, CUAU)
    _assert_matches(context, atoms, CUAU)
    box = context.getState().getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.angstrom)
    assert np.allclose(box, atoms.cell.array)
    context.setVelocitiesToTemperature(300 * unit.kelvin, 5)
    totals = []
    for _ in range(10):
        context.getIntegrator().step(10)
        state = context.getState(getEnergy=True)
        totals.append((state.getPotentialEnergy() + state.getKineticEnergy()).value_in_unit(unit.kilojoule_per_mole))
    kinetic = context.getState(getEnergy=True).getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
    assert np.ptp(totals) < 0.05 * kinetic


def test_a_subset_of_atoms_and_serialisation():
    """``atoms=`` applies the model to those atoms only; an XML round trip keeps the force."""
    ethanol = molecule("CH3CH2OH")
    far = ethanol.copy()
    far.positions += 50.0
    far.numbers[:] = 1  # atoms the model never sees: hydrogen stand-ins, no MM force on them
    both = ethanol + far
    topology, positions = topology_from_atoms(both)
    system = openmm.System()
    for mass in both.get_masses():
        system.addParticle(mass)
    impl = MLPotential("gnnpot", model=ETHANOL, dtype="float64")._impl
    impl.addForces(topology, system, range(len(ethanol)), 0)
    copy = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    for candidate in (system, copy):
        context = openmm.Context(
            candidate, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference")
        )
        context.setPositions(positions)
        energy, forces = _energy_forces(context)
        ref_energy, ref_forces = _reference(ethanol, ETHANOL)
        assert energy == pytest.approx(ref_energy, rel=1e-8, abs=0)
        assert np.allclose(forces[: len(ethanol)], ref_forces, atol=1e-7) and not forces[len(ethanol) :].any()


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="give the model"):
        MLPotential("gnnpot")
    topology, _ = topology_from_atoms(_cuau_cell())
    with pytest.raises(ValueError, match=r"the topology also has \['Cu', 'Au'\]"):
        MLPotential("gnnpot", model=ETHANOL).createSystem(topology)
    with pytest.raises(TypeError, match="charge"):
        MLPotential("gnnpot", model=CUAU).createSystem(topology, charge=1)
    slab = _cuau_cell()
    slab.pbc = [True, True, False]
    with pytest.raises(ValueError, match="all three directions"):
        topology_from_atoms(slab)
