"""The on-disk frame store: exact round trip, streaming conversion, lazy training data equal to in-memory data."""

import numpy as np
import pytest
import torch

from gnnpot.cli import main
from gnnpot.data import AtomsDataModule, DataError, frame_labels, read_frames, write_frames
from gnnpot.data.generate import generate_emt_dataset
from gnnpot.data.io import stream_frames
from gnnpot.data.stats import fit_e0, force_rms, mean_num_neighbors, summarise
from gnnpot.data.store import FrameStore, write_store


@pytest.fixture(scope="module")
def frames():
    return generate_emt_dataset(24, seed=5, frames_per_trajectory=6)  # bulk, vacancy, strained, slab


@pytest.fixture(scope="module")
def xyz(frames, tmp_path_factory):
    path = tmp_path_factory.mktemp("store") / "emt.xyz"
    write_frames(path, frames)
    return path


def test_round_trip_keeps_every_digit_and_label(frames, tmp_path):
    frames[0].info["tag"] = np.int64(7)
    store_path = tmp_path / "emt.lmdb"
    assert write_store(frames, store_path) == len(frames)
    store = FrameStore(store_path)
    assert len(store) == len(frames) and store[-1].get_chemical_formula() == frames[-1].get_chemical_formula()
    for original, stored in zip(frames, store, strict=True):
        assert np.array_equal(stored.numbers, original.numbers)
        assert np.array_equal(stored.positions, original.positions)  # float64, bitwise
        assert np.array_equal(stored.cell.array, original.cell.array) and list(stored.pbc) == list(original.pbc)
        want, got = frame_labels(original), frame_labels(stored)
        assert want.keys() == got.keys()
        for key in want:
            assert np.array_equal(np.asarray(got[key]), np.asarray(want[key])), key  # bitwise
    assert store[0].info["tag"] == 7 and store[0].info["config_type"] == frames[0].info["config_type"]


def test_convert_streams_and_checks_each_frame(xyz, tmp_path, capsys):
    out = tmp_path / "emt.lmdb"
    assert main(["data", "convert", str(xyz), str(out)]) == 0
    assert "wrote 24 frames" in capsys.readouterr().out
    for a, b in zip(read_frames(xyz), read_frames(out), strict=True):
        assert np.array_equal(a.positions, b.positions) and a.get_potential_energy() == b.get_potential_energy()
    broken = tmp_path / "broken.xyz"
    text = xyz.read_text().splitlines(keepends=True)
    count = int(text[0])
    second = count + 2  # first line of frame 1
    fields = text[second + 2].split()
    fields[1] = "nan"
    text[second + 2] = " ".join(fields) + "\n"
    broken.write_text("".join(text))
    with pytest.raises(DataError, match=r"broken.xyz, frame 1: .*(NaN|nan|finite)"):
        write_store(stream_frames(broken), tmp_path / "broken.lmdb")
    assert not (tmp_path / "broken.lmdb").exists()  # no half-written store that looks whole


def test_not_a_store_is_named(tmp_path):
    junk = tmp_path / "junk.lmdb"
    junk.write_bytes(b"not lmdb at all" * 100)
    with pytest.raises(DataError, match="junk.lmdb"):
        FrameStore(junk)


@pytest.mark.parametrize("workers", [0, 2])
def test_lazy_training_data_equals_in_memory_data(xyz, tmp_path, workers):
    store = tmp_path / "emt.lmdb"
    write_store(stream_frames(xyz), store)
    options = dict(val_fraction=0.25, cutoff=4.0, batch_size=5, seed=1)
    memory, lazy = AtomsDataModule(str(xyz), **options), AtomsDataModule(str(store), num_workers=workers, **options)
    memory.setup("fit")
    lazy.setup("fit")
    assert memory.split == lazy.split and not isinstance(lazy.train_data, list)
    for a, b in zip(memory.train_dataloader(), lazy.train_dataloader(), strict=True):
        for key in ("pos", "edge_index", "energy", "forces", "cell"):
            assert torch.equal(a[key], b[key]), key
    # One streaming pass gives the same statistics as the in-memory functions.
    summary = summarise(lazy.train_data)
    assert fit_e0(summary, [29, 79]) == pytest.approx(fit_e0(memory.train_data, [29, 79]), abs=1e-9)
    assert force_rms(summary) == pytest.approx(force_rms(memory.train_data), rel=1e-12)
    assert mean_num_neighbors(summary) == pytest.approx(mean_num_neighbors(memory.train_data), rel=1e-12)
    assert summary.sha256 == summarise(memory.train_data).sha256
