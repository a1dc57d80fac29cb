"""The results file, `peers-<cpu>.json`: per arm, one entry per seed in parallel lists, written
whole after every study (a stopped benchmark keeps what ended), and the target with every arm's
time to it recomputed on each write.

The target is the median over seeds of the stock sweeper's final best: "how long until we have
what the stock sweeper ends with". An arm's time to target is the first point of its anytime
curve at or above it; a study that never gets there records its wall time, and `reached` says so.
"""

import json
import os
import statistics
import sys
from pathlib import Path

from benchmarks.peers import stock

# the record's keys each arm keeps, one entry per seed (curves: record["curve"])
PER_SEED = ("wall_s", "best_val", "epochs", "pruned", "failed", "setup_s", "idle_core_s")


def load(path: Path) -> dict:
    """A results file (an empty one when there is none yet); a one-line error when unreadable."""
    if not path.exists():
        return {"target": None, "arms": {}}
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        sys.exit(f"error: {path}: not JSON ({e})")
    if not isinstance(results, dict) or not isinstance(results.get("arms"), dict):
        sys.exit(f'error: {path}: not a peers results file (no "arms" object)')
    return results


def save(path: Path, results: dict) -> None:
    """Write whole or not at all: a kill mid-write leaves the last file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(results, indent=1) + "\n")
    os.replace(partial, path)


def done(results: dict, arm: str, seed: int) -> bool:
    return seed in results["arms"].get(arm, {}).get("seeds", [])


def _arm(results: dict, arm: str) -> dict:
    empty = {"seeds": [], **{k: [] for k in PER_SEED}, "curves": [], "trials": []}
    return results["arms"].setdefault(arm, empty)


def add(results: dict, arm: str, record: dict) -> None:
    """Record one arm's study (its seed's entries, in seed order) and retarget."""
    a = _arm(results, arm)
    a.pop("skipped", None)
    a["seeds"].append(record["seed"])
    for key in PER_SEED:
        a[key].append(record[key])
    a["curves"].append(record["curve"])
    a["trials"].append(record["trials"])
    order = sorted(range(len(a["seeds"])), key=a["seeds"].__getitem__)
    for key in ("seeds", *PER_SEED, "curves", "trials"):
        a[key] = [a[key][i] for i in order]
    retarget(results)


def skip(results: dict, arm: str, reason: str) -> None:
    """An arm that cannot run here, with the reason in a line."""
    _arm(results, arm)["skipped"] = reason


def time_to(curve: list, wall_s: float, target: float) -> tuple[float, bool]:
    """When `curve` first reaches `target`; (its wall time, False) when it never does."""
    for seconds, best in curve:
        if best >= target:
            return seconds, True
    return wall_s, False


def retarget(results: dict) -> None:
    """The target from the stock sweeper's seeds recorded so far, and each arm's time to it."""
    finals = [b for b in results["arms"].get(stock.NAME, {}).get("best_val", []) if b is not None]
    target = statistics.median(finals) if finals else None
    results["target"] = target
    for a in results["arms"].values():
        reached = [time_to(c, w, target) if target is not None else (None, False)
                   for c, w in zip(a["curves"], a["wall_s"], strict=True)]  # fmt: skip
        a["time_to_target_s"] = [t for t, _ in reached]
        a["reached"] = [r for _, r in reached]
