"""Arm `hydra-optuna-sweeper`: the stock sweeper (hydra-optuna-sweeper, as installed) in our own
app, as lightning-hydra-template's `hparams_search` runs it: `hydra/sweeper=optuna` with Hydra's
joblib launcher, `n_jobs` trials launched as a batch and waited for together, no pruning.

Our config.yaml carries our sweeper's keys (workers, heartbeats, the pruner and search-space
groups), which the stock sweeper's schema refuses; so this arm writes, under its folder, a copy of
config.yaml and of the experiment without them (`--config-dir`), and gives the stock sweeper the
experiment's search space as its own `params` and `custom_search_space` (space.per_layer). Every
other value still comes from conf/.

A batch's results reach the study only when its last job ends: each trial's point on the curve is
that moment (what the study shows). A trial is busy from its job's start in a joblib worker (Hydra
writes the job's .hydra/config.yaml) until the job wrote metrics.json.
"""

import dataclasses
import sys
from datetime import datetime
from pathlib import Path

from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf
from omegaconf import DictConfig, OmegaConf

from benchmarks.peers import record
from benchmarks.peers.problem import Problem
from benchmarks.peers.process import launch
from cifar_sweep.config_dir import CONF

NAME = "hydra-optuna-sweeper"
HOW = "`hydra/sweeper=optuna`, joblib launcher, batches of 2, no pruning"
# defaults entries of our sweeper: groups packaged into hydra.sweeper, and the sweeper itself
OURS = {"pruner", "search_space", "override /pruner", "override /search_space"}
OURS |= {"override hydra/sweeper"}


def _defaults(node: DictConfig) -> list:
    """A defaults list without our sweeper's groups."""
    keep = []
    for entry in node.get("defaults", []):
        key = next(iter(entry)) if isinstance(entry, DictConfig) else entry
        if key not in OURS:
            keep.append(entry)
    return keep


def write_config(conf: Path, experiment: str) -> str:
    """config.yaml and the experiment for the stock sweeper, under `conf`: the experiment's name."""
    stock_keys = {f.name for f in dataclasses.fields(OptunaSweeperConf)}
    main = OmegaConf.load(CONF / "config.yaml")
    main.defaults = [
        *_defaults(main),
        {"override hydra/sweeper": "optuna"},
        {"override hydra/launcher": "joblib"},
    ]
    sweeper = main.hydra.sweeper
    main.hydra.sweeper = {k: v for k, v in sweeper.items() if k in stock_keys}
    exp = OmegaConf.load(CONF / "experiment" / f"{experiment}.yaml")
    space = OmegaConf.load(CONF / "search_space" / "nas.yaml")
    exp.defaults = _defaults(exp)
    exp.hydra.sweeper.params = space.params
    exp.hydra.sweeper.custom_search_space = "benchmarks.peers.space.per_layer"
    (conf / "experiment").mkdir(parents=True, exist_ok=True)
    OmegaConf.save(main, conf / "stock.yaml")
    name = f"{experiment}_stock"
    text = "# @package _global_\n" + OmegaConf.to_yaml(exp)
    (conf / "experiment" / f"{name}.yaml").write_text(text)
    return name


def run(problem: Problem, seed: int, out: Path) -> dict:
    experiment = write_config(out / "conf", problem.experiment)
    storage = f"sqlite:///{out / 'studies.db'}"
    sweep = out / "sweep"
    cmd = [
        sys.executable,
        "-m",
        "cifar_sweep",
        "--config-dir",
        str(out / "conf"),
        "--config-name",
        "stock",
        "-m",
        f"+experiment={experiment}",
        *problem.trial(seed),
        f"hydra.sweeper.n_trials={problem.trials}",
        f"hydra.sweeper.n_jobs={problem.concurrency}",
        f"hydra.launcher.n_jobs={problem.concurrency}",
        f"hydra.sweeper.storage={storage}",
        f"hydra.sweep.dir={sweep}",
    ]
    t0, wall = launch(problem, cmd, out)

    def written(t, name: str) -> datetime | None:  # a job's folder is its trial's number
        path = sweep / str(t.number) / name
        return datetime.fromtimestamp(path.stat().st_mtime) if path.exists() else None

    def epochs(t) -> int:
        return int(record.metrics(sweep / str(t.number)).get("epochs", 0))

    trials = record.from_study(
        storage,
        t0,
        start_of=lambda t: written(t, ".hydra/config.yaml"),
        end_of=lambda t: written(t, "metrics.json"),
        epochs_of=epochs,
    )
    return record.summarize(seed, wall, trials, concurrency=problem.concurrency)
