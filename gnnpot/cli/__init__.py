"""The ``gnnpot`` command line.

::

    gnnpot data generate [--out FILE] [--seed N] [--num-frames N]
    gnnpot data stats FILE [--json] [--cutoff R] [--key-map MAP] [--index I]
                           [--isolated-atoms FILE] [--e0 {auto,isolated,lstsq}]
    gnnpot data download rmd17 [--out DIR] [--molecules M ...] [--url URL] [--sha256 HEX]
    gnnpot data convert FILE OUT.lmdb [--key-map MAP] [--require LABEL ...]
    gnnpot data label --in FILE --out FILE --calculator emt|pyscf|xtb|module:Class [--calc-args JSON]
                      [--workers N] [--threads N] [--index I]
    gnnpot fit|validate|test --config FILE [--trainer.* ...] [--model.* ...] [--data.* ...] [--ensemble N]
                             [--model.init_from MODEL]
    gnnpot fit-kernel --data FILE --out MODEL [--type kernel|coulomb_krr] [--val FILE] [--num-inducing M]
    gnnpot eval --model MODEL (--data FILE | --split split.json) [--json] [--plot PNG]
    gnnpot export RUN_OR_CKPT OUT [--test-data FILE | --no-eval]
    gnnpot deploy MODEL OUT [--dtype float32|float64]
    gnnpot md --model MODEL [MODEL ...] --structure FILE --ensemble nve|nvt|npt --temperature K
              --timestep FS --steps N [--out TRAJ] [--log FILE] [--max-force-std X] [--min-distance R]
    gnnpot relax --model MODEL --structure FILE [--fmax F] [--cell] [--out FILE]
    gnnpot serve --model MODEL [MODEL ...] --structure FILE --address ADDR [--unix] [--port P]
    gnnpot lammps IN.lmp --model MODEL [MODEL ...] --elements E [E ...] [--fix-id ID] [--log FILE]
    gnnpot pretrained [--json]
    gnnpot learn --config al.yaml [--out DIR]
    gnnpot benchmark [--models ...] [--sizes ...] [--peers ...] [--markdown docs/benchmarks.md]

MODEL is a model file, a Lightning checkpoint of a run, a run folder or a pretrained name.

:func:`main` dispatches on the first word, one module per command group: :mod:`gnnpot.cli.data`,
:mod:`gnnpot.cli.models` (``eval``, ``export``, ``deploy``, ``pretrained``), :mod:`gnnpot.cli.kernel`
(``fit-kernel``), :mod:`gnnpot.cli.dynamics` (``md``, ``relax``), :mod:`gnnpot.cli.lammps` and
:mod:`gnnpot.cli.benchmark` use argparse with ``--kebab-case`` options; ``fit``, ``validate`` and
``test`` go to the LightningCLI subclass :class:`gnnpot.cli.training.GNNPotCLI` (options
``--trainer.*``, ``--model.*``, ``--data.*``, ``--run.*`` as Lightning spells them).
:mod:`gnnpot.cli.common` holds what the argparse commands share.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from gnnpot.cli.benchmark import benchmark_main
from gnnpot.cli.common import DEBUG_FLAG, set_debug
from gnnpot.cli.data import data_main
from gnnpot.cli.dynamics import md_main, relax_main
from gnnpot.cli.kernel import fit_kernel_main
from gnnpot.cli.lammps import lammps_main
from gnnpot.cli.learn import learn_main
from gnnpot.cli.models import deploy_main, eval_main, export_main, pretrained_main
from gnnpot.cli.serve import serve_main

TRAINING_COMMANDS = ("fit", "validate", "test")

USAGE = """usage: gnnpot <command> ...

commands:
  data generate   write the embedded EMT Cu-Au dataset (no network)
  data stats      frames, elements, E0, energy and force scales, neighbours of a dataset
  data download   fetch a reference dataset (rMD17) and write its official splits
  data convert    stream a dataset into an on-disk store (.lmdb) that training reads lazily
  data label      label structures with EMT, PySCF, xtb or your own ASE calculator (resumable)
  fit, validate, test
                  train and evaluate with a config: gnnpot fit --config configs/painn_demo.yaml
                  (LightningCLI: --trainer.*, --model.*, --data.*, --ckpt_path; see gnnpot fit -h)
  fit-kernel      fit a kernel model in closed form (GAP-like sparse kernel, Coulomb-matrix KRR)
  eval            metrics of a trained model on any dataset (rMD17 npz, extxyz, ASE db)
  export          write a training run as a model file (config + weights + metadata, test metrics)
  deploy          write a model as a TorchScript file that needs torch alone (engines that load TorchScript)
  md              molecular dynamics (NVE, NVT, NPT) with a model or a committee
  relax           geometry (and cell) optimisation
  serve           the model as an i-PI client (driver): i-PI runs the dynamics, gnnpot the forces
  lammps          run a LAMMPS input script whose `fix external` is the model (engines extra)
  pretrained      the pretrained models shipped with gnnpot
  learn           active learning: committee MD, label the uncertain structures, retrain
  benchmark       speed workloads (training step, MD latency, batches, periodic Cu) against peers

MODEL arguments take a model file, a run's checkpoint, a run folder or a pretrained name.
An error ends a command with one line and a non-zero exit; --debug (anywhere) shows its traceback.

Run `gnnpot <command> -h` for details."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gnnpot`` console script.

    Args:
        argv: the command line after ``gnnpot``; ``None`` reads ``sys.argv``.

    ``--debug`` anywhere on the line is taken out and lets errors raise with their traceback.

    Returns:
        The exit status: 0, 1 for bad input, 2 for bad arguments or an unknown command, 3 for an MD
        run stopped early, a relaxation that did not converge or an active-learning loop that ended
        before MD was stable.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    set_debug(DEBUG_FLAG in argv)
    argv = [word for word in argv if word != DEBUG_FLAG]
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command in COMMANDS:
        return COMMANDS[command](rest)
    if command in TRAINING_COMMANDS:
        return _training_main(argv)
    print(f"gnnpot: error: unknown command {command!r} (see gnnpot -h)", file=sys.stderr)
    return 2


def _training_main(argv: list[str]) -> int:
    """Dispatch point for ``fit|validate|test``: hand ``argv`` to the LightningCLI subclass.

    Lightning is imported here, so the other commands start without it.

    Args:
        argv: the command line after ``gnnpot``, subcommand first.
    """
    from gnnpot.cli.training import training_main

    return training_main(argv)


# First word -> handler of the words after it. Training commands are routed by _training_main.
COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "data": data_main,
    "eval": eval_main,
    "fit-kernel": fit_kernel_main,
    "export": export_main,
    "deploy": deploy_main,
    "md": md_main,
    "relax": relax_main,
    "serve": serve_main,
    "lammps": lammps_main,
    "pretrained": pretrained_main,
    "benchmark": benchmark_main,
    "learn": learn_main,
}
