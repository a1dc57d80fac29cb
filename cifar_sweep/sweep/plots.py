"""Optuna's own plots of a study, one PNG each, the workers' timeline and PBT's lineage.

Optuna's matplotlib backend draws them; this module picks which apply (single or several
objectives), sizes the contour to the most important parameters, and keeps Optuna's chatter out.
"""

import logging
import warnings
from functools import partial
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
from optuna.visualization import matplotlib as plots  # noqa: E402

from cifar_sweep.sweep import lineage, timeline  # noqa: E402
from cifar_sweep.sweep.contract import PBT_MEMBER  # noqa: E402

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


def draw(study: optuna.Study, out: Path, names: list[str]) -> list[Path]:
    """Draw every plot that applies into out/plots/<name>.png; return the files written."""
    (out / "plots").mkdir(parents=True, exist_ok=True)
    if len(study.directions) > 1:
        todo = {"pareto_front": lambda s: plots.plot_pareto_front(s, target_names=names or None)}
        todo.update(_per_objective(study, names))
    else:
        target = names[0] if names else "Objective Value"
        todo = {name: partial(f, target_name=target) for name, f in SINGLE.items()}
        todo["intermediate_values"] = plots.plot_intermediate_values
        todo["contour"] = partial(plots.plot_contour, params=_top_params(study), target_name=target)
    todo["timeline"] = timeline.plot
    if any(PBT_MEMBER in t.user_attrs for t in study.get_trials(deepcopy=False)):
        todo["lineage"] = lineage.plot
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # "unique value length" chatter
    # a grid's values reach matplotlib as strings: its "Using categorical units" note is an INFO
    # log line (no warning), printed once per axis
    category = logging.getLogger("matplotlib.category")
    category_level = category.level
    category.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # experimental-API and few-trials notes, not errors
            return [path for name, plot in todo.items() if (path := _plot(study, name, plot, out))]
    finally:
        optuna.logging.set_verbosity(verbosity)
        category.setLevel(category_level)


def _per_objective(study: optuna.Study, names: list[str]) -> dict:
    """A multi-objective study's history, importances and parallel coordinates, one plot per
    objective (Optuna draws them for one value at a time, given a target)."""
    todo = {}
    for i in range(len(study.directions)):
        name = names[i] if i < len(names) else f"objective {i}"
        kw = {"target": lambda t, i=i: t.values[i], "target_name": name}
        slug = name.replace("/", "_").replace(" ", "_")
        todo[f"optimization_history_{slug}"] = partial(plots.plot_optimization_history, **kw)
        todo[f"param_importances_{slug}"] = partial(plots.plot_param_importances, **kw)
        todo[f"parallel_coordinate_{slug}"] = partial(plots.plot_parallel_coordinate, **kw)
    return todo


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
