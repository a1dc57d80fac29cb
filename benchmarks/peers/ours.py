"""Arm `cifar_sweep`: our sweeper as this README runs it, `python -m cifar_sweep -m` with
`hydra.sweeper.workers` asynchronous workers (each asks for its next trial as soon as its last
ends), TPE (conf/sweeper/tpe.yaml) and `pruner=asha` (conf/pruner/asha.yaml: rungs at 1 and 3
epochs, the top third goes on), the rule and settings of the Ray Tune arm's ASHAScheduler, so the
two differ only in how they orchestrate. (Hyperband, our earlier choice here, stopped fewer
trials: 62 epochs against ASHA's 37-52 for the same 16 points.)"""

import sys
from pathlib import Path

from benchmarks.peers import record
from benchmarks.peers.problem import Problem
from benchmarks.peers.process import launch

NAME = "cifar_sweep"
PRUNER = ["pruner=asha"]
HOW = f"`-m hydra.sweeper.workers=2`, TPE, {' '.join(PRUNER)}"


def sweep(problem: Problem, seed: int, out: Path, pruner: list[str]) -> dict:
    """One study of `problem` with `pruner` overrides, in `out`: its record."""
    storage = f"sqlite:///{out / 'studies.db'}"
    cmd = [
        sys.executable,
        "-m",
        "cifar_sweep",
        "-m",
        f"+experiment={problem.experiment}",
        *problem.trial(seed),
        *pruner,
        f"hydra.sweeper.n_trials={problem.trials}",
        f"hydra.sweeper.workers={problem.concurrency}",
        f"hydra.sweeper.storage={storage}",
        f"hydra.sweep.dir={out / 'sweep'}",
    ]
    t0, wall = launch(problem, cmd, out)
    trials = record.from_study(storage, t0)
    return record.summarize(seed, wall, trials, concurrency=problem.concurrency)


def run(problem: Problem, seed: int, out: Path) -> dict:
    return sweep(problem, seed, out, PRUNER)
