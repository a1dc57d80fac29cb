"""A study as MLflow shows it: an experiment per study, a run for the study, a child run per
trial (trial-0007) that a retry continues, the trial's end as tags, the report as artifacts.

The sweep side of the mapping: the study's run is made once, by the process the user started,
before its workers start; each worker makes its trials' runs (by explicit run ids) and tags
them with how they ended; jobs log their epochs into the run whose id their trial carries
(runs.py). Hand-written: optuna-integration's MLflowCallback (deprecated since 4.9) makes one
flat run per finished trial, so it knows nothing of epochs, pruning, retries, seeds or folds.
"""

import logging
from pathlib import Path

import optuna
from mlflow import MlflowClient
from mlflow.entities import Param, RunTag
from mlflow.tracking.context.registry import resolve_tags
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from cifar_sweep.sweep.contract import (
    FAIL_KIND,
    FAIL_REASON,
    INTERRUPTED,
    MLFLOW_RUN,
    MLFLOW_STUDY_RUN,
    OBJECTIVE,
    OWNER,
    PROMOTED_FROM,
    RETRY_OF,
    classify,
    objective_names,
)
from cifar_sweep.trackers import mlflow_store
from cifar_sweep.trackers.mlflow_store import retried

log = logging.getLogger(__name__)
# how a trial ended, as MLflow's run status: a pruned trial finished (n_trials counts it; its
# `state` tag says PRUNED), an interrupted one was stopped (KILLED, set in `end`)
STATUS = {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "FINISHED", TrialState.FAIL: "FAILED"}


def trial_run_name(number: int) -> str:
    return f"trial-{number:04d}"


class StudyRuns:
    """The study's MLflow runs, as one sweep process writes them."""

    def __init__(self, client: MlflowClient, study: optuna.Study, uri: str, parent: str):
        self.client, self.study, self.uri, self.parent = client, study, uri, parent
        self.experiment_id = client.get_run(parent).info.experiment_id

    def start(self, trial: optuna.trial.Trial) -> None:
        """The trial's run, made, or for a retry or a promotion the run of the trial it goes
        on from, named after this trial and RUNNING again (one curve, not two); the trial keeps
        its id for its job."""
        how = {"retry_of": RETRY_OF, "promoted_from": PROMOTED_FROM}
        tags = {"trial": str(trial.number), "state": "RUNNING", **where(trial.user_attrs)}
        run_id = None
        for tag, key in how.items():
            earlier = trial.user_attrs.get(key)
            if earlier is not None:
                trials = self.study.get_trials(deepcopy=False)
                run_id, tags[tag] = trials[earlier].user_attrs.get(MLFLOW_RUN), str(earlier)
        name = trial_run_name(trial.number)
        if run_id is None:
            run = retried(
                self.client.create_run,
                self.experiment_id,
                run_name=name,
                tags={MLFLOW_PARENT_RUN_ID: self.parent, **tags},
            )
            run_id = run.info.run_id
            params = [Param(k, str(v)) for k, v in trial.params.items()]
            retried(self.client.log_batch, run_id, params=params)
        else:
            retried(self.client.update_run, run_id, status="RUNNING", name=name)
            self._tag(run_id, tags)
        trial.set_user_attr(MLFLOW_RUN, run_id)

    def end(self, frozen: optuna.trial.FrozenTrial) -> None:
        """The trial's end as tags (state, fail kind and reason, the epoch it was pruned at,
        worker and device) and as the run's status."""
        run_id = frozen.user_attrs.get(MLFLOW_RUN)
        if run_id is None:
            return
        tags = {"state": frozen.state.name, **where(frozen.user_attrs)}
        if frozen.state == TrialState.FAIL:
            tags["fail_kind"] = classify(frozen)
            tags["fail_reason"] = frozen.user_attrs.get(FAIL_REASON, "")[:5000]
        if frozen.state == TrialState.PRUNED and frozen.last_step is not None:
            tags["pruned_at_epoch"] = str(frozen.last_step)
        self._tag(run_id, tags)
        interrupted = frozen.user_attrs.get(FAIL_KIND) == INTERRUPTED
        status = "KILLED" if interrupted else STATUS.get(frozen.state, "FAILED")
        retried(self.client.set_terminated, run_id, status=status)

    def report(self, out_dir: Path, files: list[Path], *, done: bool) -> str:
        """The report's files as the study run's artifacts, the best trial's run tagged, runs
        that no process ended (their workers died) ended now; how to look, in a line."""
        out = Path(out_dir)
        for name in ("optimization_results.yaml", "trials.csv"):
            if (out / name).is_file():
                retried(self.client.log_artifact, self.parent, str(out / name))
        for f in files:
            retried(self.client.log_artifact, self.parent, str(f), artifact_path="plots")
        trials = self.study.get_trials(deepcopy=False)
        self._end_left_running(trials)
        self._tag_best(trials)
        retried(self.client.set_terminated, self.parent, status="FINISHED" if done else "KILLED")
        return self.how_to_look()

    def how_to_look(self) -> str:
        if mlflow_store.sqlite_path(self.uri) is not None:
            return f"mlflow ui --backend-store-uri {self.uri} (then open the experiment)"
        return f"{self.uri.rstrip('/')}/#/experiments/{self.experiment_id}"

    def _tag(self, run_id: str, tags: dict) -> None:
        tags = [RunTag(k, str(v)) for k, v in tags.items()]
        retried(self.client.log_batch, run_id, tags=tags)

    def _end_left_running(self, trials: list) -> None:
        """Runs still RUNNING whose last trial has finished: failed by another process (its
        worker died) and not retried, or finished after it was failed."""
        running = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.{MLFLOW_PARENT_RUN_ID} = '{self.parent}' "
            "and attributes.status = 'RUNNING'",
            max_results=10000,
        )
        last = {t.user_attrs.get(MLFLOW_RUN): t for t in trials}  # trials are in number order
        for run in running:
            t = last.get(run.info.run_id)
            if t is not None and t.state.is_finished():
                self.end(t)

    def _tag_best(self, trials: list) -> None:
        """best=true on the best trial's run (each Pareto-optimal one, multi-objective);
        the tag comes off a run that was best in an earlier sweep of this study."""
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        if not complete:
            return
        best = self.study.best_trials if len(self.study.directions) > 1 else [self.study.best_trial]
        best_runs = {t.user_attrs.get(MLFLOW_RUN) for t in best} - {None}
        was = self.client.search_runs(
            [self.experiment_id], filter_string="tags.best = 'true'", max_results=1000
        )
        for run in was:
            if run.info.run_id not in best_runs:
                retried(self.client.delete_tag, run.info.run_id, "best")
        for run_id in best_runs:
            self._tag(run_id, {"best": "true"})
        if len(self.study.directions) == 1:
            names = objective_names(self.study.user_attrs.get(OBJECTIVE, ["value"]))
            self._tag(self.parent, {"best_trial": best[0].number})
            retried(self.client.log_metric, self.parent, f"best/{names[0]}", best[0].value)


def where(user_attrs: dict) -> dict:
    """The worker, device and host a trial ran on, from its owner record."""
    owner = user_attrs.get(OWNER) or {}
    return {k: owner[k] for k in ("worker", "device", "host") if owner.get(k) is not None}


def open_study_runs(config: DictConfig, study: optuna.Study, *, space: dict, sampler, launching):
    """The study's runs when `logger.mlflow` is chosen (else None): the experiment and the
    study's run are made by the launching process, found by its workers."""
    node = (config.get("logger") or {}).get("mlflow")
    if node is None:
        return None
    uri = node.tracking_uri
    client = mlflow_store.open_store(uri) if launching else MlflowClient(tracking_uri=uri)
    parent = study.user_attrs.get(MLFLOW_STUDY_RUN)
    if parent is None:
        parent = _study_run(client, node, config, study, space=space, sampler=sampler)
    else:
        retried(client.update_run, parent, status="RUNNING")
    runs = StudyRuns(client, study, uri, parent)
    if launching:
        log.info("MLflow: experiment %s; %s", study.study_name, runs.how_to_look())
    return runs


def _study_run(client, node: DictConfig, config: DictConfig, study, *, space, sampler) -> str:
    """The study's own run: its search space, sampler, pruner, directions and the sweep's
    overrides; the git commit, user and entry point as MLflow's own tags say them."""
    location = mlflow_store.artifact_root(node.tracking_uri, node.artifact_location)
    name = node.experiment_name or study.study_name
    experiment_id = mlflow_store.experiment(client, name, artifact_location=location)
    sweeper = config.hydra.sweeper
    pruner = OmegaConf.to_container(sweeper.pruner, resolve=True) if sweeper.pruner else None
    overrides = list(config.hydra.overrides.task)
    tags = {
        "role": "study",
        "study": study.study_name,
        "sampler": type(sampler).__name__,
        "pruner": (pruner or {}).get("_target_", "none").rpartition(".")[2],
        "directions": ",".join(d.name.lower() for d in study.directions),
        "overrides": " ".join(overrides)[:5000],
        "mlflow.note.content": f"Optuna study {study.study_name}, one child run per trial: "
        f"python -m cifar_sweep -m {' '.join(overrides)}"[:5000],
    }
    run = retried(
        client.create_run, experiment_id, run_name=study.study_name, tags=resolve_tags(tags)
    )
    params = [Param(f"space.{k}", repr(v)[:6000]) for k, v in sorted(space.items())]
    params += [Param(f"sampler.{k}", str(v)[:6000]) for k, v in _node(sweeper.sampler).items()]
    params += [Param(f"pruner.{k}", str(v)[:6000]) for k, v in (pruner or {}).items()]
    params.append(Param("objective", ",".join(objective_names(config.objective))))
    retried(client.log_batch, run.info.run_id, params=params)
    study.set_user_attr(MLFLOW_STUDY_RUN, run.info.run_id)
    return run.info.run_id


def _node(node) -> dict:
    return OmegaConf.to_container(node, resolve=True) if node is not None else {}
