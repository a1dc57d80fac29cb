"""Population-based training (Jaderberg et al. 2017), asynchronous as Ray Tune's: `sweeper=pbt`,
its keys under hydra.sweeper.pbt (Ray's defaults, conf/sweeper/pbt.yaml).

`population` members train side by side, each in intervals of `interval_epochs`, and each
interval is one trial of the study: its params are the values it trained with, its user
attributes its member, its generation and the trial whose checkpoint it went on from
(contract.PBT_MEMBER, PBT_GENERATION, PBT_PARENT). So a killed sweep goes on where it stopped
(an interval is retried like any trial), and the report, trackers and timeline read PBT as trials.

At an interval's end this pruner (in the job, where ASHA pauses a trial) ranks the member's value
against every other member that has reached the same epoch, at that epoch, and waits for nobody.
In the bottom `quantile` it exploits: its next interval goes on from the checkpoint of a member in
the top `quantile` at that epoch (weights, optimizer state, epoch) with that member's values
explored (pbt_explore); otherwise from its own checkpoint with its own values. (Ray ranks each
trial's last result whatever its epoch, so an exploit can move a trial back or forward; ranking at
one epoch keeps every member at max_epochs, so the population trains population x max_epochs
epochs, a grid's for a comparison, and a rerun trains the same.) The decision is written on the
trial (PBT_NEXT) and the interval ends PRUNED, its checkpoint kept, like a paused ASHA trial; a
member's last interval ends COMPLETE, so the study's best trial is the best member's last
interval. pbt_schedule queues the next intervals (the member furthest behind first, the best of
those first, so the worst ranks itself last, against the most members); the job sets the explored
values on the optimizer's param groups (changes.py).

A member whose interval fails for its values (diverged, an error: not retried) goes on as an
exploit from the epoch that interval started at (`rescue`): from a top member's checkpoint there,
with its values explored; failed in its first interval, from a fresh draw. Ray Tune stops such a
trial, and the population shrinks.

An interval whose job died after this decision but before its trial was told is retried from
its own checkpoint, and its retry decides again before it trains (pruning.undecided), so no member
skips a decision. Open: each interval is its own tracker run (MLflow could keep a member's
intervals in one, as a promotion's are).

Hand-written: Optuna declined PBT (optuna #287: it cannot share model snapshots), and Ray Tune's
needs Ray's trial runner and checkpoints; here every trial keeps its last.ckpt, and a trial can go
on from any trial's.
"""

import logging
import math
import random
from collections import defaultdict

import optuna
from optuna.pruners import BasePruner
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from cifar_sweep.sweep import optuna_private as private
from cifar_sweep.sweep.contract import NOT_RUN, PBT_MEMBER, PBT_NEXT, PBT_PARENT, classify
from cifar_sweep.sweep.pbt_explore import explore

log = logging.getLogger(__name__)


class PBTPruner(BasePruner):
    """Ends each interval of a member and decides how the member goes on (the module says how).
    The values are checked before the study opens (pbt_checks)."""

    def __init__(
        self,
        *,
        population: int,
        interval_epochs: int,
        quantile: float,
        perturb: list[float],
        resample_p: float,
        max_epochs: int,
        seed: int,
    ):
        self.population, self.interval, self.max_epochs = population, interval_epochs, max_epochs
        self.quantile, self.perturb, self.resample_p = quantile, list(perturb), resample_p
        self.seed = seed

    @property
    def n_trials(self) -> int:
        """The intervals of the whole population when no exploit moves a member's epoch."""
        return self.population * math.ceil(self.max_epochs / self.interval)

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or PBT_MEMBER not in trial.user_attrs:
            return False
        if (step + 1) % self.interval or step + 1 >= self.max_epochs:
            return False  # inside an interval, or the member's last epoch: it completes
        private.set_user_attr(study, trial, PBT_NEXT, self.decide(study, trial))
        return True  # still RUNNING: its job writes nothing after this

    def decide(self, study: optuna.Study, trial: FrozenTrial) -> dict:
        """How `trial`'s member goes on: the trial whose checkpoint its next interval starts
        from, the values it trains with, and whether that was an exploit."""
        rng = random.Random(f"{self.seed}/{trial.number}")  # the same trial decides the same
        trials = study.get_trials(deepcopy=False)
        others = peers(trials, trial.user_attrs[PBT_MEMBER], trial.last_step)
        bottom, top = quantiles([*others, trial], self.quantile, study.direction)
        if trial.number not in {t.number for t in bottom}:
            return {"parent": trial.number, "params": trial.params, "exploit": False}
        member, epoch = trial.user_attrs[PBT_MEMBER], trial.last_step + 1
        said = f"trial {trial.number} (member {member}): in the bottom {self.quantile:g}"
        said += f" at epoch {epoch}"
        return self._exploit(rng.choice(top), rng, said)

    def rescue(self, study: optuna.Study, failed: FrozenTrial) -> dict:
        """How a member whose interval `failed` (diverged, an error) goes on: from the best
        quantile of the intervals that ended at the epoch it started from, with their values
        explored; {} after a failed first interval (its member starts again from a fresh draw)."""
        trials = study.get_trials(deepcopy=False)
        if PBT_PARENT not in failed.user_attrs:
            return {}
        step = trials[failed.user_attrs[PBT_PARENT]].last_step
        ended = [t for t in trials if t.state == TrialState.PRUNED and t.last_step == step]
        _, top = quantiles(ended, self.quantile, study.direction)
        ranked = top or ended or [trials[failed.user_attrs[PBT_PARENT]]]  # few have got there
        rng = random.Random(f"{self.seed}/{failed.number}")
        said = f"trial {failed.number} (member {failed.user_attrs[PBT_MEMBER]}) failed"
        return self._exploit(rng.choice(ranked), rng, said)

    def _exploit(self, parent: FrozenTrial, rng: random.Random, said: str) -> dict:
        """Go on from `parent`'s checkpoint with its values explored; `said` opens the log line."""
        params = explore(
            parent.params,
            parent.distributions,
            rng=rng,
            perturb=self.perturb,
            resample_p=self.resample_p,
        )
        log.info(
            "%s; goes on from trial %d's checkpoint (member %d) at epoch %d with %s",
            said,
            parent.number,
            parent.user_attrs[PBT_MEMBER],
            parent.last_step + 1,
            params,
        )
        return {"parent": parent.number, "params": params, "exploit": True}


def start_epoch(trial: FrozenTrial, trials: list[FrozenTrial]) -> int:
    """The epoch (0-based) a PBT interval started at: after its parent's last, or 0 for a
    member's first (a retry keeps its first attempt's parent)."""
    parent = trial.user_attrs.get(PBT_PARENT)
    return 0 if parent is None else trials[parent].last_step + 1


def last_value(trial: FrozenTrial) -> float:
    return trial.intermediate_values[trial.last_step]


def members(trials: list[FrozenTrial]) -> dict[int, list[FrozenTrial]]:
    """Each member's intervals in order (and their retries), leaving out trials never run."""
    found = defaultdict(list)
    for t in trials:
        if PBT_MEMBER in t.user_attrs and classify(t) != NOT_RUN:
            found[t.user_attrs[PBT_MEMBER]].append(t)
    return dict(found)


def peers(trials: list[FrozenTrial], member: int, step: int) -> list[FrozenTrial]:
    """The interval of each other member that ended after epoch `step` (0-based): its value and
    its checkpoint at that epoch. A member that has not got there yet is not waited for."""
    found = {}
    for t in trials:
        other = t.user_attrs.get(PBT_MEMBER)
        if other not in (None, member) and t.state == TrialState.PRUNED and t.last_step == step:
            found.setdefault(other, t)
    return list(found.values())


def quantiles(trials: list[FrozenTrial], quantile: float, direction) -> tuple[list, list]:
    """The bottom and top `quantile` of `trials` by their last value, as Ray's _quantiles: each
    at most half of them, none of fewer than two."""
    ranked = [t for t in trials if not math.isnan(last_value(t))]
    sign = 1 if direction == StudyDirection.MAXIMIZE else -1
    ranked.sort(key=lambda t: sign * last_value(t))  # worst first
    if len(ranked) <= 1:
        return [], []
    k = min(math.ceil(len(ranked) * quantile), len(ranked) // 2)
    return (ranked[:k], ranked[-k:]) if k else ([], [])
