"""Arm `ray-tune`: Ray Tune (the `peers` extra) as its ASHA guide runs it: a `Tuner` over a
function trainable with 1 CPU each, `ASHAScheduler(max_t=epochs, grace_period=1,
reduction_factor=3)`, `OptunaSearch` (our TPE from conf/sweeper/tpe.yaml, our space define-by-run)
and at most `concurrency` trials at once, on a local Ray of `concurrency` CPUs started by the
script (its own processes share the cores, as a user's would). The trainable composes its config
from our YAML (`hydra.compose`) and trains it with `cifar_sweep.train.train`; ASHA stops a trial
by ending its process.

    python -m benchmarks.peers.ray_tune --trials 16 --epochs 6 --concurrency 2 --threads 1 \\
        --out out +experiment=nas_hyperband seed=0 ...
"""

import argparse
import importlib.util
import json
import sys
import time
from functools import partial
from pathlib import Path

from benchmarks.peers import record
from benchmarks.peers.problem import Problem
from benchmarks.peers.process import launch

NAME = "ray-tune"
HOW = "`Tuner`, ASHA (grace 1, factor 3), OptunaSearch, 2 trials of 1 CPU"
SAMPLERS = ("optuna.samplers.*",)  # what conf/sweeper/ may name
MODES = {"maximize": "max", "minimize": "min"}


def trainable(config: dict, *, overrides: list[str], threads: int) -> None:
    """One trial in a Ray worker: our config with the suggested values, trained, reported."""
    started = time.time()  # the worker has the trial: from here its imports are the trial's
    import lightning as L
    import torch
    from hydra import compose, initialize_config_dir
    from ray import tune

    from cifar_sweep.config_dir import CONF
    from cifar_sweep.train import train

    torch.set_num_threads(threads)

    class ReportToTune(L.Callback):
        """Each validation's objective and wall time to Tune. Ray's TuneReportCheckpointCallback
        reports Lightning's metrics alone, and the anytime curve needs the time of each."""

        def __init__(self, monitor: str):
            self.monitor = monitor

        def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
            if not trainer.sanity_checking:
                value = float(trainer.callback_metrics[self.monitor])
                tune.report({self.monitor: value, "wall": time.time(), "started": started})

    with initialize_config_dir(str(CONF)):
        cfg = compose("config", overrides=[*overrides, *(f"{k}={v}" for k, v in config.items())])
    out = Path(tune.get_context().get_trial_dir())
    train(cfg, out / "run", [ReportToTune(cfg.objective)], test=False)


def define_by_run(trial) -> None:
    from benchmarks.peers import space

    space.suggest(trial)


def main(argv: list[str]) -> None:
    import ray
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from cifar_sweep.config_dir import CONF

    p = argparse.ArgumentParser(prog="python -m benchmarks.peers.ray_tune")
    for flag in ("--trials", "--epochs", "--concurrency", "--threads"):
        p.add_argument(flag, type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    args, overrides = p.parse_known_args(argv)
    with initialize_config_dir(str(CONF)):
        sweep = compose("config", overrides=overrides, return_hydra_config=True)
    metric, mode = sweep.objective, MODES[sweep.hydra.sweeper.direction]
    sampler = instantiate(sweep.hydra.sweeper.sampler, _execution_whitelist_=SAMPLERS)
    ray.init(num_cpus=args.concurrency, include_dashboard=False)
    tuner = tune.Tuner(
        tune.with_resources(
            partial(trainable, overrides=overrides, threads=args.threads), {"cpu": args.threads}
        ),
        tune_config=tune.TuneConfig(
            metric=metric,
            mode=mode,
            search_alg=OptunaSearch(define_by_run, metric=metric, mode=mode, sampler=sampler),
            scheduler=ASHAScheduler(max_t=args.epochs, grace_period=1, reduction_factor=3),
            num_samples=args.trials,
            max_concurrent_trials=args.concurrency,
        ),
        run_config=tune.RunConfig(storage_path=str(args.out / "ray"), name="tune", verbose=0),
    )
    results = tuner.fit()
    trials = []
    for result in results:
        rows = result.metrics_dataframe
        reported = rows is not None and len(rows) > 0 and metric in rows
        trials.append(
            {
                "started": float(rows["started"].iloc[0]) if reported else None,
                "ended": float(rows["wall"].iloc[-1]) if reported else None,
                "value": float(rows[metric].iloc[-1]) if reported else None,
                "epochs": len(rows) if reported else 0,
                "error": None if result.error is None else str(result.error)[:300],
            }
        )
    (args.out / "trials.json").write_text(json.dumps(trials, indent=1))
    ray.shutdown()


def run(problem: Problem, seed: int, out: Path) -> dict:
    if importlib.util.find_spec("ray") is None:
        return {"seed": seed, "skipped": "ray not installed: pip install -e '.[peers]'"}
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.peers.ray_tune",
        f"--trials={problem.trials}",
        f"--epochs={problem.epochs}",
        f"--concurrency={problem.concurrency}",
        f"--threads={problem.threads}",
        f"--out={out}",
        f"+experiment={problem.experiment}",
        *problem.trial(seed),
    ]
    t0, wall = launch(problem, cmd, out)
    start = t0.timestamp()
    trials = []
    for t in json.loads((out / "trials.json").read_text()):
        if t["started"] is None:
            state, begin, end = "FAIL", 0.0, 0.0
        else:
            state = (
                "FAIL" if t["error"] else "COMPLETE" if t["epochs"] >= problem.epochs else "PRUNED"
            )
            begin, end = t["started"] - start, t["ended"] - start
        value = None if state == "FAIL" else t["value"]
        trials.append(
            record.trial(
                start=begin, end=end, known=end, value=value, epochs=t["epochs"], state=state
            )
        )
    return record.summarize(seed, wall, trials, concurrency=problem.concurrency)


if __name__ == "__main__":
    main(sys.argv[1:])
