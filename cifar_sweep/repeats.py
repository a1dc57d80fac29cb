"""Seed repeats (`repeats: k`): one run per seed seed..seed+k-1, and the mean and std of each
metric over them, so a sweep compares recipes rather than lucky seeds."""

import copy
import json
import statistics
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig


def seeds(cfg: DictConfig) -> list[int]:
    return list(range(cfg.seed, cfg.seed + cfg.repeats))


def pruned(callbacks: list) -> bool:
    """Whether the pruner's callback (sweep.pruning.ReportToTrial) stopped the run: the trial's
    other seeds or folds would be work thrown away."""
    return any(getattr(c, "pruned_epoch", None) is not None for c in callbacks)


def repeat(cfg: DictConfig, out_dir: Path, callbacks: list, run: Callable) -> dict:
    """`run(cfg, out_dir, callbacks)` once per seed, in out_dir/seed<s>/; the pruner's callbacks
    see the first seed only, and a pruned first seed ends the repeats. Writes and returns each
    metric's mean, and its std as <name>_std."""
    runs = []
    for i, seed in enumerate(seeds(cfg)):
        seed_cfg = copy.deepcopy(cfg)  # the caller's config stays as it was
        seed_cfg.seed = seed
        runs.append(run(seed_cfg, out_dir / f"seed{seed}", callbacks if i == 0 else []))
        if pruned(callbacks):
            break
    keys = sorted(set.intersection(*(set(r) for r in runs)))
    out = {k: statistics.fmean(r[k] for r in runs) for k in keys}
    out |= {f"{k}_std": statistics.pstdev(r[k] for r in runs) for k in keys}
    out["repeats"] = len(runs)
    (out_dir / "metrics.json").write_text(json.dumps(out, indent=2, sort_keys=True))
    return out
