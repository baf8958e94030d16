"""``gnnpot serve``: a model (or a committee) as an i-PI client, the "driver" that computes forces for i-PI.

i-PI (the server) owns the dynamics and the socket: it binds ``<simulation sockets_prefix>`` + the
``<address>`` of its ``<ffsocket>`` (``/tmp/ipi_NAME`` by default) or a TCP port, sends positions and
cell (bohr), and gets energy (hartree), forces and virial back. This side only connects: it creates
no file, and i-PI removes its socket file when it shuts down. The protocol loop is ASE's
:class:`~ase.calculators.socketio.SocketClient`; the model runs through :class:`GNNPotCalculator`.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from collections.abc import Sequence
from typing import TextIO

import numpy as np
from ase.calculators.socketio import IPIProtocol, SocketClient
from ase.parallel import DummyMPI

from gnnpot.cli.common import ArgumentParser, guarded
from gnnpot.cli.dynamics import _add_structure_arguments, _structure_and_calculator

DEFAULT_PORT = 65535  # the default <port> of i-PI's <ffsocket>
SOCKETS_PREFIX = "/tmp/ipi_"  # i-PI's default <simulation sockets_prefix>


class _CheckedProtocol(IPIProtocol):
    """ASE's i-PI protocol that refuses positions for another number of atoms than the template's."""

    def __init__(self, sock: socket.socket, num_atoms: int, log: TextIO | None = None) -> None:
        super().__init__(sock, txt=log)
        self.num_atoms = num_atoms

    def recvposdata(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cell [3, 3] Å, inverse cell [3, 3] 1/Å and positions [num_atoms, 3] Å from a POSDATA message."""
        cell, icell, positions = super().recvposdata()
        if len(positions) != self.num_atoms:
            raise ValueError(
                f"i-PI sent {len(positions)} atoms, --structure has {self.num_atoms}: give the atoms of i-PI's "
                "initial structure, in its order"
            )
        return cell, icell, positions


class IPIClient(SocketClient):
    """ASE's i-PI client on a socket connected by the caller.

    ASE's own constructor connects to ``host:port`` or to ``/tmp/ipi_NAME`` only, while i-PI binds
    ``sockets_prefix + address`` for any prefix. The protocol (STATUS, POSDATA, GETFORCE, INIT, EXIT,
    a closed connection as EXIT) stays ASE's :meth:`SocketClient.irun`.

    Args:
        sock: a connected stream socket (unix or TCP).
        num_atoms: the number of atoms of the structure passed to :meth:`irun`; i-PI must send as many.
        log: where ASE logs each protocol message, or ``None``.
    """

    def __init__(self, sock: socket.socket, num_atoms: int, log: TextIO | None = None) -> None:
        # The state ASE's constructor sets after it connects (ase >= 3.23); one process, no MPI ranks.
        self.comm = DummyMPI()
        self.host, self.port, self.unixsocket = None, None, None
        self.protocol = _CheckedProtocol(sock, num_atoms, log=log)
        self.log = self.protocol.log
        self.closed = False
        self.bead_index = 0
        self.bead_initbytes = b""
        self.state = "READY"


def socket_target(
    address: str, unix: bool, port: int, sockets_prefix: str = SOCKETS_PREFIX
) -> tuple[str, str | tuple[str, int]]:
    """Where i-PI listens, as i-PI names it.

    Args:
        address: the ``<address>`` of i-PI's ``<ffsocket>``: a name (unix), an absolute socket path
            (always unix), or a host name (TCP), optionally ``host:port``.
        unix: a unix-domain socket when True, TCP when False (unless ``address`` is an absolute path).
        port: the TCP port when ``address`` names none.
        sockets_prefix: i-PI's ``<simulation sockets_prefix>``, put before a unix socket name.

    Returns:
        A description for messages (the socket path, or ``host:port``) and the address to connect to
        (the path, or ``(host, port)``).
    """
    if os.path.isabs(address):
        return address, address
    if unix:
        return sockets_prefix + address, sockets_prefix + address
    host, sep, tail = address.rpartition(":")
    if sep and tail.isdigit() and ":" not in host:
        address, port = host, int(tail)
    return f"{address}:{port}", (address, port)


def connect(address: str, unix: bool, port: int, sockets_prefix: str, wait: float) -> tuple[socket.socket, str]:
    """Connect to i-PI, trying again every 0.1 s for ``wait`` seconds while nothing listens yet.

    Args:
        address: see :func:`socket_target`.
        unix: see :func:`socket_target`.
        port: see :func:`socket_target`.
        sockets_prefix: see :func:`socket_target`.
        wait: seconds to keep trying, so that i-PI and the client can be started together.

    Returns:
        The connected socket (blocking, no timeout: i-PI may take its time between steps) and where it is.

    Raises:
        ConnectionError: nothing accepted the connection within ``wait`` seconds.
    """
    where, target = socket_target(address, unix, port, sockets_prefix)
    deadline = time.monotonic() + wait
    announced = False
    while True:
        try:
            if isinstance(target, str):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.connect(target)
                except OSError:
                    sock.close()
                    raise
            else:
                sock = socket.create_connection(target)
                # Several small writes per step: without this, Nagle's algorithm delays each reply.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (FileNotFoundError, ConnectionRefusedError) as err:
            if time.monotonic() >= deadline:
                raise ConnectionError(
                    f"no i-PI server at {where} ({err.strerror}) after waiting {wait:g} s; start i-PI first "
                    "or raise --wait"
                ) from None
            if not announced:
                print(f"gnnpot serve: waiting up to {wait:g} s for i-PI at {where}", flush=True)
                announced = True
            time.sleep(0.1)
            continue
        sock.settimeout(None)
        return sock, where


def serve_main(argv: Sequence[str]) -> int:
    """``gnnpot serve``: compute energies, forces and virials for i-PI until it ends the run.

    Args:
        argv: the arguments after ``gnnpot serve``.

    Returns:
        The exit status: 0 when i-PI sent EXIT or closed the connection, 1 for bad input or no server,
        2 for bad arguments (argparse exits), 130 on Ctrl-C.
    """
    parser = ArgumentParser(
        prog="gnnpot serve",
        description="Serve a model to i-PI as a client (driver) over i-PI's socket protocol. i-PI sends "
        "positions and cell; --structure gives the atomic numbers and periodicity (the same atoms, in the "
        "same order, as i-PI's initial structure). Exits when i-PI sends EXIT or closes the connection.",
    )
    _add_structure_arguments(parser, committee=True)
    parser.add_argument(
        "--address",
        default="localhost",
        help="i-PI's <ffsocket> <address>: a unix socket name (the file is SOCKETS_PREFIX + name) or an "
        "absolute socket path; without --unix, a host name or host:port (default localhost)",
    )
    parser.add_argument("--unix", action="store_true", help="unix-domain socket (i-PI mode='unix'); default TCP")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT})")
    parser.add_argument(
        "--sockets-prefix",
        default=SOCKETS_PREFIX,
        help=f"i-PI's <simulation sockets_prefix>, put before a unix socket name (default {SOCKETS_PREFIX})",
    )
    parser.add_argument(
        "--wait", type=float, default=60.0, help="seconds to wait for i-PI to open its socket (default 60)"
    )
    args = parser.parse_args(list(argv))
    if args.wait < 0:
        parser.error(f"--wait must be >= 0, got {args.wait:g}")
    try:
        return guarded("serve", _serve, args)
    except KeyboardInterrupt:
        print("gnnpot serve: interrupted", file=sys.stderr)
        return 130


def _serve(args: argparse.Namespace) -> int:
    """Load the model and structure, connect, answer i-PI until it ends, print a summary."""
    atoms, calc = _structure_and_calculator(args)
    atoms.calc = calc
    atoms.get_potential_energy()  # a structure the model cannot take fails here, before i-PI waits on us
    use_stress = bool(atoms.pbc.all())  # i-PI gets a zero virial for molecules and slabs
    sock, where = connect(args.address, args.unix, args.port, args.sockets_prefix, args.wait)
    print(f"gnnpot serve: connected to i-PI at {where}, {len(atoms)} atoms", flush=True)
    client = IPIClient(sock, len(atoms))
    calls, start = 0, time.perf_counter()
    ending = "i-PI ended the run"
    try:
        for _ in client.irun(atoms, use_stress=use_stress):
            calls += 1
    except (ConnectionResetError, BrokenPipeError):
        ending = "i-PI dropped the connection"
    finally:
        client.close()
    seconds = time.perf_counter() - start
    rate = f", {calls / seconds:.1f} per second" if calls and seconds > 0 else ""
    print(f"gnnpot serve: {ending} after {calls} force calls in {seconds:.1f} s{rate}", flush=True)
    return 0
