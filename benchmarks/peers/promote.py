"""Arm `cifar_sweep-promote`: our sweeper (as in ours.py) with the promotion pruner,
`pruner=asha pruner.promote=true`, which pauses a trial at a rung and promotes the best ones to
go on from their last epoch instead of stopping them for good. Skipped, saying so, on a checkout
whose configs do not have it yet."""

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException

from benchmarks.peers import ours
from benchmarks.peers.problem import Problem
from cifar_sweep.config_dir import CONF

NAME = "cifar_sweep-promote"
PRUNER = ["pruner=asha", "pruner.promote=true", "pruner.min_epochs=1", "pruner.reduction_factor=3"]
HOW = f"`-m hydra.sweeper.workers=2`, TPE, {' '.join(PRUNER)}"


def missing(problem: Problem) -> str | None:
    """Why this checkout cannot run the arm (its configs lack the pruner), or None."""
    try:
        with initialize_config_dir(str(CONF)):
            compose("config", overrides=[f"+experiment={problem.experiment}", *PRUNER])
    except HydraException:
        return "pruner=asha not available"
    return None


def run(problem: Problem, seed: int, out: Path) -> dict:
    reason = missing(problem)
    if reason:
        return {"seed": seed, "skipped": reason}
    return ours.sweep(problem, seed, out, PRUNER)
