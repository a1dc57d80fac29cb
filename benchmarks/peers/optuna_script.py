"""Arm `optuna-script`: a plain script as Optuna's PyTorch Lightning example runs one,
`study.optimize(objective, n_trials, n_jobs=2)` (two threads of one process),
optuna-integration's `PyTorchLightningPruningCallback` and `MedianPruner()` with its defaults.
The objective composes each trial's config from our YAML (`hydra.compose`) and trains it with
`cifar_sweep.train.train`; the sampler is our TPE (conf/sweeper/tpe.yaml), as in every arm.

    python -m benchmarks.peers.optuna_script --trials 16 --jobs 2 --threads 1 \\
        --storage sqlite:///out/studies.db --out out +experiment=nas_hyperband seed=0 ...
"""

import argparse
import importlib.util
import sys
import threading
from pathlib import Path

from benchmarks.peers import record
from benchmarks.peers.problem import Problem
from benchmarks.peers.process import launch

NAME = "optuna-script"
HOW = "`study.optimize(n_jobs=2)`, PyTorchLightningPruningCallback, MedianPruner"
SAMPLERS = ("optuna.samplers.*",)  # what conf/sweeper/ may name


def main(argv: list[str]) -> None:
    import optuna
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from optuna_integration import PyTorchLightningPruningCallback

    from benchmarks.peers import space
    from cifar_sweep.config_dir import CONF
    from cifar_sweep.train import train

    p = argparse.ArgumentParser(prog="python -m benchmarks.peers.optuna_script")
    for flag in ("--trials", "--jobs", "--threads"):
        p.add_argument(flag, type=int, required=True)
    p.add_argument("--storage", required=True)
    p.add_argument("--out", type=Path, required=True)
    args, overrides = p.parse_known_args(argv)
    torch.set_num_threads(args.threads)
    composing = threading.Lock()  # Hydra's compose uses one global instance: a trial at a time

    def objective(trial: optuna.Trial) -> float:
        with composing:
            cfg = compose("config", overrides=[*overrides, *space.suggest(trial)])
        prune = PyTorchLightningPruningCallback(trial, monitor=cfg.objective)
        metrics = train(cfg, args.out / "trials" / str(trial.number), [prune], test=False)
        return metrics[cfg.objective]

    with initialize_config_dir(str(CONF)):
        sweep = compose("config", overrides=overrides, return_hydra_config=True)
        study = optuna.create_study(
            storage=args.storage,
            sampler=instantiate(sweep.hydra.sweeper.sampler, _execution_whitelist_=SAMPLERS),
            pruner=optuna.pruners.MedianPruner(),
            direction=sweep.hydra.sweeper.direction,
        )
        study.optimize(objective, n_trials=args.trials, n_jobs=args.jobs)
    print(f"best {study.best_value} {study.best_params}")


def run(problem: Problem, seed: int, out: Path) -> dict:
    if importlib.util.find_spec("optuna_integration") is None:
        reason = "optuna_integration not installed: pip install -e '.[peers]'"
        return {"seed": seed, "skipped": reason}
    storage = f"sqlite:///{out / 'studies.db'}"
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.peers.optuna_script",
        f"--trials={problem.trials}",
        f"--jobs={problem.concurrency}",
        f"--threads={problem.threads}",
        f"--storage={storage}",
        f"--out={out}",
        f"+experiment={problem.experiment}",
        *problem.trial(seed),
    ]
    t0, wall = launch(problem, cmd, out)
    trials = record.from_study(storage, t0)
    return record.summarize(seed, wall, trials, concurrency=problem.concurrency)


if __name__ == "__main__":
    main(sys.argv[1:])
