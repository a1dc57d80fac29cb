"""Study reports: a printed table, optimization_results.yaml, trials.csv and Optuna's plots.

python -m cifar_sweep.report sqlite:///outputs/studies.db [study] [--out DIR]
"""

import argparse
import logging
import sys
import warnings
from functools import partial
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from optuna.trial import TrialState  # noqa: E402
from optuna.visualization import matplotlib as plots  # noqa: E402

from cifar_sweep import timeline  # noqa: E402
from cifar_sweep.study import objective_names  # noqa: E402

log = logging.getLogger(__name__)
CONTOUR_PARAMS = 3  # the contour plot shows the 3 most important parameters, pairwise
SINGLE = {
    "optimization_history": plots.plot_optimization_history,
    "param_importances": plots.plot_param_importances,
    "parallel_coordinate": plots.plot_parallel_coordinate,
    "slice": plots.plot_slice,
    "contour": plots.plot_contour,
    "intermediate_values": plots.plot_intermediate_values,
}


def table(study: optuna.Study) -> str:
    """Trials by state, best value(s) and params, wall time."""
    trials = study.get_trials(deepcopy=False)
    states = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    wall = (max(ends) - min(starts)).total_seconds() if starts and ends else 0.0
    lines = [
        f"study {study.study_name}: {len(trials)} trials  "
        + "  ".join(f"{k}={v}" for k, v in states.items() if v),
        f"wall time {wall:.1f} s",
    ]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        lines.append("no completed trial yet")
    elif len(study.directions) == 1:
        best = study.best_trial
        lines += [
            f"best value {best.value:.6g} (trial {best.number})",
            f"best params {best.params}",
        ]
    else:
        lines.append(f"Pareto front: {len(study.best_trials)} trials")
        lines += [
            f"  trial {t.number}: values {t.values} params {t.params}" for t in study.best_trials
        ]
    return "\n".join(lines)


def results(study: optuna.Study) -> dict:
    """What the stock sweeper writes to optimization_results.yaml."""
    if not any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        return {"name": "optuna", "study": study.study_name, "best_params": None}
    if len(study.directions) == 1:
        best = study.best_trial
        return {
            "name": "optuna",
            "study": study.study_name,
            "best_params": best.params,
            "best_value": best.value,
            "best_trial": best.number,
        }
    front = [
        {"number": t.number, "params": t.params, "values": t.values} for t in study.best_trials
    ]
    return {"name": "optuna", "study": study.study_name, "solutions": front}


def write(study: optuna.Study, out_dir) -> list[Path]:
    """Print the table; write optimization_results.yaml, trials.csv and plots/*.png (Optuna's,
    and the workers' timeline) to out_dir."""
    names = objective_names(study.user_attrs.get("objective", []))  # set by the sweeper
    out = Path(out_dir)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    print(table(study), flush=True)
    OmegaConf.save(OmegaConf.create(results(study)), out / "optimization_results.yaml")
    study.trials_dataframe().to_csv(out / "trials.csv", index=False)
    if len(study.directions) > 1:
        todo = {"pareto_front": lambda s: plots.plot_pareto_front(s, target_names=names or None)}
    else:
        target = names[0] if names else "Objective Value"
        todo = {name: partial(f, target_name=target) for name, f in SINGLE.items()}
        todo["intermediate_values"] = plots.plot_intermediate_values
        todo["contour"] = partial(plots.plot_contour, params=_top_params(study), target_name=target)
    todo["timeline"] = timeline.plot
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # "unique value length" chatter
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # experimental-API and few-trials notes, not errors
            return [path for name, plot in todo.items() if (path := _plot(study, name, plot, out))]
    finally:
        optuna.logging.set_verbosity(verbosity)


def _top_params(study: optuna.Study) -> list[str]:
    """The CONTOUR_PARAMS most important parameters (the first by name while importances cannot
    be computed): the contour matrix grows with the square of its parameters, 4 s for 7."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "too few trials: importances equal" is fine here
            ranked = list(optuna.importance.get_param_importances(study))
    except Exception:  # e.g. a parameter space that changed between trials
        ranked = []
    return (ranked or sorted({p for t in study.trials for p in t.params}))[:CONTOUR_PARAMS]


def _plot(study: optuna.Study, name: str, plot, out: Path) -> Path | None:
    """Draw one plot into out/plots/<name>.png; say why in the log when it cannot be drawn."""
    try:
        ax = plot(study)
    except Exception as e:  # e.g. importances need 2 completed trials
        log.warning("plot %s not drawn: %s", name, e)
        return None
    fig = ax.flat[0].figure if hasattr(ax, "flat") else ax.figure
    if name == "parallel_coordinate":  # one axis per parameter: room for their labels
        n_params = len({p for t in study.trials for p in t.params})
        fig.set_size_inches(max(6.4, 1.4 * (n_params + 1)), 5)
    path = out / "plots" / f"{name}.png"
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Report on an Optuna study.")
    parser.add_argument("storage", help="e.g. sqlite:///outputs/studies.db")
    parser.add_argument("study", nargs="?", help="study name (optional if there is one)")
    parser.add_argument("--out", help="folder for the files (default: outputs/reports/<study>)")
    args = parser.parse_args(argv)
    names = optuna.get_all_study_names(args.storage)
    if args.study is None and len(names) != 1:
        sys.exit(f"error: name one of the {len(names)} studies in {args.storage}: {names}")
    name = args.study or names[0]
    if name not in names:
        sys.exit(f"error: no study {name!r} in {args.storage}; studies: {names}")
    study = optuna.load_study(study_name=name, storage=args.storage)
    out = Path(args.out or Path("outputs") / "reports" / name)
    files = write(study, out)
    print(f"wrote {out}/optimization_results.yaml, trials.csv and {len(files)} plots")


if __name__ == "__main__":
    main()
