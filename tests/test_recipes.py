"""The recipes do what their comments say: the learning rate of every step, the momentum as
configured, a cosine that ends when the run ends, and a pruned trial that trains nothing more."""

from pathlib import Path

import lightning as L
import optuna
import pytest
from conftest import ROOT, compose_cfg

from cifar_sweep.train import train

SMALL_FAST_CNN = ["model.stem=8", "model.widths=[8,16,16]"]


class RecordSteps(L.Callback):
    """The learning rate and momentum each optimizer step ran with."""

    def __init__(self):
        self.lrs, self.momenta = [], []

    def on_train_batch_start(self, trainer, module, batch, batch_idx: int) -> None:
        group = trainer.optimizers[0].param_groups[0]
        self.lrs.append(group["lr"])
        self.momenta.append(group["momentum"])


def test_fast94_changes_the_rate_every_step_and_keeps_its_momentum(tmp_path: Path):
    cfg = compose_cfg(
        "+experiment=fast94",
        *SMALL_FAST_CNN,
        "trainer.compile=false",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=5",
        "trainer.limit_val_batches=1",
        "dataset.batch_size=32",
        tmp_path=tmp_path,
    )
    steps = RecordSteps()
    train(cfg, tmp_path / "run", [steps])
    lr = cfg.optimizer.lr
    assert len(steps.lrs) == 10 and len(set(steps.lrs)) == 10, steps.lrs  # one rate per step
    assert steps.lrs[0] == pytest.approx(lr / cfg.scheduler.fn.div_factor)
    assert max(steps.lrs) == pytest.approx(lr, rel=0.2)  # the peak of the cycle is optimizer.lr
    assert set(steps.momenta) == {0.85}  # as configured, not cycled by OneCycleLR


def test_resnet18_budget_cosine_ends_with_the_run_after_its_warm_up(tmp_path: Path):
    cfg = compose_cfg(
        "+experiment=resnet18_budget",
        "model.width=8",
        "trainer.compile=false",
        "trainer.max_epochs=6",
        "scheduler.warmup_epochs=2",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "dataset.batch_size=32",
        tmp_path=tmp_path,
    )
    steps = RecordSteps()
    train(cfg, tmp_path / "run", [steps])
    lr, lrs = cfg.optimizer.lr, steps.lrs
    warm = 2 * 2  # warm-up steps: 2 epochs of 2 batches
    assert lrs[0] == pytest.approx(lr / 10)
    assert lrs[: warm + 1] == sorted(lrs[: warm + 1]) and lrs[warm] == pytest.approx(lr)
    after = lrs[warm:]
    assert after == sorted(after, reverse=True)
    # the last step's rate is the cosine's tail, not the top of a 55-epoch curve
    assert after[-1] < 0.05 * lr, after


@pytest.mark.parametrize("split", ["repeats=3", "dataset.folds=3"])
def test_a_pruned_trial_trains_no_further_seed_or_fold(split: str, tmp_path: Path):
    from cifar_sweep.__main__ import fit
    from cifar_sweep.sweep.pruning import ReportToTrial

    # a pruner that prunes every trial at its first report
    trial = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(lower=2.0)).ask()
    callback = ReportToTrial(trial, monitor="val/acc_best")
    cfg = compose_cfg(split, "trainer.max_epochs=2", tmp_path=tmp_path)
    fit(cfg, tmp_path / "run", [callback], evaluate=False)
    ran = sorted(p.name for p in (tmp_path / "run").iterdir() if p.is_dir())
    assert ran == (["seed0"] if split.startswith("repeats") else ["fold0"])
    with pytest.raises(optuna.TrialPruned, match="after epoch 0"):
        callback.raise_if_pruned()


@pytest.mark.parametrize("option", sorted(p.stem for p in (ROOT / "conf" / "scheduler").glob("*")))
@pytest.mark.parametrize("warmup", [0, 2])
def test_every_schedule_spans_the_run_in_its_interval(option: str, warmup: int):
    """40 epochs of 3 steps: a schedule stepped per step sees 120 rates, per epoch 40."""
    import torch

    from cifar_sweep.classifier import lr_schedule
    from cifar_sweep.instantiate import build

    cfg = compose_cfg(f"scheduler={option}", f"scheduler.warmup_epochs={warmup}")
    if warmup and option in ("reduce_on_plateau", "onecycle"):
        pytest.skip(f"{option} takes no warmup (a plateau cannot be chained; onecycle has its own)")
    optimizer = build(cfg.optimizer)(params=[torch.nn.Parameter(torch.zeros(1))])
    entry = lr_schedule(
        optimizer,
        build(cfg.scheduler.fn),
        monitor=cfg.scheduler.monitor,
        interval=cfg.scheduler.interval,
        warmup_epochs=warmup,
        max_epochs=40,
        steps_per_epoch=3,
    )
    steps = 120 if entry["interval"] == "step" else 40
    lrs = []
    for _ in range(steps):  # OneCycleLR refuses a step past its length
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        entry["scheduler"].step(1.0) if cfg.scheduler.monitor else entry["scheduler"].step()
    assert all(0 <= lr <= cfg.optimizer.lr * 1.0001 for lr in lrs)
    # piecewise with no segments (its default) keeps the optimizer's own values
    assert (len(set(lrs)) == 1) == (option in ("constant", "piecewise") and not warmup), lrs
    if warmup:  # a linear warm-up starts at a tenth of the learning rate
        assert lrs[0] == pytest.approx(cfg.optimizer.lr / 10)
    if option in ("cosine", "onecycle"):  # a null length: the schedule ends with the run
        assert entry["interval"] == "step" and lrs[-1] < 0.05 * cfg.optimizer.lr
