"""AtomsDataModule: seeded, disjoint splits written to JSON; files, split files, loaders."""

import json

import lightning as L
import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from torch_geometric.data import Batch

from gnnpot import keys
from gnnpot.data import AtomsDataModule, DataError, read_frames, write_frames


def write_dataset(path, num_frames: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(num_frames):
        atoms = bulk("Cu", "fcc", a=3.6) * (2, 1, 1)
        atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
        atoms.calc = SinglePointCalculator(atoms, energy=float(k), forces=rng.normal(size=(2, 3)))
        frames.append(atoms)
    write_frames(path, frames)
    return str(path)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("data") / "frames.xyz", 20)


def frame_ids(graphs) -> list[int]:
    return sorted(int(g[keys.FRAME_ID]) for g in graphs)


def test_fraction_split_seeded_disjoint_and_written(tmp_path, data_file):
    dm = AtomsDataModule(data_file, val_fraction=0.2, test_fraction=0.1, seed=7, cutoff=3.0, run_dir=str(tmp_path))
    dm.setup("fit")
    train, val, test = frame_ids(dm.train_data), frame_ids(dm.val_data), frame_ids(dm.test_data)
    assert (len(train), len(val), len(test)) == (14, 4, 2)
    assert sorted(train + val + test) == list(range(20))

    record = json.loads((tmp_path / "split.json").read_text())
    assert record["seed"] == 7 and record["format"] == "gnnpot-split/1"
    assert record["train"] == {"file": data_file, "indices": train}
    assert record["val"]["indices"] == val and record["test"]["indices"] == test

    same = AtomsDataModule(data_file, val_fraction=0.2, test_fraction=0.1, seed=7, cutoff=3.0)
    same.setup("fit")
    assert frame_ids(same.val_data) == val
    other = AtomsDataModule(data_file, val_fraction=0.2, test_fraction=0.1, seed=8, cutoff=3.0)
    other.setup("fit")
    assert frame_ids(other.val_data) != val

    # Passing the written split back repeats it.
    again = AtomsDataModule(data_file, split_file=str(tmp_path / "split.json"), cutoff=3.0)
    again.setup("fit")
    assert (frame_ids(again.train_data), frame_ids(again.val_data), frame_ids(again.test_data)) == (train, val, test)


def test_separate_files(tmp_path, data_file):
    val_file = write_dataset(tmp_path / "val.xyz", 5, seed=1)
    dm = AtomsDataModule(data_file, val_file=val_file, val_fraction=0.5, test_fraction=0.25, cutoff=3.0)
    dm.setup("fit")
    assert frame_ids(dm.val_data) == [0, 1, 2, 3, 4]  # the whole val file; val_fraction does not apply
    assert len(dm.test_data) == 5 and len(dm.train_data) == 15
    assert not set(frame_ids(dm.test_data)) & set(frame_ids(dm.train_data))


def test_text_split_file(tmp_path, data_file):
    split = tmp_path / "split.txt"
    split.write_text("# frame indices of train_file\ntrain: 0 1 2 3 4 5\nval: 10 11  # two frames\n")
    dm = AtomsDataModule(data_file, split_file=str(split), cutoff=3.0)
    dm.setup("fit")
    assert frame_ids(dm.train_data) == [0, 1, 2, 3, 4, 5] and frame_ids(dm.val_data) == [10, 11]
    assert dm.test_data == [] and dm.test_dataloader() == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"train": [0, 1, 2], "val": [2, 3]}, "share frames"),
        ({"train": [0, 25]}, "frames \\[25\\]"),
        ({"train": {"file": "elsewhere.xyz", "indices": [0]}}, "indexes elsewhere.xyz"),
    ],
)
def test_bad_split_file(tmp_path, data_file, content, message):
    split = tmp_path / "split.json"
    split.write_text(json.dumps(content))
    dm = AtomsDataModule(data_file, split_file=str(split), cutoff=3.0)
    with pytest.raises(DataError, match=message):
        dm.setup("fit")


def test_loaders_and_cache(data_file):
    dm = AtomsDataModule(data_file, val_fraction=0.25, batch_size=4, val_batch_size=5, cutoff=3.0, seed=1)
    dm.setup("fit")
    graphs = dm.train_data
    dm.setup("test")
    assert dm.train_data is graphs  # built once
    batch = next(iter(dm.train_dataloader()))
    assert isinstance(batch, Batch) and batch.num_graphs == 4 and batch[keys.ENERGY].shape == (4,)
    assert next(iter(dm.val_dataloader())).num_graphs == 5
    assert dm.elements == [29]
    first = [frame_ids(b.to_data_list()) for b in dm.train_dataloader()]
    assert first == [frame_ids(b.to_data_list()) for b in dm.train_dataloader()]  # seeded shuffle


def test_split_written_to_trainer_log_dir(tmp_path, data_file):
    dm = AtomsDataModule(data_file, cutoff=3.0)
    dm.trainer = L.Trainer(default_root_dir=str(tmp_path), logger=False, enable_progress_bar=False)
    dm.setup("fit")
    assert json.loads((tmp_path / "split.json").read_text())["val"]["indices"] == frame_ids(dm.val_data)


@pytest.mark.parametrize(
    "kwargs", [{"val_fraction": 1.0}, {"val_fraction": 0.6, "test_fraction": 0.5}, {"cutoff": 0.0}]
)
def test_bad_arguments(data_file, kwargs):
    with pytest.raises(ValueError):
        AtomsDataModule(data_file, **kwargs)


def test_hyperparameters_are_plain(data_file):
    dm = AtomsDataModule(data_file, key_map={"energy": "energy"}, cutoff=4.0)
    assert dm.hparams["cutoff"] == 4.0 and dm.hparams["key_map"] == {"energy": "energy"}
    json.dumps(dict(dm.hparams))


def test_graphs_keep_every_digit_of_positions_and_labels(tmp_path):
    """float64 from reader to loss: a total energy of -4215.123456789 eV is not rounded to float32."""
    atoms = bulk("Cu", "fcc", a=3.6) * (2, 1, 1)
    atoms.positions[1] += [0.123456789012, 0.0, 1e-9]
    forces = np.array([[0.1234567890123, 0.0, 0.0], [-0.1234567890123, 0.0, 0.0]])
    atoms.calc = SinglePointCalculator(atoms, energy=-4215.123456789, forces=forces)
    path = tmp_path / "precise.xyz"
    write_frames(path, [atoms] * 4)
    dm = AtomsDataModule(str(path), val_fraction=0.25, cutoff=3.0, run_dir=str(tmp_path))
    dm.setup("fit")
    graph = dm.train_data[0]
    assert graph[keys.POSITIONS].dtype == graph[keys.ENERGY].dtype == graph[keys.FORCES].dtype == torch.float64
    assert float(graph[keys.ENERGY][0]) == -4215.123456789
    read_back = read_frames(path)[0]  # extxyz keeps 8 decimals of positions and forces
    assert np.array_equal(graph[keys.POSITIONS].numpy(), read_back.positions)
    assert np.array_equal(graph[keys.FORCES].numpy(), read_back.get_forces())
    assert not np.array_equal(read_back.positions.astype(np.float32), read_back.positions)
    batch = next(iter(dm.train_dataloader()))
    assert batch[keys.ENERGY].dtype == torch.float64 and float(batch[keys.ENERGY][0]) == -4215.123456789


def test_training_order_depends_on_seed_and_epoch_only():
    from gnnpot.data.datamodule import EpochShuffle

    sampler = EpochShuffle(50, seed=7)
    orders = []
    for epoch in (0, 1, 0):
        sampler.set_epoch(epoch)
        orders.append(list(sampler))
    assert sorted(orders[0]) == list(range(50)) and len(sampler) == 50
    assert orders[0] == orders[2] and orders[0] != orders[1]
    assert list(EpochShuffle(50, seed=8)) != orders[0]
