"""Hyperband vs no pruning on the NAS space (2-4 conv layers, 16-64 channels), same trial count;
and what MLflow costs a trial.

Runs the same TPE study as a user would (`python -m cifar_sweep -m ...`), each time in its own
sqlite storage: with hyperband, then in turn (ROUNDS times) without pruning, and without pruning
logged to TensorBoard and MLflow's embedded SQLite store (`logger=[tensorboard,mlflow]`); prints
for each: trials complete/pruned, epochs trained, best value, wall time, and
the sweeper's overhead per trial (wall time not spent inside trials) and the job's: "job s/trial"
is a trial's duration minus the run's own time/total_s (Hydra's job set-up, reopening the trial),
"beyond epochs s/trial" its duration minus its training and validation epochs (time/epochs_s):
everything else a trial costs (that, plus data, model and Trainer set-up, checkpoint, metrics).
Both over the completed trials after the first (which also pays the Lightning and MLflow imports).
MLflow's cost is its arm's "beyond epochs" and "between" minus those of the arm run just before
it without MLflow, the median over the rounds: the trial's run made, its epochs logged, its
files and end recorded (the end comes after Optuna's tell, so "between" holds it).
"sweeper s/trial" spreads the fixed costs (start-up, the end-of-sweep report) over the trials;
"between s" is the mean gap between one trial's end and the next one's start (tell, stale
check, ask, suggest).

    python -m benchmarks.sweep_pruning                 # CPU scale: generated data, 12 trials
    python -m benchmarks.sweep_pruning dataset=cifar10_folder hydra.sweeper.n_trials=10
"""

import json
import statistics
import subprocess
import sys
import tempfile
import time
from itertools import pairwise
from pathlib import Path

import optuna
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[1]
NAS = ["model=nas_cnn", "search_space=nas", "optimizer=adam", "scheduler=constant"]
CPU_DATA = [  # a small generated set: 10 classes of 16x16 images
    "dataset=synthetic",
    "dataset.image_size=16",
    "dataset.num_classes=10",
    "dataset.train_per_class=100",
    "dataset.val_size=200",
]
COMMON = [
    *NAS,
    "trainer.max_epochs=6",
    "trainer.progress_bar=false",
    "hydra.sweeper.n_trials=12",
]


def sweep(args: list[str], out: Path, timeout: float | None = None) -> tuple[float, optuna.Study]:
    """`python -m cifar_sweep -m <args>` on its own sqlite study in `out`: (wall s, the study)."""
    storage = f"sqlite:///{out / 'studies.db'}"
    own = [f"hydra.sweeper.storage={storage}", f"hydra.sweep.dir={out / 'sweep'}"]
    cmd = [sys.executable, "-m", "cifar_sweep", "-m", *args, *own]
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, timeout=timeout)
    wall = time.perf_counter() - t0
    [name] = optuna.get_all_study_names(storage)
    return wall, optuna.load_study(study_name=name, storage=storage)


def data(overrides: list[str]) -> list[str]:
    """The generated set, unless the overrides name a dataset (dataset=...)."""
    named = any(o.startswith("dataset=") for o in overrides)
    return [] if named else [*CPU_DATA, "dataset.noise=0.8"]


# arm -> its overrides; an arm's folder is {out}
ARMS = {
    "hyperband": ["pruner=hyperband"],
    "none": ["pruner=none"],
    "none+mlflow": [
        "pruner=none",
        "logger=[tensorboard,mlflow]",
        "logger.mlflow.tracking_uri=sqlite:///{out}/mlflow.db",
    ],
}


def run(arm: str, overrides: list[str], out: Path) -> dict:
    own = [o.format(out=out) for o in ARMS[arm]]
    wall, study = sweep([*COMMON, *data(overrides), *own, *overrides], out)
    trials = study.trials
    in_trials = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials)
    beyond_job, beyond_epochs = [], []
    for t in trials:
        metrics = out / "sweep" / str(t.number) / "metrics.json"
        if t.state == TrialState.COMPLETE and metrics.exists():
            m = json.loads(metrics.read_text())
            duration = (t.datetime_complete - t.datetime_start).total_seconds()
            beyond_job.append(duration - m["time/total_s"])
            beyond_epochs.append(duration - m["time/epochs_s"])
    ordered = sorted(trials, key=lambda t: t.datetime_start)
    gaps = [(b.datetime_start - a.datetime_complete).total_seconds() for a, b in pairwise(ordered)]
    return {
        "between_s": sum(gaps) / len(gaps),
        "complete": sum(t.state == TrialState.COMPLETE for t in trials),
        "pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "epochs": sum(len(t.intermediate_values) for t in trials),
        "best": study.best_value,
        "wall_s": wall,
        "sweeper_s_per_trial": (wall - in_trials) / len(trials),
        "job_s_per_trial": sum(beyond_job[1:]) / max(1, len(beyond_job) - 1),
        "beyond_epochs_s_per_trial": sum(beyond_epochs[1:]) / max(1, len(beyond_epochs) - 1),
    }


ROUNDS = 3  # the two arms without pruning run in turn this often: other work on the machine
# comes and goes, and an MLflow figure from one pair of sweeps measured it more than MLflow


def main(overrides: list[str]) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        order = ["hyperband", *["none", "none+mlflow"] * ROUNDS]
        for i, arm in enumerate(order):
            (Path(tmp) / str(i)).mkdir()
            rows.append((arm, run(arm, overrides, Path(tmp) / str(i))))
    print(f"{' '.join([*COMMON, *data(overrides), *overrides])}")
    print(
        f"{'arm':<12}{'complete':>9}{'pruned':>8}{'epochs':>8}{'best':>8}{'wall s':>8}"
        f"{'sweeper s/trial':>17}{'between s':>11}{'job s/trial':>13}"
        f"{'beyond epochs s/trial':>23}"
    )
    for arm, r in rows:
        print(
            f"{arm:<12}{r['complete']:>9}{r['pruned']:>8}{r['epochs']:>8}{r['best']:>8.4f}"
            f"{r['wall_s']:>8.1f}{r['sweeper_s_per_trial']:>17.2f}{r['between_s']:>11.2f}"
            f"{r['job_s_per_trial']:>13.2f}{r['beyond_epochs_s_per_trial']:>23.2f}"
        )
    h, n = rows[0][1], rows[1][1]
    ratio_epochs, ratio_wall = h["epochs"] / n["epochs"], h["wall_s"] / n["wall_s"]
    print(f"hyperband/none: epochs {ratio_epochs:.2f}, wall {ratio_wall:.2f}")
    costs = []
    for (_, plain), (_, logged) in zip(rows[1::2], rows[2::2], strict=True):
        beyond = logged["beyond_epochs_s_per_trial"] - plain["beyond_epochs_s_per_trial"]
        costs.append(beyond + logged["between_s"] - plain["between_s"])
    print(
        f"mlflow: {statistics.median(costs):+.3f} s a trial over TensorBoard alone (median of "
        f"{ROUNDS} rounds: {', '.join(f'{c:+.3f}' for c in costs)}; beyond its epochs and "
        "between trials)"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
