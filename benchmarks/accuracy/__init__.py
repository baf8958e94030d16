r"""Time to accuracy on rMD17: gnnpot's families and the peers MACE and NequIP (issue 12, point 3).

Every model trains for the same wall-clock budget (``--minutes``, default 20) on the same frames
(rMD17 split 01: 950 training and 50 validation frames of ``rmd17_<molecule>_train_01.npz``), one
process at a time on an idle machine with the same number of threads; its newest checkpoint is
copied at each mark (``--marks``, default 5, 10 and 20 minutes) and every copy is tested on the same
held-out frames (``rmd17_<molecule>_test_01.npz``, all 1000 unless ``--test-frames``).

Models (``--models``, default all):
    * every gnnpot family with ``configs/<family>_rmd17.yaml`` (``gnnpot fit`` at the config's
      hyperparameters; ``configs/<family>_rmd17_cpu.yaml`` instead where a family has a CPU recipe),
      bounded by the clock alone, so that a cosine schedule anneals at the budget;
    * ``peer-mace``: ``mace_run_train`` in ``/tmp/peer-mace`` (MACE "small" of the speed benchmark,
      MACE's rMD17 recipe);
    * ``peer-nequip``: ``nequip-train`` in ``/tmp/peer-nequip`` (the published revMD17 NequIP).

The errors (force MAE in meV/Å, energy MAE in meV per molecule and meV/atom) are computed here from
the energies and forces each model's own evaluator writes, by one function for all. Every finished
(model, molecule, mark) is a JSON line of ``--out`` (default ``docs/accuracy.jsonl``); a re-run
trains only what is missing. The page (``docs/accuracy.md``, beside ``--out``) and its plot
(``docs/accuracy.png``) are rewritten after every run, or from the JSON lines alone with
``--markdown-only``.

Modules: ``data`` (split, extxyz files, the error formula), ``watch`` (the timed run and its
snapshots), ``models`` (what a model provides; gnnpot's families), ``peers`` (MACE and NequIP:
settings, commands, evaluators), ``peer_eval`` (the evaluator run in a peer's environment),
``report`` (page and plot), ``runner`` (plan, bookkeeping, command line).

    python -m benchmarks.accuracy                                   # the full run (hours)
    python -m benchmarks.accuracy --models schnet,peer-mace --molecules ethanol \
        --minutes 0.5 --marks 0.25,0.5 --test-frames 5 --out /tmp/acc_smoke.jsonl   # a smoke run
    python -m benchmarks.accuracy --markdown-only                  # the page from docs/accuracy.jsonl
"""
