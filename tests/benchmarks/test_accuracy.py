"""benchmarks/accuracy: bookkeeping, errors, the page, the watcher, the peers' commands and one real smoke run.

Nothing here trains for more than a few seconds; the smoke run trains a tiny SchNet on 20 frames.
"""

import json
import os
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from benchmarks.accuracy import peers, runner
from benchmarks.accuracy.data import Predictions, errors, rmd17_file
from benchmarks.accuracy.report import best_rows, ratios, render_markdown, row_key
from benchmarks.accuracy.watch import copy_newest, is_complete, watch
from gnnpot.representations import get_family

REPO = Path(__file__).resolve().parents[2]
RMD17 = Path(os.environ.get("GNNPOT_SHARED_DATA", REPO.parent / "shared" / "data")) / "rmd17"


MACHINE = {"cpu": "AMD EPYC", "logical_cores": 2, "usable_cores": 2, "torch": "2.13.0", "gnnpot": "0.1.0", "git": "abc"}


def row(model, molecule, minutes, force, energy=1.0, peer="gnnpot", test=1000, train=1000, **extra):
    """A finished row as the runner writes it (the fields the page reads)."""
    return {
        "model": model,
        "label": f"gnnpot {model}" if peer == "gnnpot" else model.upper(),
        "peer": peer,
        "molecule": molecule,
        "mark_s": 60.0 * minutes,
        "mark_min": minutes,
        "written_s": 60.0 * minutes - 5,
        "budget_s": 1200.0,
        "test_frames": test,
        "train_frames": train,
        "num_train": 950,
        "num_val": 50,
        "force_mae": force,
        "energy_mae": energy,
        "energy_mae_per_atom": energy / 9,
        "n_params": 1000,
        "threads": 2,
        "load_before": [0.1, 0.1, 0.1],
        "load_after": [1.9, 1.5, 1.0],
        "machine": MACHINE,
        "settings": {"source": "configs/x"},
        "command": "gnnpot fit ...",
        **extra,
    }


# ------------------------------------------------------------------------------------------ bookkeeping


def test_marks_stretch_to_the_budget():
    assert runner.scaled_marks([5, 10, 20], 20) == [5, 10, 20]
    assert runner.scaled_marks([5, 10, 20], 10) == [2.5, 5, 10]
    assert runner.scaled_marks([0.25, 0.5], 0.5) == [0.25, 0.5]
    with pytest.raises(ValueError, match="positive"):
        runner.scaled_marks([0, 5], 5)


def test_plan_runs_only_what_is_missing():
    frames = {"ethanol": (1000, 1000), "aspirin": (1000, 1000)}
    marks = [300.0, 600.0, 1200.0]
    rows = [
        row("schnet", "ethanol", 5, 10.0),
        row("schnet", "ethanol", 10, 9.0),
        row("schnet", "ethanol", 20, 8.0),
        row("painn", "ethanol", 5, 7.0),
        row("painn", "ethanol", 20, None, error="evaluation failed"),  # failed: measured again
        row("schnet", "aspirin", 5, 7.0, test=5),  # other test frames: another measurement
    ]
    jobs = runner.plan(["schnet", "painn"], ["ethanol", "aspirin"], marks, frames, rows)
    assert [(j.model, j.molecule, j.marks_s) for j in jobs] == [
        ("painn", "ethanol", (600.0, 1200.0)),
        ("schnet", "aspirin", (300.0, 600.0, 1200.0)),
        ("painn", "aspirin", (300.0, 600.0, 1200.0)),
    ]
    assert jobs[0].budget_s == 1200.0
    # only early marks missing: the run stops at the last of them
    early = runner.plan(["schnet"], ["ethanol"], [150.0, *marks], frames, rows)
    assert [(j.marks_s, j.budget_s) for j in early] == [((150.0,), 150.0)]
    assert runner.plan(["schnet"], ["ethanol"], marks, frames, rows) == []


def test_rows_file_round_trip(tmp_path):
    out = tmp_path / "docs" / "accuracy.jsonl"
    assert runner.read_rows(out) == []
    rows = runner.Rows(out)
    rows.write(row("schnet", "ethanol", 5, 10.0))
    rows.write(row("schnet", "ethanol", 10, 9.0))
    with open(out, "a") as stream:
        stream.write("not json\n")
    assert [r["mark_min"] for r in runner.read_rows(out)] == [5, 10]


# ------------------------------------------------------------------------------------------ errors


def test_errors_are_mean_absolute_errors_in_mev():
    reference = Predictions(np.array([-10.0, -20.0]), np.zeros((5, 3)), np.array([2, 3]))
    forces = np.zeros((5, 3))
    forces[0, 0], forces[4, 2] = 0.003, -0.006  # eV/Å
    predicted = Predictions(np.array([-10.002, -19.997]), forces, np.array([2, 3]))
    result = errors(predicted, reference)
    assert result["force_mae"] == pytest.approx(1000 * 0.009 / 15)
    assert result["energy_mae"] == pytest.approx(2.5)
    assert result["energy_mae_per_atom"] == pytest.approx((2.0 / 2 + 3.0 / 3) / 2)
    with pytest.raises(ValueError, match="frames"):
        errors(Predictions(np.zeros(1), np.zeros((2, 3)), np.array([2])), reference)


def test_predictions_file_round_trip(tmp_path):
    original = Predictions(np.array([1.5, 2.5]), np.arange(12.0).reshape(4, 3), np.array([1, 3]))
    original.save(tmp_path / "p.npz")
    loaded = Predictions.load(tmp_path / "p.npz")
    assert errors(loaded, original) == {"force_mae": 0.0, "energy_mae": 0.0, "energy_mae_per_atom": 0.0}


# ------------------------------------------------------------------------------------------ the page


def hand_rows():
    return [
        row("schnet", "ethanol", 5, 20.0, 5.0),
        row("schnet", "ethanol", 20, 10.0, 3.0),
        row("nequip", "ethanol", 5, 12.0, 4.0),
        row("nequip", "ethanol", 20, 6.0, 2.0),
        row("peer-mace", "ethanol", 5, 16.0, 6.0, peer="mace"),
        row("peer-mace", "ethanol", 20, 8.0, 2.5, peer="mace"),
        row("peer-nequip", "ethanol", 5, 30.0, 9.0, peer="nequip"),
        row("peer-nequip", "ethanol", 20, 5.0, 1.0, peer="nequip"),
        row("peer-nequip", "ethanol", 20, 99.0, 99.0, peer="nequip", test=5),  # fewer test frames: not shown
        row("schnet", "aspirin", 5, None, error="no complete checkpoint"),
    ]


def test_ratio_is_best_family_over_best_peer():
    found = {(r["molecule"], r["mark_min"]): r for r in ratios(hand_rows())}
    assert set(found) == {("ethanol", 5), ("ethanol", 20)}
    assert found["ethanol", 5]["ratio"] == pytest.approx(12.0 / 16.0)
    assert found["ethanol", 20]["ratio"] == pytest.approx(6.0 / 5.0)
    assert found["ethanol", 20]["peer"]["model"] == "peer-nequip"
    # a later row of the same measurement replaces an earlier one
    later = [*hand_rows(), row("nequip", "ethanol", 20, 4.0)]
    assert {(r["molecule"], r["mark_min"]): r for r in ratios(later)}["ethanol", 20]["ratio"] == pytest.approx(0.8)
    assert len(best_rows(hand_rows())) == len({row_key(r)[:3] for r in hand_rows()})


def test_markdown_from_a_hand_written_jsonl(tmp_path):
    out = tmp_path / "acc.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in hand_rows()))
    assert runner.main(["--markdown-only", "--out", str(out)]) == 0
    page = (tmp_path / "acc.md").read_text()
    assert (tmp_path / "acc.png").stat().st_size > 1000
    assert "| ethanol | 5 min | gnnpot nequip | 12 | PEER-MACE | 16 | 0.75 | yes |" in page
    assert "| ethanol | 20 min | gnnpot nequip | 6 | PEER-NEQUIP | 5 | 1.20 | no |" in page
    assert "| gnnpot schnet | 1,000 | 20 | 5 | 0.556 | 10 | 3 | 0.333 |" in page
    assert "99" not in page.split("## How")[0]  # the 5-frame row lost to the 1000-frame one
    assert "| gnnpot schnet | 1,000 | failed | failed | failed |" in page  # aspirin
    assert "![held-out errors against training time](acc.png)" in page
    lines = page.splitlines()
    order = [line.split(" | ")[0] for line in lines[lines.index("## ethanol") + 4 :][:4]]
    assert order == ["| gnnpot nequip", "| gnnpot schnet", "| PEER-MACE", "| PEER-NEQUIP"]
    assert "No rows yet." in render_markdown([], "cmd", None)


def test_rows_record_the_compile_cache(tmp_path):
    """The 5-minute mark of a compiled family depends on Inductor's disk cache: its size is recorded."""
    folder = tmp_path / "inductor"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "graph.so").write_bytes(b"x" * 2_500_000)
    assert runner.inductor_cache_mb({"TORCHINDUCTOR_CACHE_DIR": str(folder)}) == 2.5
    assert runner.inductor_cache_mb({"TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "none")}) == 0.0
    rows = [
        row("nequip", "ethanol", 5, 12, inductor_cache_mb=0.0),
        row("mace", "ethanol", 5, 16, peer="mace", inductor_cache_mb=900.0),
    ]
    page = render_markdown(rows, "cmd", None)
    assert "disk cache held 0 MB at the launch of each gnnpot run" in page


def test_machine_lines_say_when_a_run_was_pinned_to_fewer_cores():
    pinned = {**MACHINE, "usable_cores": 1, "git": "d"}
    rows = [row("schnet", "ethanol", 5, 12), row("painn", "ethanol", 5, 10, machine=pinned)]
    page = render_markdown(rows, "cmd", None)
    assert "- Machine: AMD EPYC, 2 cores, torch 2.13.0, gnnpot 0.1.0 (commit abc: gnnpot schnet" in page
    assert "- Machine: AMD EPYC, 2 cores (the run pinned to 1), torch 2.13.0, gnnpot 0.1.0 (commit d: gnnpot" in page


# ------------------------------------------------------------------------------------------ the watcher

WRITER = textwrap.dedent(
    """
    import sys, time, zipfile
    path, exit_after = sys.argv[1], float(sys.argv[2])
    start = time.monotonic()
    step = 0
    while time.monotonic() - start < exit_after:
        with zipfile.ZipFile(path, "w") as archive:  # rewritten in place, as Lightning does
            archive.writestr("step", str(step))
        step += 1
        time.sleep(0.05)
    sys.exit(3)
    """
)


def steps(path):
    with zipfile.ZipFile(path) as archive:
        return int(archive.read("step"))


def test_watcher_copies_the_newest_checkpoint_at_each_mark(tmp_path):
    checkpoint = tmp_path / "last.ckpt"
    command = [sys.executable, "-c", WRITER, str(checkpoint), "60"]
    start = time.monotonic()
    run = watch(
        command, [0.8, 1.6], lambda: [checkpoint] if checkpoint.exists() else [], tmp_path / "snap", tmp_path / "log"
    )
    assert 1.6 <= time.monotonic() - start < 15
    assert run.returncode is None and run.ended_s is None  # still running at the last mark: stopped
    first, second = run.snapshots
    assert [s.mark_s for s in run.snapshots] == [0.8, 1.6]
    assert is_complete(first.path) and is_complete(second.path)
    assert 0 < steps(first.path) < steps(second.path)
    assert 0 < first.written_s <= 0.8 + 0.5 and first.written_s < second.written_s <= 1.6 + 0.5
    assert not first.ended and not second.ended


def test_watcher_when_the_process_ends_early(tmp_path):
    checkpoint = tmp_path / "last.ckpt"
    command = [sys.executable, "-c", WRITER, str(checkpoint), "0.3"]
    run = watch(
        command, [5.0, 10.0], lambda: [checkpoint] if checkpoint.exists() else [], tmp_path / "snap", tmp_path / "log"
    )
    assert run.returncode == 3 and run.ended_s is not None
    assert run.seconds < 5.0  # the remaining marks are taken at once
    assert all(s.ended and is_complete(s.path) for s in run.snapshots)
    assert steps(run.snapshots[0].path) == steps(run.snapshots[1].path)


def test_copy_skips_an_incomplete_checkpoint(tmp_path):
    older, newer = tmp_path / "epoch-1.pt", tmp_path / "epoch-2.pt"
    with zipfile.ZipFile(older, "w") as archive:
        archive.writestr("step", "1")
    newer.write_bytes(b"PK\x03\x04 half written")
    path, written = copy_newest([newer, older], tmp_path / "copy.pt", time.time() - 10, tries=2, wait_s=0.01)
    assert path == tmp_path / "copy.pt" and steps(path) == 1 and 0 < written <= 10.5
    assert copy_newest([newer], tmp_path / "none.pt", time.time(), tries=2, wait_s=0.01) == (None, None)
    assert not (tmp_path / "none.pt").exists()


# ------------------------------------------------------------------------------------------ the peers


def fake_data(tmp_path):
    from benchmarks.accuracy.data import MoleculeData

    xyz = {name: tmp_path / f"{name}.xyz" for name in ("train", "val", "test")}
    return MoleculeData(
        "ethanol", tmp_path / "a.npz", tmp_path / "b.npz", tmp_path / "split.json",
        xyz["train"], xyz["val"], xyz["test"], 950, 50, 1000, ("H", "C", "O"),
    )  # fmt: skip


def test_mace_command_is_the_published_recipe(tmp_path):
    mace = peers.MacePeer(tmp_path / "venv", tmp_path / "setup.sh")
    assert "make it with `bash" in mace.missing()
    command = mace.command(fake_data(tmp_path), tmp_path / "run", 1200.0, 20.0)
    assert command[0] == str(tmp_path / "venv" / "bin" / "mace_run_train")
    text = " ".join(command)
    flags = [
        "--hidden_irreps 64x0e + 64x1o", "--correlation 3", "--r_max 5.0", "--energy_weight 1.0",
        "--forces_weight 1000.0", "--batch_size 5", "--lr 0.01", "--amsgrad", "--ema", "--save_all_checkpoints",
        f"--valid_file {tmp_path / 'val.xyz'}", "--energy_key REF_energy", "--default_dtype float32",
    ]  # fmt: skip
    for flag in flags:
        assert flag in text, flag
    folder = tmp_path / "run" / "train" / "checkpoints"
    folder.mkdir(parents=True)
    for epoch in (0, 2, 10):
        (folder / f"mace_run-0_epoch-{epoch}.pt").touch()
    assert [p.name for p in mace.checkpoints(tmp_path / "run")][:2] == [
        "mace_run-0_epoch-10.pt",
        "mace_run-0_epoch-2.pt",
    ]


def test_gnnpot_runs_are_bounded_by_the_clock_on_the_cpu_recipe(tmp_path):
    """MACE trains from its CPU recipe, SchNet from its rMD17 config; only ``max_time`` ends either run."""
    from benchmarks.accuracy.models import GnnpotFamily

    assert GnnpotFamily("mace").config.name == "mace_rmd17_cpu.yaml"
    assert GnnpotFamily("schnet").config.name == "schnet_rmd17.yaml"
    command = GnnpotFamily("mace").command(fake_data(tmp_path), tmp_path / "run", 1200.0, 20.0)
    assert command[command.index("--trainer.max_epochs") + 1] == "-1"
    assert command[command.index("--trainer.max_time") + 1] == "00:00:20:00"


def test_nequip_config_is_the_published_model(tmp_path):
    nequip = peers.NequipPeer(tmp_path / "venv", tmp_path / "setup.sh")
    command = nequip.command(fake_data(tmp_path), tmp_path / "run", 1200.0, 20.0)
    assert command[1:5] == ["-cp", str(tmp_path / "run"), "-cn", "nequip.yaml"]
    config = yaml.safe_load((tmp_path / "run" / "nequip.yaml").read_text())
    model = config["training_module"]["model"]
    assert (model["num_layers"], model["num_features"], model["l_max"], model["r_max"]) == (5, 64, 3, 4.0)
    assert model["type_names"] == ["H", "C", "O"]
    assert config["training_module"]["loss"]["coeffs"] == {"total_energy": 1.0, "forces": 1000.0}
    assert config["trainer"]["max_time"] == "00:00:20:00"
    assert config["trainer"]["callbacks"][0]["train_time_interval"]["seconds"] == 20.0
    assert config["data"]["val_file_path"] == str(tmp_path / "val.xyz")


# ------------------------------------------------------------------------------------------ a real run


@pytest.mark.skipif(not rmd17_file(RMD17, "ethanol", "train").is_file(), reason=f"no rMD17 ethanol in {RMD17}")
def test_smoke_run_trains_snapshots_and_resumes(tmp_path):
    """A tiny SchNet, 20 training frames, 5 test frames, marks 16 and 22 s after launch."""
    hparams = json.dumps(get_family("schnet").tiny_hparams)
    out = tmp_path / "acc.jsonl"
    argv = [
        "--models", "schnet", "--molecules", "ethanol", "--minutes", "1", "--marks", "16,22",
        "--seconds-per-minute", "22", "--train-frames", "20", "--test-frames", "5", "--threads", "1",
        "--rmd17-dir", str(RMD17), "--work-dir", str(tmp_path / "work"), "--out", str(out),
        "--gnnpot-args", f"--model.representation_hparams '{hparams}' --data.batch_size 5",
    ]  # fmt: skip
    assert runner.main(argv) == 0
    rows = runner.read_rows(out)
    assert [r["mark_s"] for r in rows] == [16.0, 22.0]
    for r in rows:
        assert r["force_mae"] > 0 and r["energy_mae"] > 0 and not r.get("error")
        assert (r["num_train"], r["num_val"], r["test_frames"], r["threads"]) == (19, 1, 5, 1)
        assert r["written_s"] <= r["mark_s"] and r["machine"]["cpu"] and r["load_before"] is not None
        assert "--data.split_file" in r["command"] and r["n_params"] > 0
    assert "gnnpot schnet" in (tmp_path / "acc.md").read_text()
    split = json.loads((tmp_path / "work" / "ethanol" / "data" / "split.json").read_text())
    assert len(split["train"]["indices"]) == 19 and len(split["val"]["indices"]) == 1
    # everything is there: a second run trains nothing
    start = time.monotonic()
    assert runner.main(argv) == 0
    assert time.monotonic() - start < 10 and len(runner.read_rows(out)) == 2
