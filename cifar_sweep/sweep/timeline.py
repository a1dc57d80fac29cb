"""The workers' timeline: one row per worker, one bar per trial, coloured by state; where
points ran in segments (retries, ASHA's promotions), each bar names its point.

Hand-written: Optuna's plot_timeline gives each trial its own row, which hides idle workers.
"""

from datetime import datetime

import matplotlib.pyplot as plt
import optuna
from matplotlib.patches import Patch
from optuna.trial import TrialState

from cifar_sweep.sweep.contract import IMPORTED, OWNER, classify, point_of

COLOURS = {
    TrialState.COMPLETE: "tab:blue",
    TrialState.PRUNED: "tab:orange",
    TrialState.FAIL: "tab:red",
    TrialState.RUNNING: "tab:green",
}


def _host(t: optuna.trial.FrozenTrial) -> str:
    return (t.user_attrs.get(OWNER) or {}).get("host", "?")


def _row(t: optuna.trial.FrozenTrial, hosts: int) -> str:
    worker = f"worker {(t.user_attrs.get(OWNER) or {}).get('worker', 0)}"
    return f"{_host(t)} {worker}" if hosts > 1 else worker


def plot(study: optuna.Study):
    """The Axes of the timeline of the study's trials that ran (not those a warm start copied)."""
    trials = [
        t for t in study.get_trials(deepcopy=False) if t.datetime_start and classify(t) != IMPORTED
    ]
    if not trials:
        raise ValueError("no trial has started")
    hosts = len({_host(t) for t in trials})
    rows = sorted({_row(t, hosts) for t in trials})
    t0 = min(t.datetime_start for t in trials)
    segments = len({point_of(t) for t in trials}) < len(trials)
    fig, ax = plt.subplots(figsize=(8, 1.5 + 0.4 * len(rows)))
    for t in trials:
        start = (t.datetime_start - t0).total_seconds()
        end = ((t.datetime_complete or datetime.now()) - t0).total_seconds()
        colour = COLOURS.get(t.state, "tab:gray")
        row = rows.index(_row(t, hosts))
        ax.barh(row, end - start, left=start, color=colour, edgecolor="k")
        if segments:  # a point's segments (retries, promotions) carry its number
            ax.text(start, row, f" {point_of(t)}", va="center", fontsize=7)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("seconds since the first trial started")
    ax.set_title(f"{study.study_name}: trials per worker")
    used = {t.state for t in trials}
    ax.legend(
        handles=[Patch(color=c, label=s.name.lower()) for s, c in COLOURS.items() if s in used],
        loc="upper right",
        fontsize=8,
    )
    return ax
