"""``gnnpot learn --config al.yaml``: the active-learning loop (:mod:`gnnpot.training.active`)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from gnnpot.cli.common import ArgumentParser, guarded


def learn_main(argv: Sequence[str]) -> int:
    """``gnnpot learn``.

    Args:
        argv: the arguments after ``gnnpot learn``.
    """
    parser = ArgumentParser(
        prog="gnnpot learn",
        description="Active learning: train a committee, run MD with it, label the structures where its "
        "members disagree with the reference calculator, add them and train again, until MD holds for the "
        "requested time or the label budget is spent. Settings: the keys of ActiveLearningConfig "
        "(gnnpot.training.active), in a YAML file. A re-run with the same out folder continues.",
    )
    parser.add_argument("--config", required=True, help="YAML settings of the loop (see configs/learn/emt_cuau.yaml)")
    parser.add_argument("--out", default=None, help="the loop's folder (overrides the config's out)")
    parser.set_defaults(run=_learn)
    args = parser.parse_args(list(argv))
    return guarded("learn", args.run, args)


def _learn(args: argparse.Namespace) -> int:
    from gnnpot.training.active import ActiveLearningConfig, log_table, run_active_learning

    config = ActiveLearningConfig.from_file(args.config, out=args.out)
    log = run_active_learning(config)
    last = log[-1] if log else {}
    print(log_table(log))
    print(f"log: {config.out}/log.jsonl; last committee: {config.out}/iter_{last.get('iteration', 0)}/committee")
    return 0 if last.get("stop", "").startswith("stable") else 3
