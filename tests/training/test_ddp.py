"""Two CPU processes (DDP, gloo): training runs, and the logged metrics equal a one-process evaluation."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
GNNPOT = Path(sys.executable).with_name("gnnpot")


@pytest.mark.parametrize("form", ["extxyz", "lmdb"])
def test_ddp_two_processes_metrics_reduce_exactly(emt_file, tmp_path, form):
    """With the on-disk store too: each process reads its own shard, and the shards cover the data once."""
    if form == "lmdb":
        from gnnpot.data.io import stream_frames
        from gnnpot.data.store import write_store

        store = tmp_path / "emt.lmdb"
        write_store(stream_frames(emt_file), store, source=emt_file)
        emt_file = str(store)
    args = [
        str(GNNPOT),
        "fit",
        "--config",
        "configs/schnet_demo.yaml",
        f"--data.train_file={emt_file}",
        "--data.val_fraction=0.2",  # 8 frames: equal shares, so no sample is padded in twice
        "--data.test_fraction=0.2",
        "--data.batch_size=4",
        "--data.val_batch_size=3",  # unequal batches within each process
        "--data.cutoff=4.0",
        "--model.representation_hparams={num_features: 8, num_interactions: 1, num_rbf: 6}",
        "--trainer.max_epochs=2",
        "--trainer.strategy=ddp",
        "--trainer.devices=2",
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
        f"--run.dir={tmp_path}",
        "--run.version=ddp",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_PORT": str(29500 + os.getpid() % 1000)}
    done = subprocess.run(args, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "schnet_demo" / "ddp"
    import torch

    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 2 * 3  # 24 training frames / (2 processes x batch 4) = 3 steps per epoch

    with open(run / "metrics.csv") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("val/forces_mae")]
    logged = rows[-1]
    out = subprocess.run(
        [
            str(GNNPOT),
            "eval",
            "--model",
            str(run / "checkpoints" / "last.ckpt"),
            "--split",
            str(run / "split.json"),
            "--subset",
            "val",
            "--json",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    metrics = json.loads(out.stdout)["metrics"]
    for name in ("forces_mae", "forces_rmse", "energy_per_atom_mae", "energy_rmse", "stress_mae"):
        assert float(logged[f"val/{name}"]) == pytest.approx(metrics[name], rel=1e-4), name
