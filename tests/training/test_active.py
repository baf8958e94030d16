"""Active learning on EMT Cu-Au: the loop labels what the committee doubts, grows the data, resumes and stops."""

import itertools
import json

import numpy as np
import pytest
import torch
import yaml
from ase.calculators.emt import EMT

from gnnpot.cli import main
from gnnpot.data import read_frames, write_frames
from gnnpot.data.generate import generate_emt_dataset
from gnnpot.data.label import INDEX_KEY
from gnnpot.models import load_model
from gnnpot.testing import tiny_hparams
from gnnpot.training.active import ActiveLearningConfig, run_active_learning


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("active")
    start = generate_emt_dataset(10, seed=0, temperatures=[300], kinds=["bulk", "vacancy"], frames_per_trajectory=5)
    test = generate_emt_dataset(6, seed=1, temperatures=[900], kinds=["bulk"])
    write_frames(root / "start.xyz", start)
    write_frames(root / "test.xyz", test)
    fit = {
        "seed_everything": 0,
        "trainer": {"max_epochs": 2, "accelerator": "cpu", "devices": 1},
        "model": {"representation": "painn", "representation_hparams": tiny_hparams("painn"), "lr": 0.005},
        "data": {"train_file": "unused.xyz", "val_fraction": 0.2, "cutoff": 4.0, "batch_size": 4},
    }
    (root / "fit.yaml").write_text(yaml.safe_dump(fit))
    return root


def settings(files, out, **changes):
    values = dict(
        fit_config=str(files / "fit.yaml"),
        initial_data=str(files / "start.xyz"),
        test_file=str(files / "test.xyz"),
        committee=2,
        temperature=900.0,
        timestep=2.0,
        md_time_ps=0.02,
        trajectories=2,
        threshold=1e-6,  # every run stops at its first step: each one selects a structure
        label_budget=50,
        max_iterations=2,
        out=str(out),
    )
    values.update(changes)
    return ActiveLearningConfig(**values)


def test_the_loop_labels_the_doubted_structures_and_fine_tunes(files, tmp_path):
    config = settings(files, tmp_path / "al")
    log = run_active_learning(config, echo=lambda line: None)
    assert [row["iteration"] for row in log] == [0, 1]
    first, second = log
    assert first["labelled"] == 2 and second["labels"] == 2 and second["train_frames"] == first["train_frames"] + 2
    assert all(t == 0.0 for t in first["md_stable_ps"]) and all("force uncertainty" in s for s in first["md_stopped"])
    assert np.isfinite(first["test_forces_mae"]) and second["stop"] == "2 iterations done"
    # The new frames carry EMT's labels at their own positions, and where they came from.
    data = read_frames(tmp_path / "al" / "data.xyz")
    for atoms in list(data)[-2:]:
        assert atoms.info["label_method"] == "emt" and INDEX_KEY in atoms.info and "active_iteration" in atoms.info
        reference = atoms.copy()
        reference.calc = EMT()
        np.testing.assert_allclose(atoms.get_forces(), reference.get_forces(), atol=1e-7)
    # Iteration 1's members started from iteration 0's.
    hparams = yaml.safe_load((tmp_path / "al" / "iter_1" / "committee" / "member_1" / "hparams.yaml").read_text())
    assert hparams["init_from"].endswith("iter_0/committee/member_1")
    # A re-run continues after the last logged iteration; here, as if killed after iteration 0, whose
    # labels count. Of iteration 1's members, the finished one is kept; the one without the finished
    # mark (killed in training: it may have a best.ckpt from an early epoch) is trained again.
    log_file = tmp_path / "al" / "log.jsonl"
    log_file.write_text(log_file.read_text().splitlines()[0] + "\n")
    committee = tmp_path / "al" / "iter_1" / "committee"
    (committee / "member_1" / "finished").unlink()
    written = {m: (committee / m / "checkpoints" / "best.ckpt").stat().st_mtime_ns for m in ("member_0", "member_1")}
    log = run_active_learning(settings(files, tmp_path / "al", max_iterations=3), echo=lambda line: None)
    assert [row["iteration"] for row in log] == [0, 1, 2]
    assert log[1]["labels"] == 2 and log[2]["labels"] == 4
    assert (committee / "member_0" / "checkpoints" / "best.ckpt").stat().st_mtime_ns == written["member_0"]
    assert (committee / "member_1" / "checkpoints" / "best.ckpt").stat().st_mtime_ns != written["member_1"]
    assert (committee / "member_1" / "finished").exists()


def test_a_stable_committee_stops_the_loop(files, tmp_path, capsys):
    config_file = tmp_path / "al.yaml"
    values = {k: v for k, v in vars(settings(files, tmp_path / "al", threshold=100.0)).items()}
    config_file.write_text(yaml.safe_dump(values))
    assert main(["learn", "--config", str(config_file)]) == 0
    assert "| 0 | " in capsys.readouterr().out  # the table of iterations
    (row,) = [json.loads(line) for line in (tmp_path / "al" / "log.jsonl").read_text().splitlines()]
    assert row["stop"].startswith("stable") and row["md_stable_ps"] == [0.02, 0.02] and row["labels"] == 0


def test_bad_settings_name_the_file(tmp_path, capsys):
    config_file = tmp_path / "al.yaml"
    config_file.write_text("fit_config: a.yaml\ninitial_data: b.xyz\ncommitee: 3\n")
    assert main(["learn", "--config", str(config_file)]) == 1
    assert f"{config_file}: unknown settings ['commitee']" in capsys.readouterr().err
    with pytest.raises(ValueError, match="committee must be >= 2"):
        ActiveLearningConfig(fit_config="a", initial_data="b", committee=1)


@pytest.mark.parametrize("name", ["emt_cuau", "xtb_ethanol"])
def test_the_shipped_configs_read(name):
    from pathlib import Path

    config = ActiveLearningConfig.from_file(Path(__file__).parents[2] / "configs" / "learn" / f"{name}.yaml")
    assert config.committee == 3 and "--trainer.max_epochs" in config.fit_args
    assert (Path(__file__).parents[2] / config.fit_config).is_file()


def test_a_trust_window_selects_several_structures_per_run(files, tmp_path):
    # threshold 1e-6: every step is uncertain, so each run selects its first structure and then one
    # every spacing (2 steps of 2 fs), up to 3; the 30 steps leave room for all of them.
    # The budget of 5 cuts the second run's third structure.
    config = settings(files, tmp_path / "al", labels_per_trajectory=3, spacing_fs=4.0, md_time_ps=0.06, label_budget=5)
    log = run_active_learning(config, echo=lambda line: None)
    first = log[0]
    assert first["md_selected"] == [3, 3] and first["labelled"] == 5
    assert all(t == 0.0 for t in first["md_stable_ps"])  # the held time ends at the first uncertain step
    new = list(read_frames(tmp_path / "al" / "data.xyz"))[-5:]
    # Round robin: both runs' first structures, both second ones, then the first run's third.
    assert [a.info["md_start"] for a in new] == [0, 1, 0, 1, 0]
    assert [a.info.get("md_after_first_ps") for a in new] == [None, None, 0.004, 0.004, 0.008]
    assert np.abs(new[0].positions - new[2].positions).max() > 1e-3  # the run moved on between the two
    assert log[-1]["stop"] == "label budget of 5 spent"


def test_an_abort_threshold_ends_a_run_without_selecting(files, tmp_path):
    # Every structure is past the upper level too: a run keeps only its first structure.
    config = settings(files, tmp_path / "al", labels_per_trajectory=3, abort_threshold=2e-6, max_iterations=1)
    (first,) = run_active_learning(config, echo=lambda line: None)
    assert first["md_selected"] == [1, 1]
    with pytest.raises(ValueError, match="abort_threshold must be above threshold"):
        settings(files, tmp_path, abort_threshold=1e-7)


def test_members_and_md_runs_side_by_side_equal_one_after_another(files, tmp_path):
    # threshold 0.05 eV/Å: some steps pass it, so the held times and selections are the runs' own.
    common = dict(threshold=0.05, md_time_ps=0.04, labels_per_trajectory=2, spacing_fs=4.0, max_iterations=2)
    one, _ = run_active_learning(settings(files, tmp_path / "one", **common), echo=lambda line: None)
    config = settings(files, tmp_path / "two", md_workers=2, committee_workers=2, **common)
    two, _ = run_active_learning(config, echo=lambda line: None)
    for iteration, member in itertools.product((0, 1), ("member_0", "member_1")):
        run = f"iter_{iteration}/committee/{member}"
        weights = [load_model(tmp_path / name / run).state_dict() for name in ("one", "two")]
        for key, value in weights[0].items():
            assert torch.equal(value, weights[1][key]), (run, key)
    for key in ("md_stable_ps", "md_stopped", "md_selected", "labelled"):
        assert one[key] == two[key]
    assert one["labelled"] > 0
    new_one, new_two = (list(read_frames(tmp_path / name / "data.xyz"))[-one["labelled"] :] for name in ("one", "two"))
    for a, b in zip(new_one, new_two, strict=True):
        np.testing.assert_array_equal(a.positions, b.positions)
    for name in ("md_0.log", "md_1.log"):
        assert (tmp_path / "two" / "iter_0" / name).read_text() == (tmp_path / "one" / "iter_0" / name).read_text()
    for name in ("md_workers", "committee_workers"):
        with pytest.raises(ValueError, match=f"{name} must be >= 1"):
            settings(files, tmp_path, **{name: 0})


def test_a_failed_member_is_named_and_the_finished_ones_are_kept(files, tmp_path):
    # A file where member 1's run folder should be: its training cannot start, member 0's can.
    committee = tmp_path / "al" / "iter_0" / "committee"
    committee.mkdir(parents=True)
    (committee / "member_1").write_text("in the way")
    config = settings(files, tmp_path / "al", committee_workers=2, max_iterations=1)
    with pytest.raises(RuntimeError, match=r"training committee member 1 in .*member_1 failed"):
        run_active_learning(config, echo=lambda line: None)
    assert (committee / "member_0" / "finished").exists()
