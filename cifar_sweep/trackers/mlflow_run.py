"""A job's MLflow runs: a single run's own (in the experiment of `name`), a trial's (made by the
sweep, mlflow_study.py), a seed's or fold's under either; each closed with its files.

A run found again is continued, not doubled: a single run resumed in its folder reads the id it
wrote there, a seed or fold finds its run under its parent by tag, and a retried trial's id
comes from the sweep. Lightning's logger (mlflow_logger.py) logs the epochs into these runs.
"""

import json
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Metric, RunStatus
from mlflow.tracking.context.registry import resolve_tags
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from omegaconf import DictConfig

from cifar_sweep.trackers import mlflow_store
from cifar_sweep.trackers.mlflow_store import retried

RUN_ID_FILE = "mlflow_run_id.txt"  # in a single run's folder: `resume=` continues that run
# what a run folder holds worth keeping beside the metrics (the config, the evaluation report)
FILES = (
    ".hydra/config.yaml",
    ".hydra/overrides.yaml",
    "metrics.json",
    "evaluation.json",
    "classification_report.md",
    "confusion_matrix.png",
)


def single_run(node: DictConfig, name: str, out_dir: Path) -> str:
    """The run of a single run: the one its folder names (a resumed run), else a new one named
    after its folder, in the experiment `experiment_name` (null: `name`)."""
    client = mlflow_store.open_store(node.tracking_uri)
    id_file = out_dir / RUN_ID_FILE
    if id_file.is_file():
        run_id = id_file.read_text().strip()
        retried(client.update_run, run_id, status="RUNNING")
        return run_id
    location = mlflow_store.artifact_root(node.tracking_uri, node.artifact_location)
    experiment_id = mlflow_store.experiment(
        client, node.experiment_name or name, artifact_location=location
    )
    tags = resolve_tags({"role": "run", "folder": str(out_dir.absolute())})
    run = retried(client.create_run, experiment_id, run_name=out_dir.name, tags=tags)
    out_dir.mkdir(parents=True, exist_ok=True)
    id_file.write_text(run.info.run_id)
    return run.info.run_id


def part_run(node: DictConfig, parent: str, part: str) -> str:
    """The run of one seed or fold (`part`: seed1, fold0) under the run `parent`: found again by
    its tag (a retried trial, a resumed run), else made."""
    client = MlflowClient(tracking_uri=node.tracking_uri)
    info = client.get_run(parent)
    query = f"tags.{MLFLOW_PARENT_RUN_ID} = '{parent}' and tags.part = '{part}'"
    found = client.search_runs([info.info.experiment_id], filter_string=query, max_results=1)
    if found:
        retried(client.update_run, found[0].info.run_id, status="RUNNING")
        return found[0].info.run_id
    tags = {MLFLOW_PARENT_RUN_ID: parent, "part": part}
    name = f"{info.info.run_name}-{part}"
    run = retried(client.create_run, info.info.experiment_id, run_name=name, tags=tags)
    return run.info.run_id


def close(node: DictConfig, run_id: str, out_dir: Path, *, status: str | None) -> None:
    """The run folder's config, metrics and evaluation report as artifacts, and metrics.json's
    figures that no epoch logged (test/acc, model/params, a mean over seeds); then the run
    ended with `status` (None: its owner, the sweep, ends it)."""
    client = MlflowClient(tracking_uri=node.tracking_uri)
    for name in FILES:
        path = out_dir / name
        if path.is_file():
            folder = str(Path(name).parent) if "/" in name else None
            retried(client.log_artifact, run_id, str(path), artifact_path=folder)
    metrics_file = out_dir / "metrics.json"
    if metrics_file.is_file():
        metrics = json.loads(metrics_file.read_text())
        have = client.get_run(run_id).data.metrics
        step = max(int(metrics.get("epochs", 1)) - 1, 0)  # beside the last epoch's values
        new = [Metric(k, float(v), 0, step) for k, v in metrics.items() if k not in have]
        for i in range(0, len(new), 1000):  # MLflow takes at most 1000 metrics a call
            retried(client.log_batch, run_id, metrics=new[i : i + 1000])
    if status is not None:
        retried(client.set_terminated, run_id, status=status)


def status(error: BaseException | None) -> str:
    """A run's MLflow status from how it ended: stopped (Ctrl-C, SIGTERM) or broken."""
    if error is None:
        return RunStatus.to_string(RunStatus.FINISHED)
    stopped = isinstance(error, KeyboardInterrupt | SystemExit)
    return RunStatus.to_string(RunStatus.KILLED if stopped else RunStatus.FAILED)
