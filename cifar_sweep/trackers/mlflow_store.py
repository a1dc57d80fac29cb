"""The MLflow tracking store: opened (the embedded SQLite one made once), an experiment found or
made, and writes that wait out a locked SQLite database.

Why by hand: several processes on one SQLite store race on its schema migration (hydraflow
#245), so the sweep process makes it before its workers start, and they only open it; SQLite
lets one writer at a time, so two workers logging at once meet "database is locked", which
MLflow raises rather than waits out: `retried` does (eight lines, where tenacity would be a
dependency for them). Every call names its run by id (MlflowClient), never the fluent API's
process-wide active run, which the trials of one worker process would share.
"""

import os
import random
import time
from pathlib import Path

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

# MLflow prints two lines of links per run it ends on a server: per trial, in a sweep's log;
# the sweep says where to look once, at its end (set it to false to have them back)
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
LOCKED_TRIES = 8  # about 6 s of backoff in all: a worker's burst of writes is milliseconds
# MLflow 3's UI opens an experiment of no kind on its GenAI pages (traces, prompts): ours are
# training runs
KIND = {"mlflow.experimentKind": "custom_model_development"}


def retried(call, *args, **kwargs):
    """`call(*args, **kwargs)`, again after a pause while SQLite says the database is locked."""
    for attempt in range(LOCKED_TRIES):
        try:
            return call(*args, **kwargs)
        except MlflowException as e:
            if "database is locked" not in str(e) or attempt == LOCKED_TRIES - 1:
                raise
            time.sleep(0.05 * 2**attempt * random.uniform(0.5, 1.5))


def sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite:/// tracking URI; None for a server."""
    return Path(uri.partition(":///")[2]) if uri.startswith("sqlite:") else None


def open_store(uri: str) -> MlflowClient:
    """A client of the store at `uri`; an embedded SQLite store is created if it is not there
    (its folder too), so call this once in the sweep process before its workers open it."""
    path = sqlite_path(uri)
    if path is not None:
        path.absolute().parent.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri=uri)
    retried(client.search_experiments, max_results=1)  # MLflow makes the tables on first use
    return client


def artifact_root(uri: str, artifact_location: str | None) -> str | None:
    """Where a new experiment keeps its artifacts: as configured, else for a SQLite store
    mlartifacts/ beside the database (as `mlflow server` does), else the server's choice."""
    path = sqlite_path(uri)
    if artifact_location or path is None:
        return artifact_location
    return (path.absolute().parent / "mlartifacts").as_uri()


def experiment(client: MlflowClient, name: str, *, artifact_location: str | None) -> str:
    """The id of the experiment `name`, made if missing (a deleted one is restored)."""
    found = client.get_experiment_by_name(name)
    if found is None:
        try:
            return retried(
                client.create_experiment, name, artifact_location=artifact_location, tags=KIND
            )
        except MlflowException as e:  # another process made it a moment ago
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            found = client.get_experiment_by_name(name)
    if found.lifecycle_stage == "deleted":
        retried(client.restore_experiment, found.experiment_id)
    return found.experiment_id
