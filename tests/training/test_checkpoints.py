"""Checkpoints survive a kill during the write; a copied run folder keeps one best.ckpt."""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from gnnpot.data import AtomsDataModule
from gnnpot.models.io import atomic_save
from gnnpot.testing import tiny_hparams
from gnnpot.training import PotentialModule
from gnnpot.training.checkpoints import AtomicCheckpointIO, RunCheckpoint


def tiny() -> PotentialModule:
    return PotentialModule("schnet", tiny_hparams("schnet"), cutoff=4.0)


def datamodule(path: str) -> AtomsDataModule:
    return AtomsDataModule(path, val_fraction=0.2, test_fraction=0.0, cutoff=4.0, batch_size=8, seed=1)


WRITER = """
import sys, torch
from gnnpot.models.io import atomic_save
big = torch.arange(6_000_000, dtype=torch.float64)  # 48 MB: each write takes a while
k = 0
while True:
    k += 1
    atomic_save({"k": k, "big": big + k}, sys.argv[1])
    print(k, flush=True)
"""


def test_a_kill_during_the_write_leaves_the_previous_checkpoint(tmp_path):
    target = tmp_path / "run" / "last.ckpt"
    atomic_save({"k": 0, "big": torch.zeros(1)}, target)
    scratch = tmp_path / "tmpdir"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch), "OMP_NUM_THREADS": "1"}
    for delay in (0.05, 0.21, 0.37):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], env=env, stdout=subprocess.PIPE)
        assert writer.stdout.readline()  # one write done: the next ones are under way
        time.sleep(delay)
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        saved = torch.load(target, weights_only=True)  # whole: the old file or the new one
        assert torch.equal(saved["big"][:3], torch.arange(3, dtype=torch.float64) + saved["k"])
        assert list(scratch.iterdir()) == []  # nothing staged in TMPDIR
        assert len(list(target.parent.iterdir())) <= 2  # at most the killed writer's temporary file
    atomic_save({"k": -1}, target)  # the next save clears what killed writers left
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]


def test_a_copied_run_folder_resumes_into_its_own_best_checkpoint(tmp_path, emt_file, make_trainer):
    first = tmp_path / "first"

    def trainer(folder, epochs):
        best = RunCheckpoint(dirpath=folder, filename="best", monitor="val/loss", save_last=True)
        run = make_trainer(folder, max_epochs=epochs, callbacks=[best], enable_checkpointing=True)
        run.strategy.checkpoint_io = AtomicCheckpointIO()
        return run, best

    run, best = trainer(first, 2)
    run.fit(tiny(), datamodule(emt_file))
    score = float(best.best_model_score)
    copy = tmp_path / "copy"
    shutil.copytree(first, copy)
    shutil.rmtree(first)  # the records in the checkpoint name a folder that is gone
    run, best = trainer(copy, 4)
    run.fit(tiny(), datamodule(emt_file), ckpt_path=str(copy / "last.ckpt"))
    assert sorted(p.name for p in copy.glob("*.ckpt")) == ["best.ckpt", "last.ckpt"]  # no best-v1.ckpt
    assert float(best.best_model_score) <= score  # the records carried over
    saved = torch.load(copy / "best.ckpt", weights_only=True)
    assert saved["callbacks"]  # a checkpoint of this run
    assert best.best_model_path == str(copy / "best.ckpt")
    assert saved["epoch"] <= 3


def test_records_of_another_folder_do_not_carry_over(tmp_path, emt_file, make_trainer):
    first, second = tmp_path / "first", tmp_path / "second"
    best = RunCheckpoint(dirpath=first, filename="best", monitor="val/loss", save_last=True)
    make_trainer(first, max_epochs=1, callbacks=[best], enable_checkpointing=True).fit(tiny(), datamodule(emt_file))
    resumed = RunCheckpoint(dirpath=second, filename="best", monitor="val/loss", save_last=True)
    run = make_trainer(second, max_epochs=2, callbacks=[resumed], enable_checkpointing=True)
    run.fit(tiny(), datamodule(emt_file), ckpt_path=str(first / "last.ckpt"))
    # The new folder gets its own best.ckpt at its first validation, whatever the old score.
    assert sorted(p.name for p in second.glob("*.ckpt")) == ["best.ckpt", "last.ckpt"]
    assert torch.load(second / "best.ckpt", weights_only=True)["epoch"] == 1


@pytest.mark.parametrize("kind", ["model file", "checkpoint"])
def test_atomic_writes_leave_no_temporary_file(tmp_path, kind):
    target = tmp_path / "x.pt"
    if kind == "checkpoint":
        AtomicCheckpointIO().save_checkpoint({"a": torch.ones(2)}, target)
    else:
        atomic_save({"a": torch.ones(2)}, target)
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]
    assert torch.equal(torch.load(target, weights_only=True)["a"], torch.ones(2))
