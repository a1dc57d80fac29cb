"""One arm's study with one seed, as the results file keeps it: its trials' times and values, the
anytime curve and the totals drawn from them.

What counts, for every arm alike: each trial that ended (completed, or stopped by its pruner or
scheduler) with its `val/acc_best` at the last epoch it trained, that is the best validation
accuracy it reached; a failed trial counts for nothing. Its point on the curve is the moment its
orchestrator held the result (`known`: an Optuna study's completion time, the moment of Ray's
last report), in seconds since the arm's command started. A trial is busy from `start` to `end`
as its orchestrator records them (the stock sweeper's jobs: their own folders, stock.py); idle
core-seconds are concurrency x wall time minus the busy time.

A configuration may run as several trials (a retry, or a promotion that goes on from a paused
trial's checkpoint, each a segment of one `point`): an epoch counts once, for the segment that
trained it, although a segment carries its point's earlier reports; a point counts as pruned when
its last segment was.
"""

import json
import math
from datetime import datetime
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from cifar_sweep.sweep.contract import point_of


def trial(
    *, start: float, end: float, known: float, value, epochs: int, state: str, point=None
) -> dict:
    """One trial: seconds since the arm started, its objective (None: none), epochs it trained,
    how it ended (COMPLETE, PRUNED, FAIL) and the configuration it ran (None: its own)."""
    return {
        "point": point,
        "start": round(start, 2),
        "end": round(end, 2),
        "known": round(known, 2),
        "value": value,
        "epochs": epochs,
        "state": state,
    }


def value(t: FrozenTrial) -> float | None:
    """A finished Optuna trial's objective: its value, or a pruned one's last reported value."""
    if t.state == TrialState.COMPLETE:
        return t.value
    if t.state == TrialState.PRUNED:
        return t.value if t.value is not None else t.intermediate_values.get(t.last_step)
    return None


def from_study(
    storage: str, t0: datetime, *, start_of=None, end_of=None, epochs_of=None
) -> list[dict]:
    """The trials of the one study in `storage`; Optuna's times are local and naive, as `t0`.
    `start_of(t)`, `end_of(t)` (datetimes, or None) and `epochs_of(t)`: where the arm knows
    better than the study."""
    [name] = optuna.get_all_study_names(storage)
    study = optuna.load_study(study_name=name, storage=storage)

    def since(moment: datetime) -> float:
        return (moment - t0).total_seconds()

    rows, seen = [], {}
    for t in study.get_trials(deepcopy=False):
        if t.datetime_start is None:
            continue  # waiting in the queue, never started
        known = t.datetime_complete or t.datetime_start
        trained = seen.setdefault(point_of(t), set())  # the point's epochs before this segment
        new = set(t.intermediate_values) - trained
        trained |= new
        rows.append(
            trial(
                start=since((start_of(t) if start_of else None) or t.datetime_start),
                end=since((end_of(t) if end_of else None) or known),
                known=since(known),
                value=value(t),
                epochs=epochs_of(t) if epochs_of else len(new),
                state=t.state.name,
                point=point_of(t),
            )
        )
    return rows


def metrics(folder: Path) -> dict:
    """A run folder's metrics.json ({} when the run wrote none)."""
    path = folder / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else {}


def summarize(seed: int, wall_s: float, trials: list[dict], *, concurrency: int) -> dict:
    """The record of one study: the trials, the anytime curve and the totals."""
    ended = sorted(
        (t for t in trials if t["value"] is not None and t["state"] != "FAIL"),
        key=lambda t: t["known"],
    )
    curve, best = [], -math.inf
    for t in ended:
        if t["value"] > best:
            best = t["value"]
            curve.append([t["known"], best])
    busy = sum(t["end"] - t["start"] for t in trials)
    last = {}  # each point's last segment
    for i, t in enumerate(sorted(trials, key=lambda t: t["known"])):
        last[("trial", i) if t["point"] is None else t["point"]] = t["state"]
    return {
        "seed": seed,
        "wall_s": round(wall_s, 1),
        "best_val": best if curve else None,
        "curve": curve,
        "epochs": sum(t["epochs"] for t in trials),
        "pruned": sum(state == "PRUNED" for state in last.values()),
        "failed": sum(t["state"] == "FAIL" for t in trials),
        "setup_s": round(min((t["start"] for t in trials), default=wall_s), 1),
        "idle_core_s": round(concurrency * wall_s - busy, 1),
        "trials": trials,
    }
