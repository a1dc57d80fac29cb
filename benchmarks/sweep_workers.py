"""Sweep wall time with 1, 2, ... worker processes on the same study size (hydra.sweeper.workers).

Each row is one `python -m cifar_sweep -m ...` run, as a user types it, on its own sqlite study:
the same trials (count, model, data) with a different number of workers. Prints wall time,
trials per minute, and the busy fraction (time inside trials over workers x wall time).

    python -m benchmarks.sweep_workers             # CPU: 8 small trials, 1 and 2 workers
    python -m benchmarks.sweep_workers --workers 1,2,4 trainer.max_epochs=2
"""

import argparse
import tempfile
from pathlib import Path

from benchmarks.sweep_pruning import NAS, data, sweep  # on a GPU: dataset=cifar10_folder ...

ROOT = Path(__file__).resolve().parents[1]
SWEEP = [
    *NAS,
    "trainer.max_epochs=3",
    "trainer.progress_bar=false",
    "hydra.sweeper.n_trials=8",
    "sweeper=random",
]


def run(workers: int, overrides: list[str], out: Path, timeout: float | None = None) -> dict:
    """One sweep of SWEEP + `overrides` with `workers` workers, in `out`: its figures."""
    wall, study = sweep([*SWEEP, *overrides, f"hydra.sweeper.workers={workers}"], out, timeout)
    trials = study.trials
    busy = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials)
    return {
        "trials": len(trials),
        "wall_s": wall,
        "per_min": 60 * len(trials) / wall,
        "busy": busy / (workers * wall),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    args, overrides = parser.parse_known_args()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in map(int, args.workers.split(",")):
            (Path(tmp) / str(n)).mkdir()
            rows[n] = run(n, [*data(overrides), *overrides], Path(tmp) / str(n))
    print(" ".join([*SWEEP, *data(overrides), *overrides]))
    print(f"{'workers':>8}{'trials':>8}{'wall s':>9}{'trials/min':>12}{'busy':>7}{'speed-up':>10}")
    first = next(iter(rows.values()))
    for n, r in rows.items():
        print(
            f"{n:>8}{r['trials']:>8}{r['wall_s']:>9.1f}{r['per_min']:>12.1f}{r['busy']:>7.2f}"
            f"{first['wall_s'] / r['wall_s']:>10.2f}"
        )


if __name__ == "__main__":
    main()
