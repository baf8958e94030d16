"""``gnnpot serve`` as an i-PI client.

A real i-PI NVE run over a unix socket; TCP, EXIT, hang-up and errors against ASE's server side of the
protocol; Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.socketio import IPIProtocol
from ase.io import read

from gnnpot.calculators import GNNPotCalculator
from gnnpot.cli import main
from gnnpot.cli.serve import socket_target

MODEL = "painn-emt-cuau"
STEPS = 10
GNNPOT = [sys.executable, "-c", "import sys; from gnnpot.cli import main; sys.exit(main())"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}

# NVE of a 32-atom Cu-Au cell; i-PI binds {prefix}cuau. Forces are written as extxyz in eV/Å (format="ase").
IPI_INPUT = """<simulation verbosity="low" sockets_prefix="{prefix}">
  <output prefix="sim">
    <properties stride="1" filename="out">[step, conserved, potential]</properties>
    <trajectory filename="frc" stride="1" format="ase">forces</trajectory>
  </output>
  <total_steps>{steps}</total_steps>
  <prng><seed>12345</seed></prng>
  <ffsocket name="gnnpot" mode="unix"><address>cuau</address></ffsocket>
  <system>
    <initialize nbeads="1">
      <file mode="ase" units="angstrom">init.extxyz</file>
      <velocities mode="thermal" units="kelvin">300</velocities>
    </initialize>
    <forces><force forcefield="gnnpot"/></forces>
    <motion mode="dynamics">
      <dynamics mode="nve"><timestep units="femtosecond">2</timestep></dynamics>
    </motion>
    <ensemble><temperature units="kelvin">300</temperature></ensemble>
  </system>
</simulation>
"""


def _cuau_cell(path: Path) -> None:
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True).repeat(2)
    atoms.numbers[::4] = 79
    atoms.rattle(0.05, seed=1)
    atoms.write(path)


def _stop(*procs: subprocess.Popen) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_ipi_nve_run_matches_calculator(tmp_path):
    ipi_units = pytest.importorskip("ipi.utils.units")  # the i-PI server (extra "engines"); serve needs only ASE
    _cuau_cell(tmp_path / "init.extxyz")
    prefix = f"{tmp_path}/ipi_"
    (tmp_path / "input.xml").write_text(IPI_INPUT.format(prefix=prefix, steps=STEPS))
    ipi_bin = Path(sys.executable).parent / "i-pi"
    with open(tmp_path / "ipi.log", "w") as log:
        server = subprocess.Popen([str(ipi_bin), "input.xml"], cwd=tmp_path, env=ENV, stdout=log, stderr=log)
        client = subprocess.Popen(
            [*GNNPOT, "serve", "--model", MODEL, "--structure", "init.extxyz", "--unix", "--address", "cuau",
             "--sockets-prefix", prefix, "--wait", "60"],
            cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            out, err = client.communicate(timeout=150)
            server.wait(timeout=60)
        finally:
            _stop(client, server)
    ipi_log = (tmp_path / "ipi.log").read_text()
    assert client.returncode == 0, err
    assert server.returncode == 0, ipi_log[-2000:]
    assert err == ""
    assert f"after {STEPS + 1} force calls" in out  # step 0 and one per step
    # i-PI removes the socket it created; the client created none
    assert not Path(prefix + "cuau").exists()
    assert not list(tmp_path.glob("ipi_*"))

    table = np.loadtxt(tmp_path / "sim.out", ndmin=2)
    np.testing.assert_array_equal(table[:, 0], np.arange(STEPS + 1))
    # step 0 is the initial structure: i-PI's record equals the calculator's (float64, as gnnpot serve runs)
    atoms = read(tmp_path / "init.extxyz")
    # i-PI reads Å into bohr with its 8-digit constant and the client reads bohr with ASE's (CODATA 2014):
    # the positions arrive scaled by 1 - 1.4e-8 (the cell read by mode="ase" does not), a 5e-7 change in the
    # forces of this strained cell. On the positions the client received, the two agree to ~4e-9.
    atoms.positions *= ipi_units.unit_to_internal("length", "angstrom", 1.0) * units.Bohr
    atoms.calc = GNNPotCalculator(MODEL, dtype="float64")
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    np.testing.assert_allclose(table[0, 2] * units.Ha, energy, rtol=1e-6)  # hartree, as the client sent it
    ipi_forces = read(tmp_path / "sim.frc_0.extxyz", index=0).get_forces()  # eV/Å, 8 decimals
    np.testing.assert_allclose(ipi_forces, forces, rtol=1e-6, atol=1e-6 * np.abs(forces).max())


def test_bad_model_is_one_line(tmp_path, capsys):
    _cuau_cell(tmp_path / "init.extxyz")
    argv = ["serve", "--model", str(tmp_path / "missing.pt"), "--structure", str(tmp_path / "init.extxyz"),
            "--unix", "--address", str(tmp_path / "nothing"), "--wait", "0"]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("gnnpot serve: error: ") and "missing.pt" in err
    assert err.count("\n") == 1


def test_no_server_is_one_line(tmp_path, capsys):
    _cuau_cell(tmp_path / "init.extxyz")
    path = tmp_path / "ipi_nobody"
    argv = ["serve", "--model", MODEL, "--structure", str(tmp_path / "init.extxyz"), "--unix",
            "--address", str(path), "--wait", "0"]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"gnnpot serve: error: no i-PI server at {path}") and err.count("\n") == 1
    assert not path.exists()


def test_ctrl_c_exits_130_without_traceback(tmp_path):
    _cuau_cell(tmp_path / "init.extxyz")
    argv = ["serve", "--model", MODEL, "--structure", "init.extxyz", "--unix", "--address", str(tmp_path / "later")]
    # A terminal starts a command with SIGINT at its default. pytest itself may run with SIGINT ignored
    # (a non-interactive shell ignores it for jobs started with &); the child would inherit that, and
    # Python then never raises KeyboardInterrupt.
    default_sigint = "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    client = subprocess.Popen(
        [GNNPOT[0], "-c", default_sigint + GNNPOT[2], *argv],
        cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        line = client.stdout.readline()  # printed once the model is loaded and nothing listens yet
        assert line == f"gnnpot serve: waiting up to 60 s for i-PI at {tmp_path / 'later'}\n", line
        client.send_signal(signal.SIGINT)
        out, err = client.communicate(timeout=30)
    finally:
        _stop(client)
    assert client.returncode == 130
    assert err == "gnnpot serve: interrupted\n"


def test_socket_target_follows_ipi_names():
    assert socket_target("cuau", unix=True, port=1) == ("/tmp/ipi_cuau", "/tmp/ipi_cuau")
    assert socket_target("/run/x.sock", unix=True, port=1)[1] == "/run/x.sock"
    assert socket_target("/run/x.sock", unix=False, port=1)[1] == "/run/x.sock"  # a path is a unix socket
    assert socket_target("cuau", unix=True, port=1, sockets_prefix="/scratch/ipi_")[1] == "/scratch/ipi_cuau"
    assert socket_target("node7", unix=False, port=31415) == ("node7:31415", ("node7", 31415))
    assert socket_target("node7:4000", unix=False, port=31415)[1] == ("node7", 4000)
    assert socket_target("::1", unix=False, port=4000)[1] == ("::1", 4000)  # IPv6, not host:port


def _fake_ipi(listener: socket.socket, frames: list[Atoms], replies: list, send_exit: bool) -> None:
    """An i-PI stand-in built on ASE's server side of the protocol: one client, these frames, then EXIT or a hang-up."""
    conn, _ = listener.accept()
    with conn:
        protocol = IPIProtocol(conn)
        try:
            for atoms in frames:
                replies.append(protocol.calculate(atoms.positions, atoms.cell.array))
            if send_exit:
                protocol.end()
        except OSError as err:  # the client hung up
            replies.append(err)


def _serve_in_thread(
    argv: list[str], listener: socket.socket, frames: list[Atoms], send_exit: bool = True
) -> tuple[int, list]:
    replies: list = []
    server = threading.Thread(target=_fake_ipi, args=(listener, frames, replies, send_exit), daemon=True)
    server.start()
    code = main(argv)
    server.join(timeout=30)
    assert not server.is_alive()
    return code, replies


def test_tcp_host_port_exchange(tmp_path, capsys):
    _cuau_cell(tmp_path / "init.extxyz")
    start = read(tmp_path / "init.extxyz")
    moved = start.copy()
    moved.positions[0] += 0.1
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        argv = ["serve", "--model", MODEL, "--structure", str(tmp_path / "init.extxyz"),
                "--address", f"127.0.0.1:{port}", "--wait", "0"]  # fmt: skip
        code, replies = _serve_in_thread(argv, listener, [start, moved])
    assert code == 0, capsys.readouterr().err
    assert "i-PI ended the run after 2 force calls" in capsys.readouterr().out
    calc = GNNPotCalculator(MODEL, dtype="float64")
    for atoms, reply in zip([start, moved], replies):
        atoms.calc = calc
        np.testing.assert_allclose(reply["energy"], atoms.get_potential_energy(), rtol=1e-12)
        np.testing.assert_allclose(reply["forces"], atoms.get_forces(), rtol=1e-10, atol=1e-12)
        virial = -atoms.get_volume() * atoms.get_stress(voigt=False)
        np.testing.assert_allclose(reply["virial"], virial, rtol=1e-10, atol=1e-12)


def test_server_hanging_up_ends_cleanly(tmp_path, capsys):
    _cuau_cell(tmp_path / "init.extxyz")
    path = tmp_path / "ipi_gone"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))
        listener.listen()
        argv = ["serve", "--model", MODEL, "--structure", str(tmp_path / "init.extxyz"), "--unix",
                "--address", str(path), "--wait", "0"]  # fmt: skip
        code, replies = _serve_in_thread(argv, listener, [], send_exit=False)  # accepts and closes
    assert code == 0 and replies == []
    assert "after 0 force calls" in capsys.readouterr().out


def test_wrong_number_of_atoms_is_one_line(tmp_path, capsys):
    _cuau_cell(tmp_path / "init.extxyz")
    small = bulk("Cu", "fcc", a=3.7, cubic=True)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        argv = ["serve", "--model", MODEL, "--structure", str(tmp_path / "init.extxyz"),
                "--address", "127.0.0.1", "--port", str(port), "--wait", "0"]  # fmt: skip
        code, replies = _serve_in_thread(argv, listener, [small])
    assert code == 1
    assert capsys.readouterr().err == (
        "gnnpot serve: error: i-PI sent 4 atoms, --structure has 32: give the atoms of i-PI's initial structure, "
        "in its order\n"
    )
    assert len(replies) == 1 and isinstance(replies[0], OSError)
