r"""CPU speed benchmark of gnnpot, the runner that alternates it with the peer harnesses, and the tables.

Not part of the installed package: it lives in the source repository beside ``gnnpot/`` and finds
``configs/`` (the paper sizes) and ``../shared/peers`` (the peer harnesses) relative to its own folder.

The gnnpot side follows ``../shared/peers/PROTOCOL.md`` as the peer harnesses there do
(``peers/<peer>/bench.py``): the same workloads, sizes, timing rule and JSON line fields, so that
their output can be put side by side.

Workloads (float32, ``torch.set_num_threads(2)`` unless ``--threads``, ``torch.manual_seed(0)``):
    * ``W1_train_step``: aspirin ``train_01`` frames 0-4 in one batch: forces with ``create_graph``
      (``ForceField`` in ``train()`` mode), loss ``1 * MSE(E/atom) + 100 * MSE(F)``
      (:class:`~gnnpot.training.PotentialLoss`), backward, Adam step. structures/s.
    * ``W2_infer_single``: one aspirin structure, energy + forces in ``eval()`` mode. calls/s.
    * ``W3_infer_batch``: 32 aspirin structures in one batch. structures/s.
    * ``W4_md_cu108``: periodic fcc Cu, 3x3x3 cubic cells (108 atoms, a = 3.61 Å, rattled 0.05 Å
      with seed 1) through :class:`~gnnpot.GNNPotCalculator`, alternating two geometries so that every
      call computes. calls/s. The headline uses the calculator's default skin list; the rate with the
      list rebuilt at every call (``skin=0``, as the peers do) is in ``value_skin0`` and the notes.

W1-W3 run on graphs built beforehand (:meth:`AtomicData.from_atoms` + ``Batch.from_data_list``),
as the peers' headline numbers do; ``extra_rates`` holds the rate with the graphs built at every
call. Graphs also carry the tensors of the family's ``representation.prepare`` (DimeNet++'s
triplets, as PyG's harness prebuilds them); ``extra_rates`` then also has the rate with them built
inside the forward pass, gnnpot's default pipeline.

``--scaling`` times one MD step (energy + forces through the calculator) on periodic fcc Cu from
108 to 10,976 atoms for every family, and reports µs per atom per step, so that linear scaling
shows as a flat column.

Each family and size runs in its own process unless ``--in-process``, so that ``peak_rss_mb`` is
the peak of a process that built and ran only that model (sizes of the scaling run go in rising
order in one process, so the peak after each size is that size's). ``--peers`` runs the peer
harnesses, each in its own virtual environment, one process at a time, alternating with gnnpot:
each gnnpot family and size is followed by its matched peers. ``--markdown`` writes the tables of
gnnpot/peer ratios, from this run or from saved JSONL files (``--from-jsonl``).

Modules: ``sizes`` (the variants of every family), ``workloads`` (data, timing, W1-W4, the scaling
step), ``records`` (models and JSON lines of gnnpot's runs), ``peers`` (the peer harnesses and their
matching), ``report`` (the Markdown page), ``runner`` (the runs in order, processes, command line).

    python -m benchmarks --out bench.jsonl --markdown docs/benchmarks.md \
        --peers schnetpack,pyg,mace,nequip --scaling
    python -m benchmarks --from-jsonl bench.jsonl --markdown docs/benchmarks.md
"""

from __future__ import annotations

from pathlib import Path

# The source checkout this folder sits in: configs/ and .git are read from here.
REPO = Path(__file__).resolve().parents[1]
