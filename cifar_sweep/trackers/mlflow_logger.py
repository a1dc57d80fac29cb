"""Lightning's MLFlowLogger with four changes: a metric's step is its epoch, an epoch is one
write, parameters are the config's dotted keys, and the run is left open for whoever owns it.

Steps: Lightning logs by global step, and a pruned trial's curve should end at the epoch it was
stopped; every epoch-end log carries `epoch`, which becomes the step. One write: Lightning logs
an epoch's validation metrics, then its training metrics (last); each write is a SQLite commit
(about 5-20 ms on 2 busy cores), so an epoch's are written together once its training metrics
come (or the run ends), which also leaves no half epoch behind a killed run. Parameters: one
name per concept, `optimizer.lr` as on the command line (Lightning would write `optimizer/lr`
and cut values at 250 characters); a parameter the run has already (a trial's swept values,
set by the sweep; a retry's, set by its first attempt) is left as it is. The run is ended by its
owner (the sweep for a trial, runs.py for a run, seed or fold), which knows how it ended;
Lightning would mark it FINISHED after every fit and test. Each write waits out a locked SQLite
store.
"""

from collections.abc import Mapping

from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only
from mlflow.entities import Param

from cifar_sweep.trackers.mlflow_store import retried


def flat(params: Mapping, prefix: str = "") -> dict[str, str]:
    """A nested config as {dotted key: value as text}; a list stays one value."""
    out = {}
    for key, value in params.items():
        if isinstance(value, Mapping):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = str(value)
    return out


class EpochMLFlowLogger(MLFlowLogger):
    """MLFlowLogger with epochs as steps, one write an epoch, dotted parameters and the run
    left open."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._step, self._pending = 0, {}  # the epoch being gathered, and its metrics so far

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        epoch = metrics.get("epoch")
        step = int(epoch) if epoch is not None else step or 0
        if self._pending and step != self._step:
            self._write()
        self._step = step
        self._pending.update({k: v for k, v in metrics.items() if k != "epoch"})
        if any(k.startswith("train/") for k in metrics):  # the epoch's last log
            self._write()

    def _write(self) -> None:
        if self._pending:
            retried(super().log_metrics, self._pending, step=self._step)
        self._pending = {}

    @rank_zero_only
    def log_hyperparams(self, params, *args) -> None:
        """`params` (the run's config) as dotted parameters, those the run has left as they are;
        `args` (TensorBoard's hparams metrics) are not MLflow's."""
        have = self.experiment.get_run(self.run_id).data.params
        new = [Param(k, v[:6000]) for k, v in flat(params).items() if k not in have]
        for i in range(0, len(new), 100):  # MLflow takes at most 100 parameters a call
            retried(self.experiment.log_batch, self.run_id, params=new[i : i + 100])

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        self._write()  # the last epoch's validation when no training followed, a test's metrics
        if self._initialized and self._checkpoint_callback:  # log_model=true: the best checkpoint
            self._scan_and_log_checkpoints(self._checkpoint_callback)
