"""Structures to graphs: data model, neighbour list, readers, statistics and the datamodule."""

from gnnpot.data.atomic_data import AtomicData, DataError
from gnnpot.data.neighbors import neighbor_list, neighbor_list_arrays

__all__ = ["AtomicData", "DataError", "neighbor_list", "neighbor_list_arrays"]
