"""benchmarks/: JSON lines, every workload of every family at a tiny size, the runner and the tables.

Tiny models, one thread and a few milliseconds per timed repeat; nothing here asserts on speed.
"""

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from ase.build import molecule

from benchmarks import peers, runner, sizes, workloads
from benchmarks.records import meta_path, run_variant
from gnnpot import REGISTRY
from gnnpot.testing import tiny_hparams

REPO = Path(__file__).resolve().parents[2]
FIELDS = (
    "peer",
    "peer_version",
    "model",
    "size",
    "n_params",
    "workload",
    "value",
    "unit",
    "repeats",
    "notes",
    "peak_rss_mb",
    "hparams",
    "threads",
    "torch_version",
)
FAST = ["--target-s", "0.002", "--repeats", "3", "--warmup", "1", "--threads", "1"]
SETTINGS = workloads.Settings(target_s=0.002, repeats=3, warmup=1)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def rmd17_dir(tmp_path_factory):
    """A stand-in for rMD17 aspirin: acetic acid (H, C, O), 40 rattled frames, random labels in kcal/mol."""
    base = molecule("CH3COOH")
    rng = np.random.default_rng(0)
    coords = np.stack([base.positions + rng.normal(scale=0.02, size=base.positions.shape) for _ in range(40)])
    path = tmp_path_factory.mktemp("rmd17")
    np.savez(
        path / "rmd17_aspirin_train_01.npz",
        nuclear_charges=base.numbers,
        coords=coords,
        energies=rng.normal(-1e5, 1.0, size=40),
        forces=rng.normal(size=coords.shape),
    )
    return path


def check_line(record):
    line = json.dumps(record)
    assert "\n" not in line
    assert json.loads(line) == record
    missing = [name for name in FIELDS if name not in record]
    assert not missing, missing
    assert record["peer"] == "gnnpot"
    assert not str(record["notes"]).startswith("FAILED"), record["notes"]


def paper_config_of(family):
    config = REPO / "configs" / f"{family}_rmd17.yaml"
    if not config.is_file():
        pytest.skip(f"{config} not found")
    return config


@pytest.mark.parametrize("family", sorted(REGISTRY))
def test_paper_sizes_are_the_rmd17_configs(family):
    config = paper_config_of(family)
    data = yaml.safe_load(config.read_text())
    published = [v for v in sizes.variants(family).values() if v.size == "paper" and v.cutoff == data["data"]["cutoff"]]
    assert len(published) == 1
    assert published[0].hparams == data["model"]["representation_hparams"]


@pytest.mark.parametrize("family", sorted(REGISTRY))
def test_small_is_the_protocol_size(family):
    paper_config_of(family)
    small = sizes.variants(family)["small"]
    assert (small.cutoff, small.hparams["num_features"], small.hparams["num_interactions"]) == (5.0, 64, 3)
    assert small.hparams.get("l_max", 1) == 1
    assert [v.name for v in sizes.select_variants(family, ["paper"])] == (
        ["paper_r4", "paper_r5"] if family == "nequip" else ["paper"]
    )


@pytest.mark.parametrize("family", sorted(REGISTRY))
def test_tiny_is_the_family_tiny_hparams(family):
    tiny = sizes.variants(family)["tiny"]
    assert tiny.hparams == tiny_hparams(family) == dict(REGISTRY[family].tiny_hparams)
    assert (tiny.size, tiny.cutoff) == ("tiny", 5.0)


@pytest.fixture
def configs(monkeypatch, tmp_path):
    """Point the benchmark at an empty configs folder (``tmp_path/configs``, not made yet)."""
    monkeypatch.setattr(sizes, "CONFIGS", tmp_path / "configs")
    sizes.paper_config.cache_clear()
    yield tmp_path / "configs"
    sizes.paper_config.cache_clear()


def test_a_family_without_a_paper_config_has_only_tiny(configs):
    configs.mkdir()
    assert list(sizes.variants("schnet")) == ["tiny"]
    assert [v.name for v in sizes.select_variants("schnet", ["paper", "small", "tiny"])] == ["tiny"]
    with pytest.raises(ValueError, match="unknown size 'paper_r4'"):
        sizes.select_variants("schnet", ["paper_r4"])
    args = runner.parse(runner.build_parser(), ["--models", "schnet", "--sizes", "paper,small,tiny", "--scaling"])
    assert [job.label for job in runner.plan(args)] == ["gnnpot schnet/tiny"]  # no "small" to scale


def test_missing_configs_stop_with_a_clear_message(configs, capsys):
    with pytest.raises(FileNotFoundError, match="no configs folder"):
        sizes.variants("painn")
    with pytest.raises(SystemExit):
        runner.main(["--dry-run"])
    assert "no configs folder" in capsys.readouterr().err


def test_a_family_without_peers_has_no_peer_runs(monkeypatch, tmp_path):
    monkeypatch.delitem(peers.PEER_MATCH, "painn")
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    (tmp_path / "venv" / "bin" / "python").symlink_to(sys.executable)
    argv = ["--models", "painn,schnet", "--sizes", "small", "--peers", "schnetpack"]
    args = runner.parse(runner.build_parser(), [*argv, "--peer-venv", f"schnetpack={tmp_path / 'venv'}"])
    assert [job.label for job in runner.plan(args)] == [
        "gnnpot painn/small",
        "gnnpot schnet/small",
        "schnetpack schnet/small",
    ]
    assert peers.match_key(fake("schnetpack", "painn", "small", "W1", 1.0)) is None


def test_the_package_does_not_import_the_benchmark():
    pattern = re.compile(r"^\s*(from|import)\s+benchmarks\b", re.MULTILINE)
    importing = [str(p) for p in (REPO / "gnnpot").rglob("*.py") if pattern.search(p.read_text())]
    assert not importing, importing


def test_timeit_takes_the_median_of_the_repeats():
    timing = workloads.timeit(lambda: None, 2, SETTINGS)
    assert len(timing.rates) == 3 and timing.value == sorted(timing.rates)[1]
    slow = workloads.timeit(lambda: torch.ones(1), 1, workloads.Settings(target_s=1e-9, repeats=5, warmup=2))
    assert len(slow.rates) == 3 and slow.calls_per_repeat == 1  # one call longer than the target: 3 repeats
    with pytest.raises(ValueError, match=">= 3"):
        workloads.Settings(repeats=2)


@pytest.mark.parametrize("family", sorted(REGISTRY))
def test_every_workload_runs(family, rmd17_dir):
    molecules = workloads.rmd17_frames(rmd17_dir)
    records = list(run_variant(sizes.variants(family)["tiny"], list(workloads.WORKLOADS), SETTINGS, molecules))
    assert [r["workload"] for r in records] == list(workloads.WORKLOADS.values())
    for record, unit in zip(records, workloads.UNITS.values()):
        check_line(record)
        assert (record["model"], record["variant"], record["size"], record["unit"]) == (family, "tiny", "tiny", unit)
        assert record["value"] > 0 and record["repeats"] == 3 and record["n_params"] > 0
        assert record["extra_rates"]["with_graph_build"] > 0 if record["workload"] != "W4_md_cu108" else True
    w4 = records[-1]
    assert w4["num_atoms"] == 108 and w4["skin"] == 0.5 and w4["value_skin0"] > 0
    assert w4["neighbor_list_builds"] == 1 and w4["neighbor_list_builds_skin0"] > 3
    assert records[1]["extra_rates"]["calculator_skin0"] > 0
    if family == "nequip":
        assert all(r["hparams"]["avg_num_neighbors"] > 0 for r in records)
    if family == "dimenet":
        assert all(r["extra_rates"]["triplets_in_forward"] > 0 for r in records[:3])


def test_main_writes_json_lines_and_the_run_beside_them(tmp_path, rmd17_dir):
    out = tmp_path / "gnnpot.jsonl"
    argv = ["--models", "painn", "--sizes", "tiny", "--workloads", "W2,W3", "--in-process"]
    assert runner.main([*argv, "--rmd17-dir", str(rmd17_dir), "--out", str(out), *FAST]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["workload"] for r in records] == ["W2_infer_single", "W3_infer_batch"]
    for record in records:
        check_line(record)
        assert record["threads"] == 1
    meta = json.loads(meta_path(out).read_text())
    assert "--models painn" in meta["command"] and meta["machine"]["torch"] == torch.__version__


def test_scaling_reports_microseconds_per_atom_smallest_first(tmp_path):
    out = tmp_path / "scaling.jsonl"
    argv = ["--models", "schnet", "--workloads", "none", "--scaling", "--scaling-size", "tiny"]
    assert runner.main([*argv, "--scaling-repeats", "2,1", "--in-process", "--out", str(out), *FAST]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["num_atoms"] for r in records] == [4, 32]
    for record in records:
        check_line(record)
        assert record["workload"] == workloads.SCALING and record["unit"] == "us/atom/step"
        assert record["value"] > 0 and record["value_skin0"] > 0 and record["steps_per_s"] > 0


def test_scaling_skips_sizes_predicted_too_slow(tmp_path):
    out, page = tmp_path / "scaling.jsonl", tmp_path / "scaling.md"
    argv = ["--models", "painn", "--workloads", "none", "--scaling", "--scaling-size", "tiny", "--in-process"]
    argv += ["--scaling-repeats", "1,2", "--scaling-max-step-s", "1e-9", "--out", str(out), "--markdown", str(page)]
    assert runner.main([*argv, *FAST]) == 0
    first, second = [json.loads(line) for line in out.read_text().splitlines()]
    assert first["value"] > 0
    assert second["value"] is None and second["notes"].startswith("SKIPPED") and second["num_atoms"] == 32
    assert "| painn | 32 | – | skipped |" in page.read_text()


FAKE_PEER = """import json, sys
args = sys.argv[1:]
get = lambda flag: args[args.index(flag) + 1] if flag in args else None
print("a stray line on stdout")
print(json.dumps({"peer": sys.argv[0].split("/")[-2], "model": get("--models"), "size": get("--sizes"),
                  "workload": "W2", "value": 1.0, "unit": "calls/s", "argv": args}))
"""


def test_runner_alternates_gnnpot_with_its_matched_peers(tmp_path, rmd17_dir, capsys):
    peers = tmp_path / "peers"
    for peer in ("schnetpack", "pyg", "mace"):
        (peers / peer).mkdir(parents=True)
        (peers / peer / "bench.py").write_text(FAKE_PEER)
    venv = tmp_path / "venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").symlink_to(sys.executable)
    out = tmp_path / "all.jsonl"
    argv = ["--models", "schnet,painn", "--sizes", "small", "--workloads", "W2", "--in-process", *FAST]
    argv += ["--peers", "schnetpack,pyg,mace", "--peers-dir", str(peers), "--rmd17-dir", str(rmd17_dir)]
    argv += ["--peer-venv", f"schnetpack={tmp_path / 'venv'}", "--peer-venv", f"pyg={tmp_path / 'venv'}"]
    argv += ["--peer-venv", f"mace={tmp_path / 'missing'}", "--out", str(out), "--markdown", str(tmp_path / "b.md")]
    assert runner.main(argv) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    order = [(r["peer"], r["model"]) for r in records]
    assert order == [
        ("gnnpot", "schnet"),
        ("schnetpack", "schnet"),
        ("pyg", "schnet"),
        ("gnnpot", "painn"),
        ("schnetpack", "painn"),
    ]
    assert records[1]["argv"][:4] == ["--models", "schnet", "--sizes", "small"]
    assert "--target-s" in records[1]["argv"] and "W2" in records[1]["argv"]
    err = capsys.readouterr().err
    assert "skipping peer mace" in err and "not a JSON line" in err
    assert (tmp_path / "b.md").is_file()


def test_peer_commands_use_each_harness_flags():
    args = runner.build_parser().parse_args(["--rmd17-dir", "/data"])
    args.workloads = ["W1", "W4"]
    spk = peers.peer_command("schnetpack", "py", Path("/p"), "painn", "small", args)
    assert spk[:2] == ["py", "/p/schnetpack/bench.py"] and spk[2:8] == ["--models", "painn", "--sizes", "small",
                                                                          "--workloads", "W1,W4"]  # fmt: skip
    nequip = peers.peer_command("nequip", "py", Path("/p"), None, "paper_r4", args)
    assert "--models" not in nequip and "--target-seconds" in nequip and nequip[2:4] == ["--sizes", "paper_r4"]
    assert nequip[-2:] == ["--rmd17-dir", "/data"]


def fake(peer, model, size, workload, value, **extra):
    return {"peer": peer, "model": model, "size": size, "workload": workload, "value": value, **extra}


def test_markdown_tables_from_saved_lines(tmp_path):
    gnnpot_lines = [
        fake("gnnpot", "schnet", "small", "W2_infer_single", 200.0, variant="small", peak_rss_mb=400.0, n_params=100),
        fake("gnnpot", "schnet", "small", "W4_md_cu108", 30.0, variant="small", value_skin0=10.0, peak_rss_mb=410.0),
        fake("gnnpot", "schnet", "small", "W1_train_step", None, variant="small", notes="FAILED: boom"),
        fake("gnnpot", "nequip", "paper", "W2_infer_single", 20.0, variant="paper_r4", peak_rss_mb=500.0),
        fake("gnnpot", "nequip", "small", "W2_infer_single", 80.0, variant="small", peak_rss_mb=500.0),
        fake("gnnpot", "mace", "small", "W2_infer_single", 60.0, variant="small", peak_rss_mb=500.0),
        fake("gnnpot", "schnet", "small", workloads.SCALING, 2.5, variant="small", num_atoms=10976, num_edges=460992,
             steps_per_s=36.4, value_skin0=3.0, steps_per_s_skin0=30.4, peak_rss_mb=900.0),
    ]  # fmt: skip
    peer_lines = [
        fake("schnetpack", "schnet", "small", "W2", 100.0, peak_rss_mb=800.0, n_params=200),
        fake("schnetpack", "schnet", "small", "W4", 20.0, peak_rss_mb=800.0),
        fake("torch-geometric", "schnet", "small", "W2", 50.0, peak_rss_mb=700.0),
        fake("nequip", "NequIPGNNModel[paper_r4]", "paper", "W2_infer_single", 10.0, peak_rss_mb=600.0),
        fake("nequip", "NequIPGNNModel[paper_r4]", "paper", "peak_rss", 1000.0, peak_rss_mb=1000.0),
        fake("mace", "ScaleShiftMACE[small]", "small", "W2_infer_single", 40.0, peak_rss_mb=600.0),
        fake("mace", "ScaleShiftMACE[paper]", "paper", "W2_infer_single", 5.0, peak_rss_mb=600.0),
    ]
    a, b, page = tmp_path / "gnnpot.jsonl", tmp_path / "peers.jsonl", tmp_path / "docs" / "bench.md"
    a.write_text("".join(json.dumps(r) + "\n" for r in gnnpot_lines))
    b.write_text("".join(json.dumps(r) + "\n" for r in peer_lines) + "not json\n")
    meta_path(a).write_text(json.dumps({"command": "python -m benchmarks --sizes small", "machine": {}}))
    assert runner.main(["--from-jsonl", str(a), str(b), "--markdown", str(page)]) == 0
    text = page.read_text()
    rows = {tuple(c.strip() for c in line.strip("|").split("|")) for line in text.splitlines() if line.startswith("|")}
    # columns: model, workload, unit, gnnpot, then value and gnnpot/peer for each peer of the size
    assert ("schnet", "W2", "calls/s", "200", "100", "2.00", "50.0", "4.00", "–", "–") in rows
    assert ("schnet", "W4", "calls/s", "30.0", "20.0", "1.50", "–", "–", "–", "–") in rows
    assert ("schnet", "W4, skin 0", "calls/s", "10.0", "20.0", "0.50", "–", "–", "–", "–") in rows
    assert ("schnet", "W1", "structures/s", "FAILED", "–", "–", "–", "–", "–", "–") in rows
    assert ("schnet", "peak RSS", "MB", "410", "800", "0.51", "700", "0.59", "–", "–") in rows
    assert ("schnet", "parameters", "", "100", "200", "0.50", "–", "–", "–", "–") in rows
    assert ("nequip", "W2", "calls/s", "80.0", "–", "–", "–", "–", "–", "–") in rows
    assert ("mace", "W2", "calls/s", "60.0", "–", "–", "–", "–", "40.0", "1.50") in rows  # the mace family vs MACE
    assert ("nequip (paper_r4)", "W2", "calls/s", "20.0", "10.0", "2.00") in rows
    assert ("nequip (paper_r4)", "peak RSS", "MB", "500", "1,000", "0.50") in rows
    assert ("schnet", "10,976", "460,992", "36.4", "2.50", "30.4", "3.00", "900") in rows
    assert text.index('## Size "small"') < text.index('## Size "paper"')
    assert "python -m benchmarks --sizes small" in text and "FAILED: boom" in text
    assert "mace ScaleShiftMACE[paper]/paper W2_infer_single" in text  # MACE's paper model has no gnnpot match


def test_match_key_maps_peer_models_to_families():
    assert peers.match_key(fake("torch-geometric", "dimenetpp", "paper", "W1", 1.0)) == ("dimenet", "paper")
    assert peers.match_key(fake("nequip", "NequIPGNNModel[small]", "small", "W1", 1.0)) == ("nequip", "small")
    assert peers.match_key(fake("gnnpot", "nequip", "paper", "W1", 1.0, variant="paper_r5")) == ("nequip", "paper_r5")
    assert peers.match_key(fake("mace", "ScaleShiftMACE[paper]", "paper", "W1", 1.0)) is None


@pytest.mark.parametrize(
    "argv",
    [["--repeats", "2"], ["--sizes", "huge"], ["--workloads", "W9"], ["--peers", "other"], ["--from-jsonl", "a"]],
)
def test_bad_arguments_stop_with_a_message(argv, capsys):
    with pytest.raises(SystemExit):
        runner.main(argv)
    assert "error" in capsys.readouterr().err


def test_fcc_cu_is_ase_bulk_rattled():
    from ase.build import bulk

    atoms = workloads.fcc_cu(2)
    expected = bulk("Cu", "fcc", a=workloads.CU_LATTICE, cubic=True).repeat((2, 2, 2))
    expected.rattle(stdev=0.05, seed=1)
    assert (atoms.numbers == expected.numbers).all() and atoms.pbc.all()
    np.testing.assert_allclose(atoms.cell.array, expected.cell.array)
    np.testing.assert_allclose(atoms.positions, expected.positions, atol=1e-12)


def test_the_device_reaches_the_child_and_the_settings():
    """``--device cuda`` (a GPU run) goes to each gnnpot child; on the CPU, sync is a no-op."""
    args = runner.parse(runner.build_parser(), ["--models", "schnet", "--sizes", "small", "--device", "cuda"])
    (job,) = runner.plan(args)
    assert job.command[job.command.index("--device") + 1] == "cuda"
    settings = workloads.Settings(device="cpu")
    settings.sync()
    assert settings.extra().device == "cpu"


def test_threads_page_keeps_the_table_not_rerun():
    from benchmarks.threads import split_sections

    page = "# Threads\n\nMachine.\n\n## `gnnpot md --threads`\n\n| a |\n\n## `gnnpot fit --threads`\n\n| b |\n"
    sections = split_sections(page)
    assert sections["md"] == "## `gnnpot md --threads`\n\n| a |\n\n"
    assert sections["fit"] == "## `gnnpot fit --threads`\n\n| b |\n"
    assert split_sections("# Threads\n") == {}
