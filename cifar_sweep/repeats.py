"""Seed repeats (`repeats: k`): one run per seed seed..seed+k-1, and the mean and std of each
metric over them, so a sweep compares recipes rather than lucky seeds."""

import copy
import json
import statistics
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig

from cifar_sweep.trackers.runs import part

# the evaluation report's headline figures, aggregated over seeds or folds
EVALUATED = ("accuracy", "macro_f1", "macro_auc_ovr")


def seeds(cfg: DictConfig) -> list[int]:
    return list(range(cfg.seed, cfg.seed + cfg.repeats))


def pruned(callbacks: list) -> bool:
    """Whether the pruner's callback (sweep.pruning.ReportToTrial) stopped the run: the trial's
    other seeds or folds would be work thrown away."""
    return any(getattr(c, "pruned_epoch", None) is not None for c in callbacks)


def summarize(runs: list[dict]) -> dict:
    """Each metric's mean over the runs, and its std as <name>_std; a count (epochs, params)
    stays an integer when its mean is one."""
    out = {}
    for k in sorted(set.intersection(*(set(r) for r in runs))):
        values = [r[k] for r in runs]
        mean = statistics.fmean(values)
        integral = all(isinstance(v, int) and not isinstance(v, bool) for v in values)
        out[k] = int(mean) if integral and mean.is_integer() else mean
        out[f"{k}_std"] = statistics.pstdev(values)
    return out


def aggregate_evaluations(run_dirs: list[Path], out_dir: Path) -> None:
    """evaluation.json in out_dir: each run's headline figures (per seed or fold) and their mean
    and std; each run's own full report stays in its folder."""
    reports = {d.name: json.loads((d / "evaluation.json").read_text()) for d in run_dirs}
    if not reports:
        return
    per_run = {name: {k: r[k] for k in EVALUATED} for name, r in reports.items()}
    aggregated = summarize(list(per_run.values()))
    (out_dir / "evaluation.json").write_text(
        json.dumps({**aggregated, "per_run": per_run}, indent=2)
    )


def repeat(
    cfg: DictConfig, out_dir: Path, callbacks: list, run: Callable, *, evaluate: bool
) -> dict:
    """`run(cfg, out_dir, callbacks)` once per seed, in out_dir/seed<s>/; the pruner's callbacks
    see the first seed only, and a pruned first seed ends the repeats. Writes and returns each
    metric's mean, and its std as <name>_std; with `evaluate`, the seeds' evaluation reports
    aggregated too."""
    runs, dirs = [], []
    for i, seed in enumerate(seeds(cfg)):
        seed_cfg = copy.deepcopy(cfg)  # the caller's config stays as it was
        seed_cfg.seed = seed
        if cfg.get("resume"):  # each seed goes on from its own folder's last epoch
            seed_cfg.resume = str(Path(cfg.resume) / f"seed{seed}")
        dirs.append(out_dir / f"seed{seed}")
        with part(seed_cfg, f"seed{seed}", dirs[-1]) as seed_cfg:  # its own tracker runs
            runs.append(run(seed_cfg, dirs[-1], callbacks if i == 0 else every_run(callbacks)))
        if pruned(callbacks):
            break
    return write_summary(runs, dirs, out_dir, count="repeats", evaluate=evaluate)


def every_run(callbacks: list | None) -> list:
    """The callbacks every seed or fold of a trial gets (its heartbeat); the pruner's report
    goes with the first only."""
    return [c for c in callbacks or [] if getattr(c, "every_run", False)]


def write_summary(runs: list, dirs: list, out_dir: Path, *, count: str, evaluate: bool) -> dict:
    """The seeds' or folds' metrics as mean and <name>_std, with how many ran under `count`,
    written to out_dir/metrics.json; with `evaluate`, their evaluation reports aggregated."""
    out = summarize(runs)
    out[count] = len(runs)
    (out_dir / "metrics.json").write_text(json.dumps(out, indent=2, sort_keys=True))
    if evaluate:
        aggregate_evaluations(dirs, out_dir)
    return out
