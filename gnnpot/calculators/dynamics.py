"""Molecular dynamics and relaxation with ASE's integrators and optimizers.

:func:`run_md` drives NVE (velocity Verlet), NVT (Langevin) or NPT (ASE's isotropic MTK
Nosé-Hoover chains) and logs time, temperature, potential, kinetic and total energy and the drift
of the total energy. It stops early, with a message saying why, when two atoms come closer than a
safe distance or when a committee's force uncertainty passes a threshold. :func:`relax` runs an
optimizer, with the cell too when asked.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
from ase import Atoms, units

from gnnpot.calculators.calculator import GNNPotCalculator

Ensemble = Literal["nve", "nvt", "npt"]
ENSEMBLES = ("nve", "nvt", "npt")
LOG_HEADER = f"{'time_ps':>10s} {'T_K':>9s} {'E_pot_eV':>14s} {'E_kin_eV':>12s} {'E_tot_eV':>14s} {'drift_eV':>12s}"


def thermalize_momenta(atoms: Atoms, temperature_K: float, rng: np.random.Generator) -> None:
    """Maxwell-Boltzmann momenta at ``temperature_K`` (ASE's function under either of its names).

    ase.md is imported here, not at the top: it pulls in ase.io and scipy (~40 MB of memory).
    """
    try:  # ase >= 3.29
        from ase.md.velocitydistribution import thermalize_momenta as thermalize
    except ImportError:  # older ase: the same function under its old name
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as thermalize
    thermalize(atoms, temperature_K=temperature_K, rng=rng)


class MDStop(RuntimeError):
    """A run stopped early: atoms too close, or the committee too uncertain."""


@dataclass
class MDResult:
    """Summary of a run; energies in eV, drift per atom in meV/atom."""

    steps: int  # steps done
    time_ps: float
    seconds: float  # wall time of the integration
    steps_per_second: float
    initial_total_energy: float
    final_total_energy: float
    max_abs_drift_mev_per_atom: float  # max |E_tot(t) - E_tot(0)| / N over the logged steps
    drift_rate_mev_per_atom_ps: float  # slope of a straight-line fit to E_tot(t) / N
    mean_temperature: float
    neighbor_list_builds: int
    stopped: str | None = None  # why the run stopped early, None when it finished
    compiled_at: int | None = None  # the step auto_compile compiled the models at, None when it did not
    log: list[tuple[float, float, float, float, float]] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict[str, Any]:
        """The fields as plain data (JSON-ready)."""
        record = asdict(self)
        record.pop("log")
        return record


# When to compile an MD run that did not ask (``auto_compile``). Measured on the 2-core dev VM, one
# thread, another process on the other core, float64, cold inductor cache (2026-12-06):
#   schnet-rmd17-aspirin: first compiled call 38.6 s (20.6 s with the cache warm), step 9.75 -> 7.80 ms;
#   painn-emt-cuau, Cu108: first compiled call 43.1 s, step 37.9 -> 28.9 ms.
# and (2026-12-07, same conditions, float32, Cu108) the equivariant families, whose cost grows with l:
#   MACE small: first compiled call 128 s; NequIP paper (l = 3): 869 s.
# NequIP takes its paper size's cost, so that a smaller NequIP compiles later than it could rather
# than a large one spending a quarter of an hour compiling for a short run.
# Families not measured take the README's "a couple of minutes" as their cost.
COMPILE_COST_S = {"schnet": 40.0, "painn": 45.0, "mace": 130.0, "nequip": 870.0}
UNMEASURED_COMPILE_COST_S = 150.0
COMPILED_SPEEDUP = 1.25  # the smaller of the two measured eager/compiled step-time ratios
PROBE_STEPS = (5, 25)  # the eager steps timed for the decision (the first ones carry one-off costs)


def compile_pays(calc: GNNPotCalculator, seconds_per_step: float, steps_left: int) -> bool:
    """Whether compiling the calculator's models now saves time over ``steps_left`` more steps.

    The saving is ``steps_left * seconds_per_step * (1 - 1 / COMPILED_SPEEDUP)``; the cost is the
    family's first compiled call (:data:`COMPILE_COST_S`), summed over a committee. Models without a
    compiled path (long-range or dispersion terms, Coulomb KRR) never compile.
    """
    cost = 0.0
    for model in calc.models:
        config = getattr(model, "config", {})
        potential = getattr(model, "potential", None)
        if potential is None or potential.direct_geometry or model.compiled:
            return False
        cost += COMPILE_COST_S.get(config.get("representation"), UNMEASURED_COMPILE_COST_S)
    return steps_left * seconds_per_step * (1.0 - 1.0 / COMPILED_SPEEDUP) > cost


def run_md(
    atoms: Atoms,
    calc: GNNPotCalculator,
    ensemble: Ensemble = "nve",
    temperature: float = 300.0,
    timestep: float = 0.5,
    steps: int = 1000,
    trajectory: str | Path | None = None,
    logfile: str | Path | IO[str] | None = None,
    interval: int = 10,
    friction: float = 0.01,
    pressure: float = 0.0,
    tdamp: float = 100.0,
    pdamp: float = 1000.0,
    max_force_std: float | None = None,
    min_distance: float | None = 0.5,
    seed: int = 0,
    init_velocities: bool = True,
    auto_compile: bool = False,
) -> MDResult:
    """Integrate ``steps`` steps from ``atoms`` (changed in place).

    Args:
        atoms: the start structure; its velocities are drawn at ``temperature`` unless
            ``init_velocities`` is False.
        calc: the calculator (a committee for ``max_force_std``).
        ensemble: ``nve``, ``nvt`` (Langevin) or ``npt`` (isotropic MTK; needs a periodic cell).
        temperature: K, for the velocities and the thermostat.
        timestep: fs.
        steps: number of steps.
        trajectory: ``.traj`` (ASE trajectory) or any other name (extxyz), written every ``interval``.
        logfile: path or open text stream for the log table (every ``interval`` steps).
        interval: steps between log lines and trajectory frames.
        friction: Langevin friction, 1/fs.
        pressure: NPT pressure, GPa.
        tdamp: thermostat time constant (NPT), fs.
        pdamp: barostat time constant (NPT), fs.
        max_force_std: stop when the committee's largest per-atom force std passes this (eV/Å).
        min_distance: stop when two atoms come closer than this (Å); ``None`` for no check.
        seed: random seed of the velocities and the Langevin noise.
        init_velocities: draw Maxwell-Boltzmann velocities (and remove drift and rotation).
        auto_compile: time a few eager steps, then compile the calculator's models when the run is
            long enough to repay the compilation (:func:`compile_pays`); the result's
            ``compiled_at`` says at which step, if any.

    Raises:
        ValueError: bad arguments (unknown ensemble, NPT without a periodic cell, a committee
            threshold for a single model).
    """
    if ensemble not in ENSEMBLES:
        raise ValueError(f"ensemble must be one of {ENSEMBLES}, got {ensemble!r}")
    if ensemble == "npt" and not atoms.pbc.all():
        raise ValueError("npt needs a cell that is periodic in all three directions")
    if max_force_std is not None and len(calc.models) < 2:
        raise ValueError("max_force_std needs a committee: give the calculator two or more models")
    if steps < 0 or interval < 1:
        raise ValueError(f"steps must be >= 0 and interval >= 1, got {steps} and {interval}")
    rng = np.random.default_rng(seed)
    atoms.calc = calc
    if init_velocities:
        from ase.md.velocitydistribution import Stationary, ZeroRotation

        thermalize_momenta(atoms, temperature_K=temperature, rng=rng)
        Stationary(atoms)
        if not atoms.pbc.any():
            ZeroRotation(atoms)
    dynamics = _integrator(atoms, ensemble, temperature, timestep, friction, pressure, tdamp, pdamp, rng)
    log_stream, close_log = _open_log(logfile)
    writer, close_writer = _trajectory_writer(trajectory, atoms)
    num_atoms = len(atoms)
    log: list[tuple[float, float, float, float, float]] = []
    start_builds = calc.neighbors.num_builds

    def check() -> None:
        if min_distance is not None and calc.min_distance < min_distance:
            raise MDStop(
                f"two atoms are {calc.min_distance:.3f} Å apart, closer than the safe distance {min_distance} Å"
            )
        if max_force_std is not None:
            worst = float(np.max(calc.results["forces_std"]))
            if worst > max_force_std:
                atom = int(np.argmax(calc.results["forces_std"]))
                raise MDStop(
                    f"committee force uncertainty {worst:.3f} eV/Å on atom {atom} passed the threshold "
                    f"{max_force_std} eV/Å"
                )

    def record() -> None:
        epot = atoms.get_potential_energy()
        ekin = atoms.get_kinetic_energy()
        row = (dynamics.get_time() / (1000 * units.fs), atoms.get_temperature(), epot, ekin, epot + ekin)
        log.append(row)
        if log_stream is not None:
            drift = row[4] - log[0][4]
            print(f"{row[0]:10.4f} {row[1]:9.2f} {row[2]:14.6f} {row[3]:12.6f} {row[4]:14.6f} {drift:12.6f}",
                  file=log_stream, flush=True)  # fmt: skip
        if writer is not None:
            writer(atoms)

    if log_stream is not None:
        print(LOG_HEADER, file=log_stream, flush=True)
    stopped = None
    written = -1  # step of the last logged frame
    dynamics.attach(check, interval=1)  # every step; an MDStop from it ends dynamics.run
    probe: dict[str, float] = {}
    compiled_at = None

    def consider_compiling() -> None:
        nonlocal compiled_at
        step = dynamics.nsteps
        if step == PROBE_STEPS[0]:
            probe["start"] = time.perf_counter()
        elif step == PROBE_STEPS[1] and "start" in probe:
            per_step = (time.perf_counter() - probe["start"]) / (PROBE_STEPS[1] - PROBE_STEPS[0])
            if compile_pays(calc, per_step, steps - step):
                calc.enable_compile()
                compiled_at = step

    if auto_compile:
        dynamics.attach(consider_compiling, interval=1)
    start = time.perf_counter()
    try:
        atoms.get_potential_energy()
        check()
        record()
        written = 0
        start = time.perf_counter()
        while dynamics.nsteps < steps:
            dynamics.run(min(interval, steps - dynamics.nsteps))
            record()
            written = dynamics.nsteps
    except MDStop as err:
        stopped = f"stopped at step {dynamics.nsteps} ({dynamics.nsteps * timestep / 1000:.4f} ps): {err}"
        if written != dynamics.nsteps:
            record()  # log and keep the frame that stopped the run
    finally:
        seconds = time.perf_counter() - start
        close_writer()
        close_log()
    done = dynamics.nsteps
    result = _summary(log, num_atoms, done, timestep, seconds, calc.neighbors.num_builds - start_builds, stopped)
    result.compiled_at = compiled_at
    return result


def _integrator(
    atoms: Atoms,
    ensemble: str,
    temperature: float,
    timestep: float,
    friction: float,
    pressure: float,
    tdamp: float,
    pdamp: float,
    rng: np.random.Generator,
) -> Any:
    dt = timestep * units.fs
    if ensemble == "nve":
        from ase.md.verlet import VelocityVerlet

        return VelocityVerlet(atoms, timestep=dt)
    if ensemble == "nvt":
        from ase.md.langevin import Langevin

        # fixcm=False: ASE's fixcm=True (its default, deprecated in 3.28) heats small systems; measured
        # on 9-atom ethanol at 500 K with EMT it averaged 700 K, fixcm=False 506 K. The centre of
        # mass then diffuses, as Langevin dynamics has it; the internal motion is unaffected.
        return Langevin(
            atoms, timestep=dt, temperature_K=temperature, friction=friction / units.fs, fixcm=False, rng=rng
        )
    from ase.md.nose_hoover_chain import IsotropicMTKNPT

    return IsotropicMTKNPT(
        atoms,
        timestep=dt,
        temperature_K=temperature,
        pressure_au=pressure * units.GPa,
        tdamp=tdamp * units.fs,
        pdamp=pdamp * units.fs,
    )


def _open_log(logfile: str | Path | IO[str] | None) -> tuple[IO[str] | None, Any]:
    if logfile is None:
        return None, lambda: None
    if isinstance(logfile, str | Path):
        stream = open(logfile, "w")  # closed by the returned function
        return stream, stream.close
    return logfile, lambda: None


def _trajectory_writer(trajectory: str | Path | None, atoms: Atoms) -> tuple[Any, Any]:
    """A function that appends a frame (with energy, forces and, when periodic, stress), and a closer."""
    if trajectory is None:
        return None, lambda: None
    path = Path(trajectory)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".traj":
        from ase.io import Trajectory  # imported when used: ase.io pulls in scipy (~40 MB)

        traj = Trajectory(str(path), "w", atoms)
        return (lambda a: traj.write(a)), traj.close
    stream = open(path, "w")  # closed by the returned function
    from ase.io import write

    return (lambda a: write(stream, a, format="extxyz")), stream.close


def _summary(
    log: list[tuple[float, float, float, float, float]],
    num_atoms: int,
    steps: int,
    timestep: float,
    seconds: float,
    builds: int,
    stopped: str | None,
) -> MDResult:
    table = np.array(log, dtype=np.float64).reshape(-1, 5)
    etot = table[:, 4]
    drift = (etot - etot[0]) / num_atoms * 1000 if len(etot) else np.zeros(1)
    rate = float(np.polyfit(table[:, 0], drift, 1)[0]) if len(etot) > 2 else 0.0
    return MDResult(
        steps=steps,
        time_ps=steps * timestep / 1000,
        seconds=seconds,
        steps_per_second=steps / seconds if seconds > 0 else float("nan"),
        initial_total_energy=float(etot[0]) if len(etot) else float("nan"),
        final_total_energy=float(etot[-1]) if len(etot) else float("nan"),
        max_abs_drift_mev_per_atom=float(np.abs(drift).max()),
        drift_rate_mev_per_atom_ps=rate,
        mean_temperature=float(table[:, 1].mean()) if len(etot) else float("nan"),
        neighbor_list_builds=builds,
        stopped=stopped,
        log=[tuple(row) for row in table.tolist()],
    )


@dataclass
class RelaxResult:
    """Summary of a relaxation; energies in eV, forces in eV/Å."""

    converged: bool
    steps: int
    initial_energy: float
    final_energy: float
    final_max_force: float
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        """The fields as plain data (JSON-ready)."""
        return asdict(self)


def relax(
    atoms: Atoms,
    calc: GNNPotCalculator,
    fmax: float = 0.05,
    steps: int = 1000,
    cell: bool = False,
    optimizer: Literal["fire", "bfgs", "lbfgs"] = "fire",
    trajectory: str | Path | None = None,
    logfile: str | Path | None = None,
) -> RelaxResult:
    """Relax positions (and the cell with ``cell=True``, through ASE's ``FrechetCellFilter``) to ``fmax``.

    ``atoms`` is changed in place. With ``cell=True`` the criterion covers the stress too (ASE's
    filter turns it into generalised forces).
    """
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS, FIRE, LBFGS

    optimizers = {"fire": FIRE, "bfgs": BFGS, "lbfgs": LBFGS}
    if optimizer not in optimizers:
        raise ValueError(f"optimizer must be one of {sorted(optimizers)}, got {optimizer!r}")
    if cell and not atoms.pbc.all():
        raise ValueError("cell relaxation needs a cell that is periodic in all three directions")
    atoms.calc = calc
    initial = atoms.get_potential_energy()
    target = FrechetCellFilter(atoms) if cell else atoms
    start = time.perf_counter()
    opt = optimizers[optimizer](target, logfile=str(logfile) if logfile else None, trajectory=trajectory)
    converged = bool(opt.run(fmax=fmax, steps=steps))
    max_force = float(np.linalg.norm(target.get_forces(), axis=1).max()) if len(atoms) else 0.0
    return RelaxResult(
        converged=converged,
        steps=int(opt.get_number_of_steps()),
        initial_energy=float(initial),
        final_energy=float(atoms.get_potential_energy()),
        final_max_force=max_force,
        seconds=time.perf_counter() - start,
    )
