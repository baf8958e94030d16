"""rMD17 download code, run on a local archive laid out like the real one."""

import hashlib
import tarfile

import numpy as np
import pytest

from gnnpot.data.download import download_rmd17


@pytest.fixture()
def fake_archive(tmp_path):
    root = tmp_path / "src" / "rmd17"
    (root / "npz_data").mkdir(parents=True)
    (root / "splits").mkdir()
    rng = np.random.default_rng(0)
    frames = 20
    np.savez(
        root / "npz_data" / "rmd17_ethanol.npz",
        nuclear_charges=np.array([6, 6, 8, 1, 1, 1, 1, 1, 1], dtype=np.uint8),
        coords=rng.normal(size=(frames, 9, 3)),
        energies=np.arange(frames, dtype=float),
        forces=rng.normal(size=(frames, 9, 3)),
    )
    np.savetxt(root / "splits" / "index_train_01.csv", np.arange(0, 10), fmt="%d")
    np.savetxt(root / "splits" / "index_test_01.csv", np.arange(10, 15), fmt="%d")
    archive = tmp_path / "rmd17.tar.bz2"
    with tarfile.open(archive, "w:bz2") as tar:
        tar.add(root, arcname="rmd17")
    return archive


def test_download_rmd17_writes_official_splits(tmp_path, fake_archive):
    digest = hashlib.sha256(fake_archive.read_bytes()).hexdigest()
    written = download_rmd17(tmp_path / "out", molecules=["ethanol"], url=fake_archive.as_uri(), sha256=digest)
    assert sorted(p.name for p in written) == ["rmd17_ethanol_test_01.npz", "rmd17_ethanol_train_01.npz"]
    with np.load(tmp_path / "out" / "rmd17_ethanol_test_01.npz") as test:
        assert test["energies"].tolist() == list(range(10, 15))
        assert test["coords"].shape == (5, 9, 3)
        assert test["nuclear_charges"].shape == (9,)


def test_download_rejects_wrong_checksum(tmp_path, fake_archive):
    with pytest.raises(OSError, match="does not match"):
        download_rmd17(tmp_path / "out", molecules=["ethanol"], url=fake_archive.as_uri(), sha256="0" * 64)


def test_download_names_missing_molecule(tmp_path, fake_archive):
    with pytest.raises(FileNotFoundError, match="rmd17_aspirin.npz"):
        download_rmd17(tmp_path / "out", molecules=["aspirin"], url=fake_archive.as_uri())


def test_cli_download_from_local_archive(tmp_path, fake_archive, capsys):
    from gnnpot.cli import main

    status = main(
        [
            "data",
            "download",
            "rmd17",
            "--out",
            str(tmp_path / "o"),
            "--molecules",
            "ethanol",
            "--url",
            fake_archive.as_uri(),
        ]
    )
    assert status == 0
    assert "rmd17_ethanol_train_01.npz" in capsys.readouterr().out
    assert main(["data", "download", "rmd17", "--out", str(tmp_path / "o"), "--url", "file:///nonexistent.tar"]) == 1
