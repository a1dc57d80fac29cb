"""Arm `cifar_sweep-promote`: our sweeper (as in ours.py) with the promotion pruner,
`pruner=asha_promote` (conf/pruner/asha_promote.yaml: rungs at 1, 3, 9... epochs, the top third
goes on): a trial below its rung's top third pauses there, its checkpoint kept, and goes on from
its last epoch once it has earned a place, instead of being stopped for good. The study's
n_trials counts configurations, as the other arms' do."""

from pathlib import Path

from benchmarks.peers import ours
from benchmarks.peers.problem import Problem

NAME = "cifar_sweep-promote"
PRUNER = ["pruner=asha_promote"]
HOW = f"`-m hydra.sweeper.workers=2`, TPE, {' '.join(PRUNER)}"


def run(problem: Problem, seed: int, out: Path) -> dict:
    return ours.sweep(problem, seed, out, PRUNER)
