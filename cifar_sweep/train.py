"""train(cfg) -> metrics: one training run, kept apart from Hydra so tests and sweepers call it."""

import json
import logging
import math
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import disable_possible_user_warnings
from omegaconf import DictConfig, OmegaConf

from cifar_sweep import evaluation, flops
from cifar_sweep.checks import check
from cifar_sweep.data import ImageDataModule
from cifar_sweep.errors import UserError
from cifar_sweep.module import Classifier

log = logging.getLogger(__name__)
TRUSTED_TARGETS = ["torch.*", "cifar_sweep.*"]  # what a config's _target_ may name


def build(node: DictConfig, **kwargs):
    """hydra.utils.instantiate, limited to torch and our own classes."""
    return instantiate(node, _execution_whitelist_=TRUSTED_TARGETS, **kwargs)


def quiet_lightning() -> None:
    """Silence Lightning's start-up tips and hardware lines; keep real warnings."""
    disable_possible_user_warnings()
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)


class OneProgressBar(TQDMProgressBar):
    """The epoch bar only: validation and testing run without bars of their own."""

    def init_validation_tqdm(self) -> Tqdm:
        return Tqdm(disable=True)

    def init_test_tqdm(self) -> Tqdm:
        return Tqdm(disable=True)


def build_trainer(cfg: DictConfig, out_dir: Path, callbacks: list) -> L.Trainer:
    t = cfg.trainer
    # val_size=0 (and no folds): train on train+validation, keep the last epoch
    validates = cfg.dataset.val_size > 0 or bool(cfg.dataset.get("folds"))
    checkpoint = (
        ModelCheckpoint(dirpath=out_dir / "checkpoints", monitor="val/acc", mode="max")
        if validates
        else ModelCheckpoint(dirpath=out_dir / "checkpoints")
    )
    callbacks = [checkpoint, *callbacks, *([OneProgressBar()] if t.progress_bar else [])]
    if validates and t.early_stopping.patience is not None:
        callbacks.append(EarlyStopping(**t.early_stopping))
    return L.Trainer(
        default_root_dir=out_dir,
        max_epochs=t.max_epochs,
        accelerator=t.accelerator,
        devices=t.devices,
        precision=t.precision,
        deterministic=t.deterministic,
        gradient_clip_val=t.gradient_clip_val,
        limit_train_batches=t.limit_train_batches,
        limit_val_batches=t.limit_val_batches,
        logger=TensorBoardLogger(out_dir, name="tb", version="", default_hp_metric=False),
        callbacks=callbacks,
        enable_progress_bar=t.progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,  # a pruner must see epoch 0 first; sanity checks only cost time
        log_every_n_steps=10,
    )


def train(
    cfg: DictConfig, out_dir: Path, callbacks: list | None = None, *, evaluate: bool = False
) -> dict[str, float]:
    """Train, test the best checkpoint, write metrics.json (and with `evaluate`, the evaluation
    report: per-class metrics, AUC, confusion matrix); return the metrics."""
    t_start = time.perf_counter()
    check(cfg)
    quiet_lightning()
    L.seed_everything(cfg.seed, verbose=False)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = ImageDataModule(cfg.dataset, seed=cfg.seed, channels_last=cfg.trainer.channels_last)
    data.setup()
    model = build(cfg.model, num_classes=data.num_classes, in_channels=data.channels)
    params, flop_count = flops.count(model, data.image_shape)
    if cfg.trainer.channels_last:
        model = model.to(memory_format=torch.channels_last)
    module = Classifier(
        model=torch.compile(model) if cfg.trainer.compile else model,
        optimizer=build(cfg.optimizer),
        scheduler=build(cfg.scheduler.fn),
        scheduler_monitor=cfg.scheduler.monitor,
        warmup_epochs=cfg.scheduler.warmup_epochs,
        num_classes=data.num_classes,
        label_smoothing=cfg.trainer.label_smoothing,
    )
    trainer = build_trainer(cfg, out_dir, callbacks or [])
    hparams = OmegaConf.to_container(cfg, resolve=True)
    hparams.pop("hydra", None)
    trainer.logger.log_hyperparams(hparams, {"val/acc_best": 0.0, "test/acc": 0.0})
    trainer.logger.log_metrics({"model/params": params, "model/flops": flop_count}, step=0)
    trainer.fit(module, datamodule=data)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    best = trainer.checkpoint_callback.best_model_path
    trainer.test(module, datamodule=data, ckpt_path=best or None, verbose=False)
    tested = trainer.callback_metrics.items()
    metrics.update({k: float(v) for k, v in tested if k.startswith("test/")})
    metrics.update(
        {
            "model/params": params,
            "model/flops": flop_count,
            "epochs": trainer.current_epoch,
            "time/total_s": time.perf_counter() - t_start,
        }
    )
    if torch.cuda.is_available():
        metrics["gpu/peak_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
    if evaluate:
        probs, labels = evaluation.predict(module.to(trainer.strategy.root_device),
                                           data.test_dataloader())  # fmt: skip
        evaluation.write(evaluation.report(probs, labels, data.classes, metrics), data.classes,
                         out_dir)  # fmt: skip
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    log.info("metrics: %s", {k: round(v, 4) for k, v in sorted(metrics.items())})
    return metrics


def objective(metrics: dict[str, float], name) -> float | list[float]:
    """The metric(s) a sweeper optimizes; a missing or non-finite one is an error, not a number."""
    if not isinstance(name, str):
        return [objective(metrics, n) for n in name]
    if name not in metrics:
        raise UserError(f"objective={name!r} was not logged; available: {sorted(metrics)}")
    value = metrics[name]
    if not math.isfinite(value):
        raise UserError(f"objective {name} is {value}: the run diverged")
    return value
