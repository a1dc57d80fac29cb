"""train(cfg) -> metrics: one training run, kept apart from Hydra so tests and sweepers call it."""

import inspect
import json
import logging
import math
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import disable_possible_user_warnings
from omegaconf import DictConfig, OmegaConf

from cifar_sweep import evaluation, flops, resume
from cifar_sweep.checks import check
from cifar_sweep.classifier import Classifier
from cifar_sweep.data.datamodule import ImageDataModule
from cifar_sweep.divergence import StopOnNonFinite
from cifar_sweep.errors import UserError
from cifar_sweep.resume import AtomicCheckpoint
from cifar_sweep.targets import build

log = logging.getLogger(__name__)
# trainer.* keys the runner reads itself; every other trainer.* key is a Lightning Trainer argument
RUNNER_KEYS = {
    "channels_last",
    "compile",
    "label_smoothing",
    "early_stopping",
    "progress_bar",
    "stop_on_nonfinite",
}
SET_BY_RUNNER = {"default_root_dir", "logger", "callbacks", "enable_progress_bar"}


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


def on_gpu(t: DictConfig) -> bool:
    """Whether trainer.accelerator puts the run on a CUDA GPU."""
    return t.accelerator in ("gpu", "cuda") or (
        t.accelerator == "auto" and torch.cuda.is_available()
    )


def device_defaults(cfg: DictConfig) -> DictConfig:
    """`cfg` with trainer.precision and trainer.channels_last `auto` decided for the device: on a
    GPU bf16-mixed (16-mixed without bf16) and NHWC, where tensor cores want them; on the CPU
    32-bit and NCHW. A copy: the caller's config stays as it was."""
    t = cfg.trainer
    if "auto" not in (t.precision, t.channels_last):
        return cfg
    gpu = on_gpu(t)
    bf16 = gpu and torch.cuda.is_bf16_supported()
    decided = {
        "precision": ("bf16-mixed" if bf16 else "16-mixed" if gpu else "32")
        if t.precision == "auto"
        else t.precision,
        "channels_last": gpu if t.channels_last == "auto" else t.channels_last,
    }
    return OmegaConf.merge(cfg, {"trainer": decided})


def trainer_args(t: DictConfig) -> dict:
    """The trainer.* keys that are Lightning Trainer arguments; any other key is refused."""
    args = {k: v for k, v in t.items() if k not in RUNNER_KEYS}
    accepted = set(inspect.signature(L.Trainer.__init__).parameters) - SET_BY_RUNNER - {"self"}
    for key in args:
        if key not in accepted:
            hint = (
                "set by the runner" if key in SET_BY_RUNNER else "not a Lightning Trainer argument"
            )
            raise UserError(f"trainer.{key}: {hint} (runner keys: {sorted(RUNNER_KEYS)})")
    return args


def build_trainer(cfg: DictConfig, out_dir: Path, callbacks: list) -> L.Trainer:
    """A Lightning Trainer from trainer.*, with our checkpoint, early stopping and logger."""
    t = cfg.trainer
    # val_size=0 (and no folds): train on train+validation, keep the last epoch, validate never
    validates = cfg.dataset.val_size > 0 or bool(cfg.dataset.get("folds"))
    checkpoint = (
        AtomicCheckpoint(dirpath=out_dir / "checkpoints", monitor="val/acc", mode="max")
        if validates
        else AtomicCheckpoint(dirpath=out_dir / "checkpoints")
    )
    callbacks = [
        checkpoint,
        resume.EveryEpoch(out_dir, cfg),
        *callbacks,
        *([OneProgressBar()] if t.progress_bar else []),
    ]
    if validates and t.early_stopping.patience is not None:
        callbacks.append(EarlyStopping(**t.early_stopping))
    if t.stop_on_nonfinite:
        callbacks.append(StopOnNonFinite())
    args = trainer_args(t)
    if not validates:
        args["limit_val_batches"] = 0
    return L.Trainer(
        **args,
        default_root_dir=out_dir,
        logger=TensorBoardLogger(out_dir, name="tb", version="", default_hp_metric=False),
        callbacks=callbacks,
        enable_progress_bar=t.progress_bar,
    )


def train(
    cfg: DictConfig,
    out_dir: Path,
    callbacks: list | None = None,
    *,
    evaluate: bool = False,
    fold: int | None = None,
) -> dict[str, float]:
    """Train, test the best checkpoint, write metrics.json (and with `evaluate`, the evaluation
    report: per-class metrics, AUC, confusion matrix); return the metrics. `fold`: validate on
    that fold of `dataset.folds` (cross-validation)."""
    t_start = time.perf_counter()
    check(cfg)
    cfg = device_defaults(cfg)
    quiet_lightning()
    L.seed_everything(cfg.seed, verbose=False)
    out_dir.mkdir(parents=True, exist_ok=True)
    trainer = build_trainer(cfg, out_dir, callbacks or [])  # refuses unknown keys before the data
    data = ImageDataModule(
        cfg.dataset, seed=cfg.seed, channels_last=cfg.trainer.channels_last, fold=fold
    )
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
    hparams = OmegaConf.to_container(cfg, resolve=True)
    hparams.pop("hydra", None)
    trainer.logger.log_hyperparams(hparams, {"val/acc_best": 0.0, "test/acc": 0.0})
    trainer.logger.log_metrics({"model/params": params, "model/flops": flop_count}, step=0)
    trainer.fit(module, datamodule=data, ckpt_path=resume.checkpoint(cfg))
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
        probs, labels = evaluation.predict(
            module.to(trainer.strategy.root_device), data.test_dataloader()
        )
        evaluation.write(
            evaluation.report(probs, labels, data.classes, metrics), data.classes, out_dir
        )
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
