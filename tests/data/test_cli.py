"""``gnnpot data generate`` and ``gnnpot data stats``, and the dispatch in ``main``."""

import json

import pytest

from gnnpot.cli import main


@pytest.fixture(scope="module")
def emt_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "demo" / "emt.xyz"
    assert main(["data", "generate", "--out", str(path), "--num-frames", "8", "--seed", "2"]) == 0
    return path


def test_generate_prints_count_and_size(tmp_path, capsys):
    path = tmp_path / "emt.xyz"
    assert main(["data", "generate", "--out", str(path), "--num-frames", "4"]) == 0
    out = capsys.readouterr().out
    assert "wrote 4 frames" in out and "MiB" in out and str(path) in out


def test_stats_json(emt_file, capsys):
    assert main(["data", "stats", str(emt_file), "--json", "--cutoff", "4.0"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["num_frames"] == 8 and set(stats["elements"]) <= {"Cu", "Au"}
    assert stats["cutoff"] == 4.0 and stats["mean_num_neighbors"] > 5
    assert stats["num_labelled"] == {"energy": 8, "forces": 8, "stress": 6}
    assert stats["units"]["energy"] == "eV" and stats["source"] == str(emt_file)


def test_stats_text(emt_file, capsys):
    assert main(["data", "stats", str(emt_file), "--cutoff", "5.0"]) == 0
    out = capsys.readouterr().out
    assert "frames            8" in out and "mean neighbours within 5.0" in out and "forces RMS" in out


def test_stats_key_map(tmp_path, emt_file, capsys):
    text = emt_file.read_text().replace(" energy=", " REF_energy=")
    path = tmp_path / "ref.xyz"
    path.write_text(text)
    assert main(["data", "stats", str(path)]) == 1
    assert "no energy label" in capsys.readouterr().err
    assert main(["data", "stats", str(path), "--key-map", "energy=REF_energy", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["num_labelled"]["energy"] == 8
    assert main(["data", "stats", str(path), "--key-map", '{"energy": "REF_energy"}', "--index", ":3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["num_frames"] == 3


def test_stats_errors(tmp_path, capsys):
    (tmp_path / "empty.xyz").write_text("")
    assert main(["data", "stats", str(tmp_path / "empty.xyz")]) == 1
    assert "empty.xyz: empty file" in capsys.readouterr().err
    assert main(["data", "stats", str(tmp_path / "missing.xyz")]) == 1


def test_dispatch(capsys):
    assert main([]) == 0 and "data generate" in capsys.readouterr().out
    assert main(["fit"]) == 2 and "data.train_file" in capsys.readouterr().err  # LightningCLI: needs data
    assert main(["frobnicate"]) == 2 and "unknown command" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["data", "bogus"])
