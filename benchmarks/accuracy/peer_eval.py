r"""Predictions of a peer's training snapshot on labelled frames, run with the peer's own Python.

A standalone script: it imports numpy, ASE, torch and the peer package only (never gnnpot or
``benchmarks``), because each peer lives in its own virtual environment::

    /tmp/peer-mace/bin/python benchmarks/accuracy/peer_eval.py mace --checkpoint SNAP.pt \
        --template TEMPLATE.model --frames test.xyz --out pred.npz
    /tmp/peer-nequip/bin/python benchmarks/accuracy/peer_eval.py nequip --checkpoint SNAP.ckpt \
        --frames test.xyz --out pred.npz

``--out`` gets ``energy`` [num_frames] (eV), ``forces`` [num_atoms_total, 3] (eV/Å, frames one
after another) and ``num_atoms`` [num_frames]; stdout gets one JSON line with the package versions,
the parameter count and the seconds taken. The errors are computed by the benchmark, from these
arrays, with the same code for every model.

* MACE: ``mace_run_train`` checkpoints (``*_epoch-N.pt``) hold state dicts only, saved inside
  MACE's EMA context (EMA weights). ``--template`` is the ``.model`` file of a ``mace_run_train``
  run with the same arguments and ``--max_num_epochs 0``: the same architecture and the same
  statistics of the training data. The snapshot's weights are loaded into it strictly, then the
  frames go through MACE's own data pipeline in batches, as ``mace_eval_configs`` does.
* NequIP: ``nequip.model.saved_models.load_saved_model`` rebuilds the model of a ``nequip-train``
  checkpoint with its EMA weights; frames go through NequIP's transforms (type mapping and neighbour
  list, ``nequip.integrations.utils.basic_transforms``) and are evaluated in batches.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from importlib.metadata import version

import ase.io
import numpy as np


def _frames(path: str) -> list:
    return ase.io.read(path, index=":")


def predict_mace(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, int]:
    """Total energies (eV) and forces (eV/Å) of a ``mace_run_train`` snapshot; also its parameter count."""
    import torch
    from mace import data
    from mace.tools import torch_geometric, torch_tools, utils

    torch_tools.set_default_dtype(args.dtype)
    model = torch.load(args.template, map_location="cpu", weights_only=False)
    state = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])  # strict: the template must be the same architecture
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad = False
    z_table = utils.AtomicNumberTable([int(z) for z in model.atomic_numbers])
    heads = getattr(model, "heads", None)
    graphs = [
        data.AtomicData.from_config(
            data.config_from_atoms(atoms), z_table=z_table, cutoff=float(model.r_max), heads=heads
        )
        for atoms in _frames(args.frames)
    ]
    loader = torch_geometric.dataloader.DataLoader(graphs, batch_size=args.batch_size, shuffle=False, drop_last=False)
    energies, forces = [], []
    for batch in loader:
        out = model(batch.to_dict(), compute_stress=False)
        energies.append(out["energy"].detach().double().numpy().reshape(-1))
        forces.append(out["forces"].detach().double().numpy())
    return np.concatenate(energies), np.concatenate(forces), sum(p.numel() for p in model.parameters())


def predict_nequip(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, int]:
    """Total energies (eV) and forces (eV/Å) of a ``nequip-train`` checkpoint; also its parameter count."""
    from nequip.data import AtomicDataDict, from_ase
    from nequip.integrations.utils import basic_transforms
    from nequip.model.saved_models import load_saved_model
    from nequip.nn import graph_model
    from nequip.utils.global_state import set_global_state

    set_global_state(allow_tf32=False)
    model = load_saved_model(args.checkpoint)  # the EMA weights of an EMALightningModule run
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    metadata = model.metadata
    type_names = metadata[graph_model.TYPE_NAMES_KEY].split(" ")
    transforms = basic_transforms(
        metadata, float(metadata[graph_model.R_MAX_KEY]), type_names, {name: name for name in type_names}
    )
    frames = _frames(args.frames)
    energies, forces = [], []
    for start in range(0, len(frames), args.batch_size):
        graphs = []
        for atoms in frames[start : start + args.batch_size]:
            graph = from_ase(atoms)
            for transform in transforms:
                graph = transform(graph)
            graphs.append(graph)
        out = model(AtomicDataDict.batched_from_list(graphs))
        energies.append(out[AtomicDataDict.TOTAL_ENERGY_KEY].detach().double().numpy().reshape(-1))
        forces.append(out[AtomicDataDict.FORCE_KEY].detach().double().numpy())
    return np.concatenate(energies), np.concatenate(forces), sum(p.numel() for p in model.parameters())


PEERS = {"mace": (predict_mace, "mace-torch"), "nequip": (predict_nequip, "nequip")}


def main(argv: list[str] | None = None) -> int:
    """Write the predictions (``--out``) and print one JSON line; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("peer", choices=sorted(PEERS))
    parser.add_argument("--checkpoint", required=True, help="the snapshot (MACE *.pt, NequIP *.ckpt)")
    parser.add_argument("--template", help="MACE only: .model file of the same run with --max_num_epochs 0")
    parser.add_argument("--frames", required=True, help="extxyz file of the frames to predict")
    parser.add_argument("--out", required=True, help="the .npz file of the predictions")
    parser.add_argument("--batch-size", type=int, default=50, help="frames per batch (default 50)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--dtype", default="float32", help="MACE's default dtype (default float32, as trained)")
    args = parser.parse_args(argv)
    if args.peer == "mace" and not args.template:
        parser.error("mace needs --template")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    predict, package = PEERS[args.peer]
    energy, forces, n_params = predict(args)
    frames = _frames(args.frames)
    num_atoms = np.array([len(atoms) for atoms in frames], dtype=np.int64)
    if energy.shape != (len(frames),) or forces.shape != (int(num_atoms.sum()), 3):
        raise RuntimeError(f"predictions of shape {energy.shape} and {forces.shape} for {len(frames)} frames")
    np.savez(args.out, energy=energy, forces=forces, num_atoms=num_atoms)
    record = {
        "peer": args.peer,
        "peer_version": version(package),
        "torch": torch.__version__,
        "e3nn": version("e3nn"),
        "threads": torch.get_num_threads(),
        "n_params": int(n_params),
        "frames": len(frames),
        "seconds": round(time.perf_counter() - start, 2),
    }
    print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
