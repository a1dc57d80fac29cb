"""Trackers beside TensorBoard: what a user finds in MLflow (a real server), in W&B's offline
run files and in CSV files after a run or a sweep, and the one-line answers to a logger that
cannot work."""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
from conftest import (
    PROMOTION_LRS,
    ROOT,
    mlflow_runs,
    promotion_sweep,
    run_in_process,
    steps,
    study,
    sweep,
    sweep_cmd,
)
from optuna.trial import TrialState

from cifar_sweep.sweep.contract import MLFLOW_RUN, OWNER, RETRY_OF


def test_an_unknown_logger_is_one_line_naming_the_options(tmp_path: Path):
    result = run_in_process("logger=mlfow", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: logger=mlfow: no such option; did you mean mlflow? "
        "(options: csv, mlflow, tensorboard, wandb)"
    ]


def test_a_tracking_server_that_does_not_answer_stops_before_any_training(tmp_path: Path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    run = tmp_path / "run"
    args = ("logger=[tensorboard,mlflow]", f"logger.mlflow.tracking_uri={uri}")
    result = run_in_process(*args, f"hydra.run.dir={run}")
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: logger.mlflow.tracking_uri={uri}: no MLflow server answers")
    assert not (run / "tb").exists() and not (run / "metrics.json").exists()
    swept = sweep(tmp_path, *args, ok=False)  # a sweep: before its study
    assert swept.returncode == 1
    assert swept.stderr.strip().splitlines() == [line]
    assert not (tmp_path / "studies.db").exists()


@pytest.mark.parametrize("tracker", ["mlflow", "wandb"])
def test_a_logger_without_its_package_names_the_extra(tmp_path: Path, monkeypatch, tracker):
    monkeypatch.setitem(sys.modules, tracker, None)  # as if not installed
    result = run_in_process(f"logger={tracker}", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: logger={tracker} needs the {tracker} package: pip install -e '.[{tracker}]' "
        f"(both trackers: '.[trackers]'; from a wheel: 'cifar_sweep[{tracker}]')"
    ]


def test_several_loggers_at_once_each_log_every_epoch(tmp_path: Path):
    run = tmp_path / "run"
    result = run_in_process("logger=[tensorboard,csv]", f"hydra.run.dir={run}")
    assert result.returncode == 0, result.stderr
    assert list((run / "tb").glob("events.out.tfevents.*"))
    with open(run / "csv" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/acc")]
    assert [int(r["epoch"]) for r in rows] == [0, 1]


@pytest.mark.slow  # a real MLflow server (CI starts one; else this session starts it, about 8 s)
def test_a_single_run_lands_in_mlflow_with_its_config_metrics_and_report(
    tmp_path: Path, mlflow_server: str
):
    from mlflow import MlflowClient

    experiment = f"single-{uuid.uuid4().hex[:8]}"
    run = tmp_path / "run"
    result = run_in_process(
        "logger=mlflow",
        f"logger.mlflow.tracking_uri={mlflow_server}",
        f"logger.mlflow.experiment_name={experiment}",
        "optimizer.lr=0.03",
        f"hydra.run.dir={run}",
    )
    assert result.returncode == 0, result.stderr
    [(name, found)] = mlflow_runs(mlflow_server, experiment).items()
    assert name == "run" and found.info.status == "FINISHED"
    assert found.data.params["optimizer.lr"] == "0.03"
    assert steps(mlflow_server, found, "val/acc") == [0, 1]  # step = epoch
    metrics = json.loads((run / "metrics.json").read_text())
    assert found.data.metrics["test/acc"] == pytest.approx(metrics["test/acc"])
    client = MlflowClient(tracking_uri=mlflow_server)
    files = {a.path for a in client.list_artifacts(found.info.run_id)}
    assert {"metrics.json", "evaluation.json", "confusion_matrix.png", ".hydra"} <= files
    hydra_files = {a.path for a in client.list_artifacts(found.info.run_id, ".hydra")}
    assert ".hydra/config.yaml" in hydra_files


@pytest.mark.slow  # a real MLflow server and a sweep
def test_a_multi_objective_study_in_mlflow_tags_its_pareto_front(
    tmp_path: Path, mlflow_server: str
):
    from mlflow import MlflowClient

    sweep(
        tmp_path,
        "sweeper=nsgaii",
        "hydra.sweeper.n_trials=3",
        "logger=mlflow",
        f"logger.mlflow.tracking_uri={mlflow_server}",
    )
    s = study(tmp_path)
    runs = mlflow_runs(mlflow_server, s.study_name)
    parent = runs.pop(s.study_name)
    assert parent.data.tags["role"] == "study" and parent.info.status == "FINISHED"
    assert parent.data.tags["directions"] == "maximize,minimize"
    assert parent.data.tags["sampler"] == "NSGAIISampler"
    assert {"space.optimizer.lr", "space.optimizer.weight_decay"} <= set(parent.data.params)
    assert sorted(runs) == ["trial-0000", "trial-0001", "trial-0002"]
    for t in s.trials:
        r = runs[f"trial-{t.number:04d}"]
        assert r.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert r.data.tags["state"] == "COMPLETE" and r.info.status == "FINISHED"
        assert r.data.params["optimizer.lr"] == str(t.params["optimizer.lr"])
        assert r.data.metrics["time/epoch_s"] == pytest.approx(t.values[1])
    front = {f"trial-{t.number:04d}" for t in s.best_trials}
    assert {n for n, r in runs.items() if r.data.tags.get("best") == "true"} == front
    client = MlflowClient(tracking_uri=mlflow_server)
    files = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"optimization_results.yaml", "trials.csv"} <= files


def wandb_records(path: Path):
    """The records of an offline W&B run file: W&B's store is LevelDB's log format (32 KiB
    blocks, each record a 7-byte header and a protobuf Record), and wandb 0.31 reads it only
    from its Go core."""
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B"
    pos, chunk = 7, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if left < 7 or (kind == 0 and length == 0):
            pos += left
            continue
        chunk += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or its last piece
            record = pb.Record()
            record.ParseFromString(chunk)
            chunk = b""
            yield record


def wandb_run(folder: Path) -> dict:
    """The offline W&B run under `folder`: id, project, group, name, history rows, summary."""
    [path] = folder.glob("wandb/offline-run-*/run-*.wandb")
    out: dict = {"history": [], "summary": {}}
    for r in wandb_records(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            run = r.run
            out.update(
                id=run.run_id, project=run.project, group=run.run_group, name=run.display_name
            )
        elif kind == "history":
            out["history"].append({_key(i): json.loads(i.value_json) for i in r.history.item})
        elif kind == "summary":
            out["summary"].update({_key(i): json.loads(i.value_json) for i in r.summary.update})
    return out


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)  # W&B splits a key with "/" in it


def test_wandb_offline_runs_one_per_trial_in_the_study_project(tmp_path: Path):
    pytest.importorskip("wandb", reason="wandb not installed (pip install -e '.[wandb]')")
    sweep(tmp_path, "hydra.sweeper.n_trials=2", "trainer.max_epochs=2", "logger=wandb")
    s = study(tmp_path)
    ids = set()
    for t in s.trials:
        run = wandb_run(tmp_path / "sweep" / str(t.number))
        assert run["project"] == run["group"] == s.study_name
        assert run["name"] == f"trial-{t.number:04d}"
        epochs = [h["epoch"] for h in run["history"] if "val/acc" in h]
        assert epochs == [0, 1]
        assert run["summary"]["state"] == "complete"
        ids.add(run["id"])
    assert len(ids) == 2


def test_a_retried_trial_logs_into_its_first_attempts_wandb_run():
    from omegaconf import OmegaConf

    from cifar_sweep.trackers.wandb_run import fill

    s = optuna.create_study(study_name="s")
    first = s.ask()
    s.tell(first, state=TrialState.FAIL)
    s.enqueue_trial({}, user_attrs={RETRY_OF: first.number})
    retry = s.ask()
    s.tell(retry, state=TrialState.FAIL)
    s.enqueue_trial({}, user_attrs={RETRY_OF: retry.number})
    again = s.ask()
    nodes = [OmegaConf.create({"project": None, "group": None}) for _ in range(2)]
    fill(nodes[0], name="x", trial=first, out_dir=Path("a"))
    fill(nodes[1], name="x", trial=again, out_dir=Path("b"))
    assert nodes[0].id == nodes[1].id and nodes[1].name == "trial-0000"


@pytest.mark.slow  # two worker processes and a kill: about a minute on 2 cores
def test_two_workers_in_mlflow_a_pruned_a_diverged_and_a_retried_trial(
    tmp_path: Path, mlflow_server: str
):
    """A grid of 3 learning rates, 3 epochs each: 0.05 learns and completes, 1e-5 stays near
    chance and is pruned at epoch 1, 1e9 diverges; the worker of the 1e-5 trial is killed
    after its first epoch, and its retry goes on in the same MLflow run."""
    args = [
        "sweeper=grid",
        "optimizer.lr=1e-5,0.05,1e9",
        "trainer.max_epochs=3",
        "dataset.train_per_class=300",  # about a second an epoch: time to kill one mid-trial
        "hydra.sweeper.workers=2",
        "hydra.sweeper.pruner._target_=optuna.pruners.ThresholdPruner",
        "+hydra.sweeper.pruner.lower=0.6",  # lr 0.05 reaches 0.79 in its first epoch
        "+hydra.sweeper.pruner.n_warmup_steps=1",
        "logger=[tensorboard,mlflow]",
        f"logger.mlflow.tracking_uri={mlflow_server}",
    ]
    proc = subprocess.Popen(
        sweep_cmd(tmp_path, *args), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    killed = None
    deadline = time.time() + 300
    while killed is None and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
        try:
            running = study(tmp_path).get_trials(states=(TrialState.RUNNING,))
        except (ValueError, KeyError, optuna.exceptions.StorageInternalError):
            continue
        for t in running:
            if t.params.get("optimizer.lr") == 1e-5 and t.intermediate_values:
                os.kill(t.user_attrs[OWNER]["pid"], signal.SIGKILL)
                killed = t.number
    output = proc.communicate(timeout=600)[0].decode()
    assert killed is not None, output[-3000:]
    # the other worker retries it, or, when it had run out of points first, the rerun a user
    # types; either way a rerun keeps the study's one run
    rerun = sweep(tmp_path, *args)
    s = study(tmp_path)
    runs = mlflow_runs(mlflow_server, s.study_name)
    parent = runs.pop(s.study_name)
    [retry] = [t for t in s.trials if t.user_attrs.get(RETRY_OF) == killed]
    assert retry.user_attrs[MLFLOW_RUN] == s.trials[killed].user_attrs[MLFLOW_RUN]
    assert f"trial-{killed:04d}" not in runs  # one run, named after the trial that ended it
    r = runs[f"trial-{retry.number:04d}"]
    assert r.data.tags["retry_of"] == str(killed)
    assert r.data.tags["state"] == "PRUNED" and r.data.tags["pruned_at_epoch"] == "1"
    assert sorted(set(steps(mlflow_server, r, "val/acc"))) == [0, 1]  # one curve, to epoch 1
    by_state: dict[str, list] = {}
    for t in s.trials:
        if t.number == killed:
            continue
        run = runs[f"trial-{t.number:04d}"]
        by_state.setdefault(run.data.tags["state"], []).append(t)
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["worker"] in ("0", "1") and run.data.tags["device"] == "cpu"
    [complete] = by_state["COMPLETE"]
    [diverged] = by_state["FAIL"]
    assert complete.params["optimizer.lr"] == 0.05
    assert runs[f"trial-{complete.number:04d}"].data.tags["best"] == "true"
    assert steps(mlflow_server, runs[f"trial-{complete.number:04d}"], "val/acc") == [0, 1, 2]
    failed = runs[f"trial-{diverged.number:04d}"]
    assert failed.info.status == "FAILED" and failed.data.tags["fail_kind"] == "diverged"
    assert failed.data.tags["fail_reason"].startswith("diverged:")
    assert parent.info.status == "FINISHED" and "mlflow: " in rerun.stdout


@pytest.mark.slow  # two worker processes: about 45 s on 2 cores
def test_two_workers_share_the_embedded_mlflow_store_made_once_by_the_sweep(tmp_path: Path):
    """The default store (SQLite): the sweep makes it before its workers start, and both write
    their trials' runs into it without a lock error."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = sweep(
        tmp_path,
        "hydra.sweeper.workers=2",
        "hydra.sweeper.n_trials=6",
        "trainer.max_epochs=2",
        "logger=mlflow",
        f"logger.mlflow.tracking_uri={uri}",
    )
    assert "database is locked" not in result.stdout + result.stderr
    assert f"mlflow: mlflow ui --backend-store-uri {uri}" in result.stdout
    s = study(tmp_path)
    client = MlflowClient(tracking_uri=uri)
    runs = mlflow_runs(uri, s.study_name)
    assert sorted(runs) == sorted([s.study_name, *(f"trial-{n:04d}" for n in range(6))])
    assert {runs[f"trial-{n:04d}"].data.tags["worker"] for n in range(6)} == {"0", "1"}
    for n in range(6):
        assert steps(uri, runs[f"trial-{n:04d}"], "val/acc") == [0, 1]
    experiment = client.get_experiment_by_name(s.study_name)
    assert experiment.artifact_location == (tmp_path / "mlartifacts").as_uri()


@pytest.mark.slow  # a real sweep of 6 tiny trials with promotions: about 30 s; CI runs it
def test_a_promoted_trial_goes_on_in_the_mlflow_run_of_the_trial_it_was_paused_as(tmp_path: Path):
    """pruner=asha_promote: a paused trial's point goes on in a later trial, and in MLflow in the
    same run, so each point is one curve with every epoch logged once."""
    from cifar_sweep.sweep.contract import PROMOTED_FROM, point_of

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep(
        tmp_path,
        *promotion_sweep(max_epochs=4),
        "logger=mlflow",
        f"logger.mlflow.tracking_uri={uri}",
    )
    s = study(tmp_path)
    promoted = [t for t in s.trials if PROMOTED_FROM in t.user_attrs]
    assert promoted, "no paused trial earned its place (the tiny set's curves changed?)"
    for t in promoted:
        assert (
            t.user_attrs[MLFLOW_RUN] == s.trials[t.user_attrs[PROMOTED_FROM]].user_attrs[MLFLOW_RUN]
        )
    runs = mlflow_runs(uri, s.study_name)
    assert len(runs) == 1 + len(PROMOTION_LRS)  # the study's, and one per configuration
    for point in {point_of(t) for t in s.trials}:
        last = max((t for t in s.trials if point_of(t) == point), key=lambda t: t.number)
        [run] = [r for r in runs.values() if r.info.run_id == last.user_attrs[MLFLOW_RUN]]
        assert run.info.run_name == f"trial-{last.number:04d}"
        assert steps(uri, run, "val/acc") == list(range(last.last_step + 1))  # each epoch once
