"""Label structures with a reference method: ``gnnpot data label`` (the "collect" step).

:func:`label_file` reads unlabelled (or relabelled) structures, computes energy, forces and, for
periodic cells, stress with an ASE calculator in parallel worker processes, and appends each frame
to the output as soon as it is done, with its input index (``label_index``) and the method
(``label_method``) in its info. So:

* a killed run loses at most the frames in flight (each frame is one write, flushed and synced;
  a torn last frame is cut off on the next run and recomputed);
* a re-run with the same output skips the frames already there;
* a frame whose calculation fails (an SCF that does not converge) is reported by index and reason,
  kept out of the output and listed in ``<out>.failed.json``; a re-run tries it again;
* when every frame is done, the output is rewritten in input order.

Calculators (``--calculator``): ``emt`` (ASE's EMT), ``pyscf`` (:class:`~gnnpot.calculators.pyscf.
PySCFCalculator`, ``method`` and ``basis`` as arguments), ``xtb`` (``tblite``'s ASE calculator,
``method`` GFN2-xTB by default) or ``module:Class`` for any ASE calculator the user writes; the
arguments (``--calc-args``) are keyword arguments of the calculator.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.calculators.singlepoint import SinglePointCalculator

from gnnpot.data.checks import DataError
from gnnpot.data.io import Index, read_frames
from gnnpot.models.io import atomic_save_text

BUILTIN = ("emt", "pyscf", "xtb")
INDEX_KEY = "label_index"
METHOD_KEY = "label_method"


def make_calculator(name: str, calc_args: Mapping[str, Any] | None = None) -> Calculator:
    """An ASE calculator by name: ``emt``, ``pyscf``, ``xtb`` or ``module:Class``.

    Raises:
        ValueError: an unknown name, or a ``module:Class`` that cannot be imported.
        ImportError: the optional package of ``pyscf`` or ``xtb`` is not installed (with the pip line).
    """
    calc_args = dict(calc_args or {})
    if name == "emt":
        from ase.calculators.emt import EMT

        return EMT(**calc_args)
    if name == "pyscf":
        _require("pyscf", "pyscf")
        from gnnpot.calculators.pyscf import PySCFCalculator

        return PySCFCalculator(**calc_args)
    if name == "xtb":
        _require("tblite", "tblite")
        from tblite.ase import TBLite

        return TBLite(**{"method": "GFN2-xTB", "verbosity": 0, **calc_args})
    module_name, _, class_name = name.partition(":")
    if not module_name or not class_name:
        raise ValueError(f"calculator must be one of {BUILTIN} or module:Class, got {name!r}")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"calculator {name!r}: cannot import {class_name} from {module_name} ({err})") from err
    return cls(**calc_args)


def method_label(name: str, calc_args: Mapping[str, Any] | None = None) -> str:
    """The method as recorded in each frame: the calculator name and its arguments."""
    return f"{name} {json.dumps(dict(calc_args or {}), sort_keys=True)}" if calc_args else name


@dataclass
class LabelReport:
    """What a labelling run did.

    Attributes:
        out: the output file.
        labelled: frames labelled by this run.
        skipped: frames found already labelled in ``out``.
        failed: input index -> reason, for frames whose calculation failed.
        torn: whether a torn last frame (a killed writer) was cut off ``out``.
        seconds: wall-clock time.
    """

    out: Path
    labelled: int = 0
    skipped: int = 0
    failed: dict[int, str] = field(default_factory=dict)
    torn: bool = False
    seconds: float = 0.0


def label_file(
    source: str | Path,
    out: str | Path,
    calculator: str,
    calc_args: Mapping[str, Any] | None = None,
    workers: int = 1,
    index: Index = ":",
    threads: int | None = None,
) -> LabelReport:
    """Label the structures of ``source`` with a reference calculator into the extxyz file ``out``.

    Args:
        source: structures in any format :func:`~gnnpot.data.read_frames` reads (labels are ignored).
        out: extxyz output; appended to when it holds frames of an earlier run of the same method.
        calculator: ``emt``, ``pyscf``, ``xtb`` or ``module:Class``.
        calc_args: keyword arguments of the calculator (``{"method": "b3lyp", "basis": "def2-svp"}``).
        workers: worker processes; 1 computes in this process.
        index: which input frames (``":"``, ``"0:100"``, a list).
        threads: OpenMP threads per worker (default: the cores divided among the workers).

    Returns:
        The :class:`LabelReport`; failed frames are also written to ``<out>.failed.json``.

    Raises:
        DataError: the output holds frames of another method or of input frames that do not exist.
    """
    start = time.perf_counter()
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers!r}")
    calc_args = dict(calc_args or {})
    method = method_label(calculator, calc_args)
    make_calculator(calculator, calc_args)  # fail here, once, on a bad name or a missing package
    frames = read_frames(source, index=index, require=())
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done, torn = _recover(out, method, set(frames.frame_ids))
    report = LabelReport(out=out, skipped=len(done), torn=torn)
    todo = [(frame_id, _bare(atoms)) for frame_id, atoms in zip(frames.frame_ids, frames) if frame_id not in done]
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    with out.open("a", encoding="utf-8") as handle:
        for frame_id, result in _compute(todo, calculator, calc_args, workers, threads):
            if isinstance(result, str):
                report.failed[frame_id] = result
                continue
            result.info[INDEX_KEY] = frame_id
            result.info[METHOD_KEY] = method
            _append(handle, result)
            report.labelled += 1
    if out.stat().st_size == 0:
        out.unlink()  # nothing labelled: no empty file that looks like a finished run
    failed_file = out.with_name(out.name + ".failed.json")
    if report.failed:
        reasons = {str(i): f"{frames.source}, frame {i}: {why}" for i, why in sorted(report.failed.items())}
        atomic_save_text(json.dumps(reasons, indent=1), failed_file)
    else:
        failed_file.unlink(missing_ok=True)
        if out.exists() and (report.labelled or torn):
            _sort(out)
    report.seconds = time.perf_counter() - start
    return report


def _require(module: str, package: str) -> None:
    try:
        importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"this calculator needs {package}: pip install {package} (or gnnpot[label])") from err


def _bare(atoms: Atoms) -> Atoms:
    """The structure alone: no calculator, no labels."""
    bare = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc, info=dict(atoms.info))
    for name, values in atoms.arrays.items():
        if name not in ("numbers", "positions"):
            bare.arrays[name] = values.copy()
    return bare


def label_one(atoms: Atoms, calc: Calculator) -> Atoms:
    """``atoms`` with the energy, forces and (for a periodic cell) stress of ``calc`` on a single-point calculator."""
    atoms = atoms.copy()
    atoms.calc = calc
    labels = {"energy": float(atoms.get_potential_energy()), "forces": np.asarray(atoms.get_forces())}
    if atoms.pbc.all() and "stress" in calc.implemented_properties:
        labels["stress"] = np.asarray(atoms.get_stress(voigt=False))
    atoms.calc = SinglePointCalculator(atoms, **labels)
    return atoms


# --- the worker side: one calculator per process -------------------------------------------------

_WORKER_CALC: Calculator | None = None


def _start_worker(calculator: str, calc_args: dict[str, Any], threads: int) -> None:
    global _WORKER_CALC  # one calculator per worker process, built once (SCF setup is not free)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    _WORKER_CALC = make_calculator(calculator, calc_args)


def _work(atoms: Atoms) -> Atoms | str:
    try:
        return label_one(atoms, _WORKER_CALC)
    except Exception as err:  # a failed frame is reported, not fatal: the others still get labelled
        return f"{type(err).__name__}: {' '.join(str(err).split()) or 'no message'}"


def _compute(
    todo: Sequence[tuple[int, Atoms]], calculator: str, calc_args: dict[str, Any], workers: int, threads: int
) -> Iterator[tuple[int, Atoms | str]]:
    """``(input index, labelled atoms or the failure)`` for each frame, in the order they finish."""
    if not todo:
        return
    if workers == 1:
        _start_worker(calculator, calc_args, threads)
        for frame_id, atoms in todo:
            yield frame_id, _work(atoms)
        return
    # spawn, not fork: the parent may hold OpenMP or torch threads that a forked child would inherit
    # in a locked state.
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=get_context("spawn"),
        initializer=_start_worker,
        initargs=(calculator, calc_args, threads),
    ) as pool:
        pending: dict[Future, int] = {}
        queue = iter(todo)
        for frame_id, atoms in queue:  # keep at most 2 frames per worker in flight
            pending[pool.submit(_work, atoms)] = frame_id
            if len(pending) >= 2 * workers:
                break
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                yield pending.pop(future), future.result()
                following = next(queue, None)
                if following is not None:
                    pending[pool.submit(_work, following[1])] = following[0]


# --- the output file ------------------------------------------------------------------------------


def _extxyz(atoms: Atoms) -> str:
    import ase.io

    text = io.StringIO()
    ase.io.write(text, atoms, format="extxyz")
    return text.getvalue()


def _append(handle: io.TextIOBase, atoms: Atoms) -> None:
    """One frame, one write, flushed and synced: a kill leaves whole frames and at most one torn one."""
    handle.write(_extxyz(atoms))
    handle.flush()
    os.fsync(handle.fileno())


def _recover(out: Path, method: str, wanted: set[int]) -> tuple[set[int], bool]:
    """The input indices ``out`` already holds, after cutting off a torn last frame.

    Raises:
        DataError: a frame of another method, one without ``label_index``, or an index not in the input.
    """
    if not out.exists() or out.stat().st_size == 0:
        return set(), False
    done: set[int] = set()
    good_end, torn = 0, False
    for frame_number, (end, atoms) in enumerate(_read_frames_with_ends(out)):
        if atoms is None:
            torn = True
            break
        where = f"{out}, frame {frame_number}"
        if atoms.info.get(METHOD_KEY) != method:
            raise DataError(
                f"{where}: labelled with {atoms.info.get(METHOD_KEY)!r}, this run uses {method!r}; "
                "write to another --out"
            )
        if INDEX_KEY not in atoms.info or int(atoms.info[INDEX_KEY]) not in wanted:
            raise DataError(f"{where}: input frame {atoms.info.get(INDEX_KEY)!r} is not among the frames to label")
        done.add(int(atoms.info[INDEX_KEY]))
        good_end = end
    if torn:
        with out.open("r+b") as handle:
            handle.truncate(good_end)
    return done, torn


def _read_frames_with_ends(path: Path) -> Iterator[tuple[int, Atoms | None]]:
    """``(byte offset after the frame, frame)`` per extxyz frame; ``None`` for a torn or unreadable one."""
    import ase.io

    data = path.read_bytes()
    offset = 0
    while offset < len(data):
        lines, position = [], offset
        while position < len(data):  # the count line, then the comment and count atom lines
            newline = data.find(b"\n", position)
            if newline < 0:
                yield offset, None
                return
            lines.append(data[position:newline])
            position = newline + 1
            try:
                count = int(lines[0])
            except ValueError:
                yield offset, None
                return
            if len(lines) == count + 2:
                break
        else:
            yield offset, None
            return
        try:
            atoms = ase.io.read(io.StringIO(data[offset:position].decode()), format="extxyz")
        except Exception:  # a torn frame fails in many ways; it is recomputed
            yield offset, None
            return
        offset = position
        yield offset, atoms


def _sort(out: Path) -> None:
    """Rewrite ``out`` in input order (atomically), once every frame is there."""
    frames = [atoms for _, atoms in _read_frames_with_ends(out)]
    frames.sort(key=lambda atoms: int(atoms.info[INDEX_KEY]))
    atomic_save_text("".join(_extxyz(atoms) for atoms in frames), out)
