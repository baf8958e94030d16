"""Structures to graphs: data model, neighbour list, readers, statistics and the datamodule."""

from typing import Any

from gnnpot.data.atomic_data import AtomicData
from gnnpot.data.checks import DataError
from gnnpot.data.io import Frames, build_graphs, check_atoms, frame_labels, read_frames, read_index_file, write_frames
from gnnpot.data.neighbors import SkinNeighborList, neighbor_list, neighbor_list_arrays
from gnnpot.data.stats import (
    dataset_stats,
    fit_e0,
    force_rms,
    isolated_atom_energies,
    lstsq_e0,
    mean_num_neighbors,
    per_atom_energy_std,
)

__all__ = [
    "AtomicData",
    "AtomsDataModule",
    "DataError",
    "Frames",
    "SkinNeighborList",
    "build_graphs",
    "check_atoms",
    "dataset_stats",
    "fit_e0",
    "force_rms",
    "frame_labels",
    "isolated_atom_energies",
    "lstsq_e0",
    "mean_num_neighbors",
    "neighbor_list",
    "neighbor_list_arrays",
    "per_atom_energy_std",
    "read_frames",
    "read_index_file",
    "write_frames",
]


def __getattr__(name: str) -> Any:
    # The datamodule imports Lightning (about a second); load it only when asked for, so that
    # inference (the ASE calculator) does not pay for it.
    if name == "AtomsDataModule":
        from gnnpot.data.datamodule import AtomsDataModule

        return AtomsDataModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
