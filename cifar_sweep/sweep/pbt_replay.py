"""A PBT member's history as one run that replays it from scratch: the values of each interval of
its lineage (back through cs:pbt_parent, across exploits: one continuous line of weights) as
scheduler=piecewise segments, and the overrides that train it (retrain uses them).

Only the optimizer's values replay (piecewise.KEYS); a lineage whose augmentation changed is
refused in one line until augmentation takes segments too.
"""

import optuna
from optuna.trial import FrozenTrial

from cifar_sweep.errors import UserError
from cifar_sweep.sweep.contract import PBT_PARENT
from cifar_sweep.sweep.pbt import start_epoch

PREFIX = "optimizer."


def lineage(trials: list[FrozenTrial], trial: FrozenTrial) -> list[FrozenTrial]:
    """`trial` and the intervals whose checkpoints it went on from, the first one first."""
    chain = [trial]
    while PBT_PARENT in chain[-1].user_attrs:
        chain.append(trials[chain[-1].user_attrs[PBT_PARENT]])  # numbers index a study's trials
    return chain[::-1]


def segments(study: optuna.Study, trial: FrozenTrial) -> list[dict]:
    """The piecewise segments of `trial`'s lineage: from each interval's first epoch, its
    optimizer values (a segment only where one changed)."""
    trials = study.get_trials(deepcopy=False)
    found, before = [], {}
    for t in lineage(trials, trial):
        values = {k.removeprefix(PREFIX): v for k, v in t.params.items() if k.startswith(PREFIX)}
        if values != before:
            found.append({"epoch": start_epoch(t, trials), **values})
        before = values
    return found


def overrides(study: optuna.Study, trial: FrozenTrial) -> list[str]:
    """The overrides that train `trial`'s lineage again from epoch 0, for its epochs; a value
    other than the optimizer's only where it never changed."""
    chain = lineage(study.get_trials(deepcopy=False), trial)
    fixed = {}
    for key in (k for k in trial.params if not k.startswith(PREFIX)):
        if len({repr(t.params[key]) for t in chain}) > 1:
            raise UserError(
                f"trial {trial.number}'s lineage changed {key} mid-run; only the optimizer's "
                "values replay as scheduler=piecewise so far"
            )
        fixed[key] = trial.params[key]
    found = segments(study, trial)
    items = ",".join(
        "{" + ",".join(f"{k}:{v!r}" for k, v in segment.items()) + "}" for segment in found
    )
    return [
        "scheduler=piecewise",
        f"scheduler.fn.segments=[{items}]",
        *(f"{PREFIX}{k}={v!r}" for k, v in (found[:1] or [{}])[0].items() if k != "epoch"),
        *(f"{k}={v!r}" for k, v in fixed.items()),
        f"trainer.max_epochs={trial.last_step + 1}",
    ]
