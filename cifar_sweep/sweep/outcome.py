"""A job's outcome, told to the study: COMPLETE, PRUNED, or FAIL with its kind and reason; a
result that arrives after another process failed the trial; what the failures share; the
progress line that says it.
"""

import logging
import math
import re
from collections import Counter

import optuna
from hydra.core.utils import JobReturn, JobStatus
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from cifar_sweep.errors import SharedCauseError, UserError
from cifar_sweep.sweep import optuna_private as private
from cifar_sweep.sweep.contract import (
    CHARGED,
    COMPLETE,
    DIVERGED,
    ERROR,
    FAIL_KIND,
    FAIL_REASON,
    NOT_RUN,
    PAUSED,
    PBT_MEMBER,
    PBT_NEXT,
    PRUNED,
    RETRY_OF,
    SHARED,
    WORKER_DIED,
    classify,
    fail,
    states,
)
from cifar_sweep.sweep.recovery import take

log = logging.getLogger(__name__)


class RankDied(Exception):
    """A rank of a trial run as processes of its own (ranks.py) died: worker_died, retried."""


def tell(study: optuna.Study, trial, ret: JobReturn) -> None:
    """Record the job's outcome: COMPLETE, PRUNED, or FAIL with its kind and reason. A trial that
    another process failed meanwhile (it judged the worker gone) keeps its result (settle_late)."""
    state, values, kind, reason = outcome(study, ret)
    try:
        if state == TrialState.FAIL:
            fail(study, trial, kind, reason)  # the progress line says why
        else:
            study.tell(trial, values, state=state)
    except RuntimeError as e:  # GridSampler calls study.stop() after the last grid point
        if isinstance(e, UpdateFinishedTrialError):
            settle_late(study, trial, state, values)
        elif "Study.stop" not in str(e):
            raise
    except ValueError:  # "Cannot tell a FAIL trial": failed before this tell began
        if not private.frozen(study, trial).state.is_finished():
            raise
        settle_late(study, trial, state, values)


def outcome(study: optuna.Study, ret: JobReturn):
    """(state, values, fail kind, reason) of a job's return."""
    if ret.status == JobStatus.COMPLETED:
        value = ret.return_value
        values = list(value) if isinstance(value, list | tuple) else [value]
        try:
            values = [float(v) for v in values]
            if all(map(math.isfinite, values)) and len(values) == len(study.directions):
                return TrialState.COMPLETE, values, None, None
        except (TypeError, ValueError):
            pass
        return (
            TrialState.FAIL,
            None,
            ERROR,
            f"objective {value!r} is not {len(study.directions)} finite number(s)",
        )
    err = ret._return_value
    if isinstance(err, optuna.TrialPruned):
        return TrialState.PRUNED, None, None, None
    if isinstance(err, RankDied):
        return TrialState.FAIL, None, WORKER_DIED, str(err)
    if isinstance(err, SharedCauseError):
        return TrialState.FAIL, None, SHARED, str(err).splitlines()[0][:500]
    reason = str(err) if isinstance(err, UserError) else f"{type(err).__name__}: {err}"
    reason = reason.splitlines()[0][:500]
    # divergence.StopOnNonFinite's UserError is the one that opens "diverged:"
    return TrialState.FAIL, None, DIVERGED if reason.startswith("diverged:") else ERROR, reason


def shared_cause(study: optuna.Study) -> str:
    """The reason the charged failures share (most of them), or where to look."""
    reasons = Counter(
        t.user_attrs.get(FAIL_REASON, "")
        for t in study.get_trials(deepcopy=False)
        if classify(t) in CHARGED
    )
    (reason, count), total = reasons.most_common(1)[0], reasons.total()
    if reason and count == total:
        return f"{'it' if total == 1 else f'all {total}'} failed with: {reason}"
    if reason and count >= 2:
        return f"{count} of {total} failed with: {reason}"
    return "each failed its own way: see each trial's line in the log"


def data_error(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether a trial failed before its first epoch on an error that names dataset.* keys
    only, none of them swept: the data, the same for every trial (mixed image sizes)."""
    if classify(trial) != ERROR or trial.last_step is not None:
        return False
    keys = re.findall(r"\b([a-z_]+(?:\.[a-z_0-9]+)+)=", trial.user_attrs.get(FAIL_REASON, ""))
    swept = [p for p in trial.params if p.startswith("dataset.")]
    return bool(keys) and all(k.startswith("dataset.") for k in keys) and not swept


def settle_late(study: optuna.Study, trial, state: TrialState, values) -> None:
    """A trial finished here after another process had failed it and queued its point again.
    A finished result is kept: added as a new trial if the retry has not started (the retry
    steps back, "not run"), else the retry's run is kept and this one dropped."""
    number = trial.number
    frozen = private.frozen(study, trial)
    if state not in (TrialState.COMPLETE, TrialState.PRUNED):
        log.warning("trial %d ended %s, but was failed elsewhere already", number, state.name)
        return
    retries = study.get_trials(deepcopy=False)
    retry = next((t for t in retries if t.user_attrs.get(RETRY_OF) == number), None)
    if retry is not None and not take(study, retry):
        log.warning("trial %d finished after it was failed; its retry runs: kept", number)
        return
    if retry is not None:
        private.set_user_attr(study, retry, FAIL_KIND, NOT_RUN)
        private.set_user_attr(study, retry, FAIL_REASON, f"not run: {number} finished")
        private.set_state(study, retry, TrialState.FAIL)
    attrs = {k: v for k, v in frozen.user_attrs.items() if k not in (FAIL_KIND, FAIL_REASON)}
    added = optuna.trial.create_trial(
        state=state,
        values=values if state == TrialState.COMPLETE else None,
        params=frozen.params,
        distributions=frozen.distributions,
        intermediate_values=frozen.intermediate_values,
        user_attrs={**attrs, RETRY_OF: number},
    )
    study.add_trial(added)
    log.warning("trial %d finished after it was failed elsewhere: its result kept", number)


def progress_line(study, trial, *, label: str, n_trials: int, names: list[str]) -> tuple[bool, str]:
    """(failed, one line per trial): trial 7 (8/50)  complete  val/acc_best=0.83  best=0.86
    pruned=3; a failed one in one form, whatever failed it: trial 3 (4/20)  fail  diverged: ..."""
    frozen = private.frozen(study, trial)
    n = states(study)
    line = f"{label}trial {trial.number} ({n[COMPLETE] + n[PRUNED]}/{n_trials})  "
    line += frozen.state.name.lower()
    if frozen.state == TrialState.FAIL:
        reason = frozen.user_attrs.get(FAIL_REASON, "failed by another process's stale check")
        return True, f"{line}  {reason}"
    if PAUSED in frozen.user_attrs:
        line += f" (paused at epoch {frozen.user_attrs[PAUSED]}, kept to go on)"
    if PBT_NEXT in frozen.user_attrs:  # a PBT interval's end (pbt.py)
        nxt = frozen.user_attrs[PBT_NEXT]
        how = f"from trial {nxt['parent']} with {nxt['params']}" if nxt["exploit"] else "on"
        member, epochs = frozen.user_attrs[PBT_MEMBER], frozen.last_step + 1
        line += f" (member {member} after {epochs} epochs: goes {how})"
    values = frozen.values or (
        [frozen.intermediate_values[frozen.last_step]] if frozen.last_step is not None else []
    )
    line += "".join(f"  {k}={v:.4g}" for k, v in zip(names, values, strict=False))
    if len(study.directions) == 1 and n[COMPLETE]:
        line += f"  best={study.best_value:.4g}"
    return False, line + f"  pruned={n[PRUNED]}  failed={sum(n[k] for k in CHARGED)}"
