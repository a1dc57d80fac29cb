"""train(cfg) -> metrics: one training run, kept apart from Hydra so tests and sweepers call it."""

import gc
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

from cifar_sweep import evaluation, flops, full_disk, resume
from cifar_sweep.checks import check
from cifar_sweep.classifier import Classifier
from cifar_sweep.data.datamodule import ImageDataModule
from cifar_sweep.divergence import StopOnDivergence, raise_if_diverged
from cifar_sweep.errors import UserError
from cifar_sweep.instantiate import build
from cifar_sweep.resume import AtomicCheckpoint
from cifar_sweep.trackers.loggers import build_callbacks, build_loggers

log = logging.getLogger(__name__)
# trainer.* keys the runner reads itself; every other trainer.* key is a Lightning Trainer argument
RUNNER_KEYS = {
    "channels_last",
    "compile",
    "label_smoothing",
    "early_stopping",
    "max_loss",
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

    def init_predict_tqdm(self) -> Tqdm:
        return Tqdm(disable=True)


def on_gpu(t: DictConfig) -> bool:
    """Whether trainer.accelerator puts the run on a CUDA GPU."""
    return t.accelerator in ("gpu", "cuda") or (
        t.accelerator == "auto" and torch.cuda.is_available()
    )


def device_defaults(cfg: DictConfig) -> DictConfig:
    """`cfg` with trainer.precision, channels_last and benchmark `auto` decided for the device:
    on a GPU bf16-mixed (16-mixed where bf16 would only be emulated, as on a V100 or T4) and
    NHWC, where tensor cores want them; on the CPU 32-bit and NCHW; cuDNN's algorithm search
    unless the run must be deterministic. With trainer.compile, the last partial training batch
    is dropped (its shape would compile the model again). A copy: the caller's config stays."""
    t = cfg.trainer
    gpu = on_gpu(t)
    bf16 = gpu and torch.cuda.is_bf16_supported(including_emulation=False)
    auto = {
        "precision": "bf16-mixed" if bf16 else "16-mixed" if gpu else "32",
        "channels_last": gpu,
        "benchmark": t.deterministic in (False, None),
    }
    decided = {k: v for k, v in auto.items() if t.get(k) == "auto"}
    drop_last = {"drop_last": True} if t.compile else {}
    return OmegaConf.merge(cfg, {"trainer": decided, "dataset": drop_last})


def release_gpu_memory() -> None:
    """Free an earlier run's tensors and cached blocks and restart the peak count: workers that
    share a GPU would run each other out of memory, and gpu/peak_mem_gb would report the
    process's peak rather than this run's."""
    if torch.cuda.is_initialized():
        gc.collect()  # Lightning's trainer and module refer to each other: only gc frees them
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


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


def build_trainer(
    cfg: DictConfig, out_dir: Path, callbacks: list, *, written: DictConfig | None = None
) -> L.Trainer:
    """A Lightning Trainer from trainer.*, with our checkpoint, early stopping and logger.
    `written`: the config before device_defaults, which checkpoints keep (default `cfg`)."""
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
        resume.EveryEpoch(out_dir, written or cfg),
        *callbacks,
        *build_callbacks(cfg.get("callbacks")),
        *([OneProgressBar()] if t.progress_bar else []),
    ]
    if validates and t.early_stopping.patience is not None:
        callbacks.append(EarlyStopping(**t.early_stopping))
    if t.stop_on_nonfinite:
        callbacks.append(StopOnDivergence(max_loss=t.max_loss))
    args = trainer_args(t)
    if not validates:
        args["limit_val_batches"] = 0
    return L.Trainer(
        **args,
        default_root_dir=out_dir,
        logger=build_loggers(cfg.get("logger"), out_dir) or False,
        callbacks=callbacks,
        enable_progress_bar=t.progress_bar,
    )


def build_module(cfg: DictConfig, data: ImageDataModule) -> tuple[Classifier, int, int]:
    """The LightningModule for cfg.model on `data`, and the model's parameter and FLOP counts."""
    model = build(cfg.model, num_classes=data.num_classes, in_channels=data.channels)
    params, flop_count = flops.count(model, data.image_shape)
    if cfg.trainer.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.trainer.compile:
        model.compile()  # in place: checkpoints keep the plain model's keys (no `_orig_mod.`)
    module = Classifier(
        model=model,
        optimizer=build(cfg.optimizer),
        scheduler=build(cfg.scheduler.fn),
        scheduler_monitor=cfg.scheduler.monitor,
        scheduler_interval=cfg.scheduler.interval,
        warmup_epochs=cfg.scheduler.warmup_epochs,
        num_classes=data.num_classes,
        label_smoothing=cfg.trainer.label_smoothing,
    )
    return module, params, flop_count


def train(
    cfg: DictConfig,
    out_dir: Path,
    callbacks: list | None = None,
    *,
    evaluate: bool = False,
    test: bool = True,
    fold: int | None = None,
) -> dict[str, float]:
    """Train, test the best checkpoint, write metrics.json (and with `evaluate`, the evaluation
    report: per-class metrics, AUC, confusion matrix, from the one pass that gives test/acc;
    without `test` or `evaluate`, no test set at all); return the metrics. `fold`: validate on
    that fold of `dataset.folds` (cross-validation). A diverged run raises instead."""
    release_gpu_memory()  # what an earlier run in this process left, a failed one's too
    try:
        return _train(cfg, out_dir, callbacks or [], evaluate=evaluate, test=test, fold=fold)
    except Exception as e:  # a full disk: checkpoints, metrics.json, TensorBoard, the report
        full = full_disk.cause(e)
        if full is None or isinstance(e, UserError):
            raise
        elsewhere = "hydra.run.dir=<a folder on another disk> (a sweep's: hydra.sweep.dir=...)"
        raise full_disk.error(full, out_dir, elsewhere) from e
    finally:
        release_gpu_memory()


def _train(
    cfg: DictConfig, out_dir: Path, callbacks: list, *, evaluate: bool, test: bool, fold: int | None
) -> dict[str, float]:
    t_start = time.perf_counter()
    check(cfg)
    written, cfg = cfg, device_defaults(cfg)  # a resume compares `auto` as written: any device
    quiet_lightning()
    L.seed_everything(cfg.seed, verbose=False)
    out_dir.mkdir(parents=True, exist_ok=True)
    # refuses unknown keys before the data
    trainer = build_trainer(cfg, out_dir, callbacks, written=written)
    data = ImageDataModule(
        cfg.dataset, seed=cfg.seed, channels_last=cfg.trainer.channels_last, fold=fold
    )
    data.setup()
    module, params, flop_count = build_module(cfg, data)
    hparams = OmegaConf.to_container(cfg, resolve=True)
    for key in ("hydra", "logger"):  # Hydra's own and the trackers' run ids: not the recipe
        hparams.pop(key, None)
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):  # the HParams tab's metrics
            logger.log_hyperparams(hparams, {"val/acc_best": 0.0, "test/acc": 0.0})
        else:
            logger.log_hyperparams(hparams)
        logger.log_metrics({"model/params": params, "model/flops": flop_count}, step=0)
    begin = resume.start(written)
    if begin.ended is None:  # else its training had ended: straight to testing its best
        trainer.fit(module, datamodule=data, ckpt_path=begin.checkpoint)
    fitted = begin.ended or resume.record(trainer)
    metrics, epochs = dict(fitted["metrics"]), fitted["epochs"]
    trainer.strategy.barrier()  # on N devices: rank 0 has renamed the best checkpoint into place
    last = begin.checkpoint if begin.ended else None  # the last weights (None: in memory)
    best = resume.testable(fitted["best"], last=last) if evaluate or test else None
    if evaluate:  # one pass over the test set: test/acc and the report from the same predictions
        trainer.limit_predict_batches = trainer.limit_test_batches
        probs, labels = evaluation.predict(trainer, module, data.test_dataloader(), ckpt_path=best)
        metrics["test/acc"] = (probs.argmax(1) == labels).float().mean().item()
        metrics["test/loss"] = module.loss(probs.clamp_min(1e-12).log(), labels).item()
    elif test:
        trainer.test(module, datamodule=data, ckpt_path=best, verbose=False)
        tested = trainer.callback_metrics.items()
        metrics.update({k: float(v) for k, v in tested if k.startswith("test/")})
    if cfg.trainer.stop_on_nonfinite:
        last_epoch = max(epochs - 1, 0)
        raise_if_diverged(metrics, max_loss=cfg.trainer.max_loss, epoch=last_epoch)
    metrics.update(
        {
            "model/params": params,
            "model/flops": flop_count,
            "epochs": epochs,
            "time/total_s": time.perf_counter() - t_start,
            "time/epochs_s": module.epochs_s,
        }
    )
    if torch.cuda.is_available():
        metrics["gpu/peak_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
    if not trainer.is_global_zero:  # on N devices rank 0 writes and logs; the metrics are synced
        return metrics
    if evaluate:
        report = evaluation.report(probs, labels, data.classes, metrics)
        evaluation.write(report, data.classes, out_dir)
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
