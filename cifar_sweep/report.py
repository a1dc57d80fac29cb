"""Study reports: a printed table, optimization_results.yaml, trials.csv and Optuna's plots.

python -m cifar_sweep.report [storage] [study] [--out DIR]; with no storage, the one sweeps write
to by default (hydra.sweeper.storage in conf/config.yaml); with no study and several there, a
list of them.
"""

import argparse
import sys
from collections import Counter
from pathlib import Path

import optuna
from omegaconf import OmegaConf
from optuna.trial import TrialState

from cifar_sweep.errors import did_you_mean
from cifar_sweep.sweep.contract import (
    OBJECTIVE,
    WARM_START,
    classify,
    objective_names,
    point_of,
)
from cifar_sweep.sweep.plots import draw


def table(study: optuna.Study) -> str:
    """Trials by class (states; a failure by its kind; warm-start copies apart), best value(s)
    and params, wall time."""
    trials = study.get_trials(deepcopy=False)
    states = Counter(map(classify, trials))
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    wall = (max(ends) - min(starts)).total_seconds() if starts and ends else 0.0
    lines = [
        f"study {study.study_name}: {len(trials)} trials  "
        + "  ".join(f"{k}={v}" for k, v in states.items() if v),
        f"wall time {wall:.1f} s",
    ]
    points = len({point_of(t) for t in trials})
    if points < len(trials):  # retries and promotions: segments of points run before
        lines.insert(1, f"{points} configurations; their retries and promotions are segments")
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        lines.append("no completed trial yet")
    elif len(study.directions) == 1:
        best = study.best_trial
        lines += [
            f"best value {best.value:.6g} (trial {best.number}{copied(best)})",
            f"best params {best.params}",
        ]
    else:
        lines.append(f"Pareto front: {len(study.best_trials)} trials")
        lines += [
            f"  trial {t.number}{copied(t)}: values [{', '.join(f'{v:.4g}' for v in t.values)}]"
            f" params {t.params}"
            for t in study.best_trials
        ]
    return "\n".join(lines)


def copied(trial: optuna.trial.FrozenTrial) -> str:
    """ ", copied from <study>#<n> by the warm start" for a trial that never ran in this study."""
    source = trial.user_attrs.get(WARM_START)
    return f", copied from {source} by the warm start, not run here" if source else ""


def headline(study: optuna.Study, names: list[str]) -> str:
    """The study's result in a few words: its best value, or the size of its Pareto front."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return "no completed trial"
    if len(study.directions) > 1:
        return f"Pareto front of {len(study.best_trials)} trials"
    best = study.best_trial
    name = names[0] if names else "value"
    return f"best {name}={best.value:.4g} (trial {best.number}{copied(best)})"


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


def write(study: optuna.Study, out_dir, *, plots: bool) -> list[Path]:
    """Print the table; write optimization_results.yaml, trials.csv and plots/*.png (Optuna's,
    and the workers' timeline, unless `plots` is false or no trial completed) to out_dir."""
    names = objective_names(study.user_attrs.get(OBJECTIVE, []))  # set by the sweeper
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    print(table(study), flush=True)
    OmegaConf.save(OmegaConf.create(results(study)), out / "optimization_results.yaml")
    trials_table(study).to_csv(out / "trials.csv", index=False)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return draw(study, out, names) if plots and complete else []  # no empty plots


def trials_table(study: optuna.Study):
    """Optuna's trials table, with each trial's point (the configuration it runs: its retries
    and ASHA's promotions are segments of one point) and its segment's rank in that point."""
    df = study.trials_dataframe()
    points = [point_of(t) for t in study.get_trials(deepcopy=False)]
    df.insert(1, "point", points)
    df.insert(2, "segment", [points[: i + 1].count(p) - 1 for i, p in enumerate(points)])
    return df


def announce(study: optuna.Study, out_dir, files: list[Path], *, what: str) -> None:
    """The last line: the headline result and where the report's files are."""
    names = objective_names(study.user_attrs.get(OBJECTIVE, []))
    print(
        f"{what}: {headline(study, names)}; {Path(out_dir).absolute()} holds "
        f"optimization_results.yaml, trials.csv and {len(files)} plots",
        flush=True,
    )


def default_storage() -> str:
    """The storage a sweep writes to unless told otherwise, as conf/config.yaml says."""
    from cifar_sweep.config_dir import CONF

    return OmegaConf.load(CONF / "config.yaml").hydra.sweeper.storage


def listing(url: str, names: list[str]) -> str:
    """One line per study: its trials by class and its headline result."""
    lines = [
        f"{len(names)} studies in {url}; report one with: python -m cifar_sweep.report {url} NAME"
    ]
    for name in names:
        study = optuna.load_study(study_name=name, storage=url)
        trials = study.get_trials(deepcopy=False)
        states = Counter(map(classify, trials))
        counts = " ".join(f"{k}={v}" for k, v in sorted(states.items()))
        objective = objective_names(study.user_attrs.get(OBJECTIVE, []))
        lines.append(f"  {name}: {len(trials)} trials ({counts}); {headline(study, objective)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m cifar_sweep.report", description="Report on an Optuna study."
    )
    parser.add_argument(
        "storage", nargs="?", help="e.g. sqlite:///outputs/studies.db (default: conf/config.yaml's)"
    )
    parser.add_argument("study", nargs="?", help="study name (optional if there is one)")
    parser.add_argument("--out", help="folder for the files (default: outputs/reports/<study>)")
    args = parser.parse_args(argv)
    storage = args.storage or default_storage()
    names = study_names(storage)
    if args.study is None and len(names) != 1:
        if not names:
            sys.exit(f"error: {storage} holds no study yet (a sweep: python -m cifar_sweep -m)")
        print(listing(storage, names))
        return
    args.storage, name = storage, args.study or names[0]
    if name not in names:
        sys.exit(
            f"error: no study {name!r} in {args.storage}{did_you_mean(name, names)}; "
            f"studies: {names}"
        )
    study = optuna.load_study(study_name=name, storage=args.storage)
    out = Path(args.out or Path("outputs") / "reports" / name)
    announce(study, out, write(study, out, plots=True), what="report written")


def study_names(url: str) -> list[str]:
    """The studies in an existing storage; a report never creates one (sqlite and the journal
    would make an empty database at a mistyped path), and a storage that cannot be opened is
    one line."""
    path = url.partition(":///")[2] if url.startswith("sqlite") else url.removeprefix("journal:")
    if (url.startswith("sqlite") or url.startswith("journal:")) and not Path(path).is_file():
        sys.exit(
            f"error: {url}: no such database file ({Path(path).absolute()}); a sweep creates "
            "it (python -m cifar_sweep -m), or name another storage"
        )
    if url.startswith("journal:"):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        return [s.study_name for s in JournalStorage(JournalFileBackend(path)).get_all_studies()]
    try:
        return optuna.get_all_study_names(url)
    except Exception as e:  # not a storage URL, a server that does not answer, a missing driver
        sys.exit(f"error: {url}: cannot open it ({(str(e).strip().splitlines() or [e])[0]})")


if __name__ == "__main__":
    main()
