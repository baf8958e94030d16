"""Dataset statistics: per-element reference energies (E0), energy and force scales, neighbour counts.

The model takes its per-element shift from :func:`fit_e0` and its scale from
:func:`force_rms` or :func:`per_atom_energy_std`. Every function accepts either labelled
``ase.Atoms`` (as read by :func:`gnnpot.data.io.read_frames`) or :class:`AtomicData` graphs.

Isolated atoms (one atom, no periodicity) are reference frames for E0. They are left out of
the scale statistics and the neighbour count, which describe the structures the model learns.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols

from gnnpot import keys
from gnnpot.data.atomic_data import AtomicData
from gnnpot.data.io import frame_labels
from gnnpot.data.neighbors import neighbor_list

E0Method = Literal["auto", "isolated", "lstsq"]

# Mean energy per atom relative to isolated atoms (eV/atom) beyond which the isolated-atom E0s
# are suspect: binding energies are a few eV/atom, so more points to other units or another
# level of theory. Above zero, the structures would be less stable than free atoms.
MAX_BINDING_EV_PER_ATOM = 10.0
MAX_UNBOUND_EV_PER_ATOM = 0.5


@dataclass(frozen=True)
class _Frame:
    numbers: np.ndarray  # [N] int
    energy: float | None  # eV
    forces: np.ndarray | None  # [N, 3] eV/Å
    stress: np.ndarray | None  # [3, 3] eV/Å^3
    isolated: bool  # one atom, no periodic direction
    num_edges: int | None  # edges of a prebuilt graph, None for Atoms
    atoms: Atoms | None


def _frames(data: Iterable[Atoms | AtomicData]) -> list[_Frame]:
    out = []
    for item in data:
        if isinstance(item, AtomicData):
            numbers = item[keys.ATOMIC_NUMBERS].cpu().numpy()
            out.append(
                _Frame(
                    numbers=numbers,
                    energy=float(item[keys.ENERGY][0]) if item.has_label(keys.ENERGY) else None,
                    forces=item[keys.FORCES].double().cpu().numpy() if item.has_label(keys.FORCES) else None,
                    stress=item[keys.STRESS][0].double().cpu().numpy() if item.has_label(keys.STRESS) else None,
                    isolated=len(numbers) == 1 and not bool(item[keys.PBC].any()),
                    num_edges=int(item[keys.EDGE_INDEX].size(1)),
                    atoms=None,
                )
            )
        elif isinstance(item, Atoms):
            labels = frame_labels(item)
            energy = labels.get(keys.ENERGY)
            forces = labels.get(keys.FORCES)
            stress = labels.get(keys.STRESS)
            out.append(
                _Frame(
                    numbers=np.asarray(item.numbers),
                    energy=None if energy is None else float(energy),
                    forces=None if forces is None else np.asarray(forces, dtype=np.float64),
                    stress=None if stress is None else np.asarray(stress, dtype=np.float64),
                    isolated=len(item) == 1 and not item.pbc.any(),
                    num_edges=None,
                    atoms=item,
                )
            )
        else:
            raise TypeError(f"expected ase.Atoms or AtomicData, got {type(item).__name__}")
    return out


def _elements(frames: Sequence[_Frame]) -> list[int]:
    return sorted({int(z) for frame in frames for z in frame.numbers})


class DataSummary:
    """What the statistics need of a dataset, gathered in one streaming pass (:func:`summarise`).

    Per frame with an energy it keeps only the composition (a row of small integers in a growing
    array), the energy and whether the frame is an isolated atom; forces and neighbour counts are
    summed as they pass. A dataset read lazily from disk is summarised in about 20 bytes per frame.
    """

    def __init__(self) -> None:
        self.elements: list[int] = []  # column order of the composition rows
        self._counts = np.zeros((1024, 0), dtype=np.int32)  # [capacity, len(elements)]
        self._energies = np.zeros(1024)
        self._isolated = np.zeros(1024, dtype=bool)
        self._size = 0  # rows in use: frames with an energy
        self.isolated_energies: dict[int, float] = {}
        self.force_square_sum = 0.0
        self.force_count = 0
        self.num_edges = 0
        self.num_neighbor_atoms = 0  # atoms of the non-isolated frames whose edges were counted
        self.num_frames = 0
        self.sha256: str | None = None

    def add(self, numbers: np.ndarray, energy: float | None, forces: np.ndarray | None, isolated: bool) -> None:
        """Fold one frame in (``num_edges`` and the hash are added by :func:`summarise`)."""
        self.num_frames += 1
        present, counts = np.unique(np.asarray(numbers, dtype=np.int64), return_counts=True)
        new = [int(z) for z in present if int(z) not in self.elements]
        if new:
            self.elements += new
            self._counts = np.pad(self._counts, ((0, 0), (0, len(new))))
        if energy is not None:
            if self._size == len(self._energies):  # double the capacity
                self._counts = np.concatenate([self._counts, np.zeros_like(self._counts)])
                self._energies = np.concatenate([self._energies, np.zeros_like(self._energies)])
                self._isolated = np.concatenate([self._isolated, np.zeros_like(self._isolated)])
            self._counts[self._size, [self.elements.index(int(z)) for z in present]] = counts
            self._energies[self._size] = float(energy)
            self._isolated[self._size] = isolated
            self._size += 1
            if isolated:
                z = int(present[0])
                if z in self.isolated_energies and abs(self.isolated_energies[z] - energy) > 1e-3:
                    raise ValueError(
                        f"two isolated {chemical_symbols[z]} atoms with different energies: "
                        f"{self.isolated_energies[z]} and {energy} eV"
                    )
                self.isolated_energies[z] = float(energy)
        if forces is not None and not isolated:
            self.force_square_sum += float(np.square(forces, dtype=np.float64).sum())
            self.force_count += int(np.size(forces))

    def energy_table(self, elements: Sequence[int], isolated: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(counts [F, len(elements)], energies [F])`` of the frames with an energy.

        Args:
            elements: the columns wanted, atomic numbers.
            isolated: only isolated-atom frames (True), only the others (False), or all (None).

        Raises:
            ValueError: a frame holds an element not among ``elements``.
        """
        rows = np.ones(self._size, dtype=bool) if isolated is None else self._isolated[: self._size] == isolated
        full = self._counts[: self._size][rows]
        counts = np.zeros((len(full), len(elements)))
        for column, z in enumerate(self.elements):
            if z in elements:
                counts[:, list(elements).index(z)] = full[:, column]
            elif full[:, column].any():
                raise ValueError(f"element {chemical_symbols[z]} (Z={z}) is not among elements {list(elements)}")
        return counts, self._energies[: self._size][rows].copy()


def summarise(data: Iterable[Atoms | AtomicData] | DataSummary, cutoff: float | None = None) -> DataSummary:
    """One pass over ``data`` (a list, or a lazy dataset read from disk) for every statistic below.

    Args:
        data: labelled frames or graphs; a :class:`DataSummary` is returned as it is.
        cutoff: neighbour radius (Å) for the neighbour count of ``Atoms``; graphs bring their edges.
    """
    if isinstance(data, DataSummary):
        return data
    import hashlib

    summary = DataSummary()
    digest = hashlib.sha256()
    hashed = True
    for item in data:
        if isinstance(item, AtomicData):
            numbers = item[keys.ATOMIC_NUMBERS].cpu().numpy()
            isolated = len(numbers) == 1 and not bool(item[keys.PBC].any())
            energy = float(item[keys.ENERGY][0]) if item.has_label(keys.ENERGY) else None
            forces = item[keys.FORCES].double().cpu().numpy() if item.has_label(keys.FORCES) else None
            edges = int(item[keys.EDGE_INDEX].size(1))
            _hash_graph(digest, item)
        elif isinstance(item, Atoms):
            labels = frame_labels(item)
            numbers = np.asarray(item.numbers)
            isolated = len(item) == 1 and not item.pbc.any()
            energy = None if labels.get(keys.ENERGY) is None else float(labels[keys.ENERGY])
            forces = None if labels.get(keys.FORCES) is None else np.asarray(labels[keys.FORCES], dtype=np.float64)
            edges = len(neighbor_list(item, cutoff)[0]) if cutoff is not None and not isolated else None
            hashed = False
        else:
            raise TypeError(f"expected ase.Atoms or AtomicData, got {type(item).__name__}")
        summary.add(numbers, energy, forces, isolated)
        if edges is not None and not isolated:
            summary.num_edges += edges
            summary.num_neighbor_atoms += len(numbers)
    summary.sha256 = digest.hexdigest() if hashed and summary.num_frames else None
    return summary


def isolated_atom_energies(data: Iterable[Atoms | AtomicData] | DataSummary) -> dict[int, float]:
    """Energies of isolated-atom frames (one atom, no periodicity) by atomic number, eV.

    Raises:
        ValueError: two isolated-atom frames of one element disagree by more than 1 meV.
    """
    return dict(summarise(data).isolated_energies)


def lstsq_e0(
    data: Iterable[Atoms | AtomicData] | DataSummary, elements: Sequence[int] | None = None
) -> tuple[dict[int, float], int]:
    """Per-element energies that best fit total energies as sums over atoms, by least squares.

    Isolated-atom frames are left out unless there is nothing else. When the compositions do
    not determine every element (an rMD17 molecule has a single composition: rank 1), the
    answer is the exact-fit solution closest to one common per-atom energy, i.e. the
    minimum-norm least-squares deviation from the mean energy per atom. It is then not unique;
    any exact solution shifts every frame of these compositions by the same amount.

    Args:
        data: labelled frames or graphs (those without an energy are skipped), or their summary.
        elements: atomic numbers to return, default those in ``data``. An element absent from
            the fit data gets 0.0, with a warning.

    Returns:
        ``({z: E0 in eV}, rank)``, the rank of the composition matrix.
    """
    summary = summarise(data)
    elements = list(elements) if elements is not None else sorted(summary.elements)
    counts, energy = summary.energy_table(elements, isolated=False)
    if len(energy) == 0:
        counts, energy = summary.energy_table(elements)
    if len(energy) == 0:
        raise ValueError("no frames with an energy label to fit E0")
    mean = energy.sum() / counts.sum()
    deviation, _, rank, _ = np.linalg.lstsq(counts, energy - mean * counts.sum(axis=1), rcond=None)
    present = counts.sum(axis=0) > 0
    missing = [chemical_symbols[z] for z, ok in zip(elements, present, strict=True) if not ok]
    if missing:
        warnings.warn(f"no energy data for {missing}: their E0 is set to 0.0 eV", stacklevel=2)
    e0 = {z: float(mean + d) if ok else 0.0 for z, d, ok in zip(elements, deviation, present, strict=True)}
    return e0, int(rank)


def fit_e0(
    data: Iterable[Atoms | AtomicData] | DataSummary,
    elements: Sequence[int] | None = None,
    method: E0Method = "auto",
) -> dict[int, float]:
    """Per-element reference energies E0 (eV), the model's per-atom energy shift.

    Args:
        data: labelled frames or graphs, possibly with isolated-atom frames among them, or their summary.
        elements: atomic numbers to return, default those in ``data``.
        method: ``"isolated"`` takes the isolated-atom energies; ``"lstsq"`` fits
            (:func:`lstsq_e0`); ``"auto"`` takes isolated atoms when they cover every
            element and fits otherwise.

    Returns:
        ``{z: E0}`` in eV.
    """
    summary = summarise(data)
    elements = list(elements) if elements is not None else sorted(summary.elements)
    isolated = summary.isolated_energies
    if _e0_source(isolated, elements, method) == "isolated":
        return {z: isolated[z] for z in elements}
    return lstsq_e0(summary, elements)[0]


def _e0_source(isolated: dict[int, float], elements: Sequence[int], method: E0Method) -> str:
    """``"isolated"`` or ``"lstsq"``: where :func:`fit_e0` takes E0 from."""
    covered = all(z in isolated for z in elements)
    if method == "isolated" and not covered:
        missing = [chemical_symbols[z] for z in elements if z not in isolated]
        raise ValueError(f"no isolated-atom frame for {missing}")
    if method == "isolated" or (method == "auto" and covered):
        return "isolated"
    if method not in ("auto", "lstsq"):
        raise ValueError(f"method must be 'auto', 'isolated' or 'lstsq', got {method!r}")
    return "lstsq"


def _per_atom_residuals(frames: Sequence[_Frame], e0: dict[int, float]) -> np.ndarray:
    return np.array(
        [
            (f.energy - sum(e0[int(z)] for z in f.numbers)) / len(f.numbers)
            for f in frames
            if f.energy is not None and not f.isolated
        ]
    )


def per_atom_energy_std(data: Iterable[Atoms | AtomicData] | DataSummary, e0: dict[int, float]) -> float:
    """Standard deviation over frames of ``(E - sum of E0) / num_atoms``, eV/atom.

    Isolated-atom frames are left out.
    """
    summary = summarise(data)
    elements = sorted(summary.elements)
    counts, energy = summary.energy_table(elements, isolated=False)
    if len(energy) == 0:
        raise ValueError("no frames with an energy label")
    reference = counts @ np.array([e0[z] for z in elements], dtype=np.float64)
    return float(((energy - reference) / counts.sum(axis=1)).std())


def force_rms(data: Iterable[Atoms | AtomicData] | DataSummary) -> float:
    """Root mean square of the force components, eV/Å (NequIP's ``forces_rms``).

    Frames without forces and isolated atoms are left out.
    """
    summary = summarise(data)
    if summary.force_count == 0:
        raise ValueError("no frames with a forces label")
    return float(np.sqrt(summary.force_square_sum / summary.force_count))


def mean_num_neighbors(data: Iterable[Atoms | AtomicData] | DataSummary, cutoff: float | None = None) -> float:
    """Mean number of neighbours per atom within ``cutoff`` (Å), counting periodic images.

    Graphs give their own edge count (``cutoff`` is then not needed); ``Atoms`` need a cutoff.
    Isolated atoms are left out.
    """
    if not isinstance(data, DataSummary):
        data = list(data) if not isinstance(data, Sequence) else data
        if cutoff is None and any(isinstance(item, Atoms) for item in data):
            raise ValueError("mean_num_neighbors of Atoms needs a cutoff")
    summary = summarise(data, cutoff)
    if summary.num_neighbor_atoms == 0:
        raise ValueError("no frames with more than one atom or with periodicity")
    return summary.num_edges / summary.num_neighbor_atoms


def dataset_stats(
    data: Sequence[Atoms | AtomicData], cutoff: float | None = None, e0_method: E0Method = "auto"
) -> dict[str, Any]:
    """Everything ``gnnpot data stats`` prints, as a JSON-serialisable dict (eV, Å).

    Args:
        data: labelled frames or graphs, possibly with isolated-atom frames.
        cutoff: neighbour radius for the mean neighbour count, Å; skipped when ``None``
            and ``data`` holds ``Atoms``.
        e0_method: see :func:`fit_e0`.

    Returns:
        Counts, elements, E0 (chosen, fitted and isolated), scales, neighbours and warnings.
    """
    frames = _frames(data)
    if not frames:
        raise ValueError("no frames")
    notes: list[str] = []
    found_warnings: list[str] = []
    elements = _elements(frames)
    symbols = {z: chemical_symbols[z] for z in elements}
    bulk = [f for f in frames if not f.isolated]
    sizes = np.array([len(f.numbers) for f in frames])
    atom_counts = Counter(int(z) for f in frames for z in f.numbers)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        isolated = isolated_atom_energies(data)
        fitted, rank = lstsq_e0(data, elements) if any(f.energy is not None for f in frames) else ({}, 0)
    found_warnings += [str(w.message) for w in caught]
    chosen = _e0_source(isolated, elements, e0_method) if fitted else None
    e0 = {z: isolated[z] for z in elements} if chosen == "isolated" else fitted
    if fitted and rank < len(elements):
        notes.append(
            f"composition matrix has rank {rank} < {len(elements)} elements: the fitted E0 is the "
            "minimum-norm solution around the mean energy per atom and is not unique"
        )
    binding = None
    if isolated and all(z in isolated for z in elements) and bulk:
        residuals = _per_atom_residuals(bulk, isolated)
        if len(residuals):
            binding = float(residuals.mean())
            if binding < -MAX_BINDING_EV_PER_ATOM or binding > MAX_UNBOUND_EV_PER_ATOM:
                found_warnings.append(
                    f"isolated-atom E0 and the data disagree strongly: mean energy relative to isolated "
                    f"atoms is {binding:.3f} eV/atom (expected between {-MAX_BINDING_EV_PER_ATOM} and "
                    f"{MAX_UNBOUND_EV_PER_ATOM}); check units and level of theory"
                )
    elif isolated:
        missing = [symbols[z] for z in elements if z not in isolated]
        notes.append(f"isolated atoms do not cover {missing}: E0 is fitted")

    result: dict[str, Any] = {
        "units": dict(keys.UNITS),
        "num_frames": len(frames),
        "num_isolated_atom_frames": len(frames) - len(bulk),
        "num_atoms": int(sizes.sum()),
        "atoms_per_frame": {"min": int(sizes.min()), "max": int(sizes.max()), "mean": float(sizes.mean())},
        "num_elements": len(elements),
        "elements": {symbols[z]: {"z": z, "num_atoms": atom_counts[z]} for z in elements},
        "num_labelled": {
            "energy": sum(f.energy is not None for f in frames),
            "forces": sum(f.forces is not None for f in frames),
            "stress": sum(f.stress is not None for f in frames),
        },
        "e0": {
            "method": chosen,
            "values": {symbols[z]: v for z, v in e0.items()},
            "lstsq": {symbols[z]: v for z, v in fitted.items()},
            "lstsq_rank": rank,
            "isolated": {symbols[z]: v for z, v in isolated.items()},
            "energy_vs_isolated_per_atom": binding,
        },
        "energy_per_atom_mean": None,
        "energy_per_atom_std": None,
        "forces_rms": None,
        "stress_rms": None,
        "cutoff": cutoff,
        "mean_num_neighbors": None,
        "notes": notes,
        "warnings": found_warnings,
    }
    energies = [(f.energy / len(f.numbers)) for f in bulk if f.energy is not None]
    if energies and e0:
        result["energy_per_atom_mean"] = float(np.mean(energies))
        result["energy_per_atom_std"] = per_atom_energy_std(data, e0)
    if any(f.forces is not None for f in bulk):
        result["forces_rms"] = force_rms(data)
    stresses = [f.stress for f in frames if f.stress is not None]
    if stresses:
        result["stress_rms"] = float(np.sqrt(np.mean(np.square(stresses))))
    if bulk and (cutoff is not None or all(f.num_edges is not None for f in bulk)):
        result["mean_num_neighbors"] = mean_num_neighbors(data, cutoff)
    config_types = Counter(
        f.atoms.info["config_type"] for f in frames if f.atoms is not None and "config_type" in f.atoms.info
    )
    if config_types:
        result["config_types"] = dict(sorted(config_types.items()))
    return result


def format_stats(stats: dict[str, Any]) -> str:
    """Human-readable text of :func:`dataset_stats`."""
    units = stats["units"]
    lines = [
        f"frames            {stats['num_frames']} ({stats['num_isolated_atom_frames']} isolated atoms)",
        f"atoms             {stats['num_atoms']} (per frame {stats['atoms_per_frame']['min']}-"
        f"{stats['atoms_per_frame']['max']}, mean {stats['atoms_per_frame']['mean']:.1f})",
        f"elements          {stats['num_elements']}: "
        + ", ".join(f"{s} ({v['num_atoms']} atoms)" for s, v in stats["elements"].items()),
        "labelled frames   " + ", ".join(f"{k} {v}" for k, v in stats["num_labelled"].items()),
    ]
    if "config_types" in stats:
        lines.append("config types      " + ", ".join(f"{k} {v}" for k, v in stats["config_types"].items()))
    e0 = stats["e0"]
    if e0["values"]:
        lines.append(f"E0 ({units['energy']}), method {e0['method']}, lstsq rank {e0['lstsq_rank']}:")
        lines.append(f"  {'element':8s} {'E0':>16s} {'lstsq':>16s} {'isolated':>16s}")
        for symbol, value in e0["values"].items():
            iso = e0["isolated"].get(symbol)
            iso_text = f"{iso:16.6f}" if iso is not None else f"{'-':>16s}"
            lines.append(f"  {symbol:8s} {value:16.6f} {e0['lstsq'][symbol]:16.6f} {iso_text}")
        if e0["energy_vs_isolated_per_atom"] is not None:
            lines.append(f"energy vs isolated atoms    {e0['energy_vs_isolated_per_atom']:.4f} {units['energy']}/atom")
    rows = [
        ("energy per atom, mean", stats["energy_per_atom_mean"], f"{units['energy']}/atom"),
        ("energy per atom - E0, std", stats["energy_per_atom_std"], f"{units['energy']}/atom"),
        ("forces RMS", stats["forces_rms"], units["forces"]),
        ("stress RMS", stats["stress_rms"], units["stress"]),
    ]
    for name, value, unit in rows:
        if value is not None:
            lines.append(f"{name:27s} {value:.6g} {unit}")
    if stats["mean_num_neighbors"] is not None:
        lines.append(f"mean neighbours within {stats['cutoff']} {units['length']}: {stats['mean_num_neighbors']:.3f}")
    lines += [f"note: {note}" for note in stats["notes"]]
    lines += [f"WARNING: {warning}" for warning in stats["warnings"]]
    return "\n".join(lines)


def data_sha256(data: Iterable[AtomicData] | DataSummary) -> str:
    """A fingerprint of a training set: sha256 over each graph's numbers, geometry and labels.

    Stored with trained models, so two models can be told apart by the data they saw. The float
    fields are hashed at float32 precision, so the same frames give the same hash whether they are
    stored in float32 (training) or float64.
    """
    summary = summarise(data)
    if summary.sha256 is None:
        raise ValueError("data_sha256 needs graphs (AtomicData)")
    return summary.sha256


def _hash_graph(digest: Any, graph: AtomicData) -> None:
    for key in (keys.ATOMIC_NUMBERS, keys.POSITIONS, keys.CELL, keys.PBC, *keys.LABEL_KEYS):
        value = graph.get(key)
        if value is None:
            continue
        array = value.detach().cpu().numpy()
        array = array.astype(np.float32) if array.dtype.kind == "f" else array.astype(np.int64)
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(array).tobytes())
