"""Checks of config values that would otherwise fail deep inside torch, or silently do nothing.

Values first, with no torch import, so the command line rejects a bad one at once (the objective's
name among them); then a listing of an image tree; then the `_target_` arguments, augmentation ops
and accelerator, which import torch; last the dry build (dry_build.py), which catches what no value
check names. A sweep's own checks are cifar_sweep/sweep/checks.py.
"""

import inspect
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from cifar_sweep.data.dataset_checks import check_dataset
from cifar_sweep.errors import UserError, did_you_mean
from cifar_sweep.folders import unwritable
from cifar_sweep.values import is_int, is_number

INTEGERS = ("dataset.batch_size", "dataset.eval_batch_size", "trainer.max_epochs")
SCHEDULER_KEYS = {"fn", "monitor", "interval", "warmup_epochs"}  # fn: its class's arguments
# the keys the code passes itself when it builds each target
PASSED = {
    "model": {"num_classes", "in_channels"},
    "optimizer": {"params"},
    "scheduler.fn": {"optimizer"},
}
# augmentation parameters: (rule, test); an op or parameter not listed is refused by build_augment
AUGMENT = {
    "crop.padding": ("an integer >= 0", lambda v: is_int(v) and v >= 0),
    "flip.p": ("a probability in [0, 1]", lambda v: is_number(v) and 0 <= v <= 1),
    "rotation.degrees": (
        "a number of degrees in [0, 180]",
        lambda v: is_number(v) and 0 <= v <= 180,
    ),
    "translate.fraction": ("a fraction in [0, 1]", lambda v: is_number(v) and 0 <= v <= 1),
    "zoom.low": ("a factor > 0", lambda v: is_number(v) and v > 0),
    "zoom.high": ("a factor > 0", lambda v: is_number(v) and v > 0),
    "cutout.size": ("an integer >= 1 (pixels)", lambda v: is_int(v) and v >= 1),
    "color_jitter.brightness": ("a number in [0, 1]", lambda v: is_number(v) and 0 <= v <= 1),
    "color_jitter.contrast": ("a number in [0, 1]", lambda v: is_number(v) and 0 <= v <= 1),
    "color_jitter.saturation": ("a number in [0, 1]", lambda v: is_number(v) and 0 <= v <= 1),
}
# What a run logs (classifier.py's self.log, train.py's own entries), so `objective` can be checked
# before training; tests/test_retrain.py compares it with a real run's metrics.json
LOGGED = {
    "train/loss", "train/acc", "lr", "time/epoch_s", "time/images_per_s", "val/loss", "val/acc",
    "val/acc_best", "test/loss", "test/acc", "model/params", "model/flops", "epochs",
    "time/total_s", "time/epochs_s", "gpu/peak_mem_gb",
}  # fmt: skip
# Lightning's precision names (16 and bf16 are its older spellings)
PRECISIONS = "auto 32 16-mixed bf16-mixed 64 16-true bf16-true 32-true 64-true 16 bf16".split()
# more keys of conf/ whose bad values would fail late or be ignored: key -> (rule, test)
VALUES = {
    "seed": ("an integer", lambda v: is_int(v)),
    "dataset.split_seed": ("an integer", lambda v: is_int(v)),
    "dataset.drop_last": ("true or false", lambda v: isinstance(v, bool)),
    "dataset.placement": ("auto, device or host", lambda v: v in ("auto", "device", "host")),
    "dataset.device_budget_gb": (
        "null (measured) or a number of GB > 0",
        lambda v: v is None or is_number(v) and v > 0,
    ),
    "trainer.label_smoothing": ("a number in [0, 1)", lambda v: is_number(v) and 0 <= v < 1),
    "trainer.gradient_clip_val": (
        "null or a number > 0",
        lambda v: v is None or is_number(v) and v > 0,
    ),
    "trainer.early_stopping.patience": (
        "null or an integer >= 0",
        lambda v: v is None or is_int(v) and v >= 0,
    ),
    "trainer.early_stopping.mode": ("min or max", lambda v: v in ("min", "max")),
    "trainer.progress_bar": ("true or false", lambda v: isinstance(v, bool)),
    "trainer.compile": ("true or false", lambda v: isinstance(v, bool)),
    "trainer.stop_on_nonfinite": ("true or false", lambda v: isinstance(v, bool)),
    "trainer.channels_last": ("auto, true or false", lambda v: v == "auto" or isinstance(v, bool)),
    "trainer.precision": (f"one of {', '.join(PRECISIONS)}", lambda v: str(v) in PRECISIONS),
    # ranges the formulas need, which torch does not check: momentum 1 never forgets a gradient,
    # eps 0 divides 0 by 0 where a gradient vanishes, dropout 1 drops every unit, a gamma or
    # factor of 0 ends training at the next decay, a step_size < 1 decays every step
    "optimizer.momentum": ("a number in [0, 1)", lambda v: is_number(v) and 0 <= v < 1),
    "optimizer.eps": ("a number > 0", lambda v: is_number(v) and v > 0),
    "model.dropout": ("a probability in [0, 1)", lambda v: is_number(v) and 0 <= v < 1),
    "scheduler.fn.gamma": ("a factor in (0, 1]", lambda v: is_number(v) and 0 < v <= 1),
    "scheduler.fn.factor": ("a factor in (0, 1]", lambda v: is_number(v) and 0 < v <= 1),
    "scheduler.fn.eta_min": ("a learning rate >= 0", lambda v: is_number(v) and v >= 0),
    "scheduler.fn.step_size": ("an integer >= 1", lambda v: is_int(v) and v >= 1),
    "scheduler.fn.T_max": (
        "null (the run after the warm-up) or an integer >= 1",
        lambda v: v is None or is_int(v) and v >= 1,
    ),
    "dataset.num_classes": ("an integer >= 2", lambda v: is_int(v) and v >= 2),
    "dataset.channels": ("an integer >= 1", lambda v: is_int(v) and v >= 1),
}
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu", "hpu")


def check(cfg: DictConfig) -> None:
    """Raise a UserError naming the first key whose value cannot work; last, the dry build of
    what the run constructs (a sweep's trial skips the model's forward: training runs it at
    once, and the sweep's own config ran it before the study)."""
    check_values(cfg)
    _scheduler(cfg)
    listing = check_dataset(cfg.dataset)
    for key, passed in PASSED.items():
        _arguments(key, OmegaConf.select(cfg, key), passed)
    from cifar_sweep.data.augment import build_augment

    build_augment(cfg.dataset.augment)  # an unknown op or parameter, named before the data loads
    _accelerator(cfg.trainer)
    from cifar_sweep.trackers.tracker_checks import check_trackers

    check_trackers(cfg)
    from cifar_sweep.dry_build import dry_build

    dry_build(cfg, forward="trial" not in cfg, listing=listing)  # `trial`: sweep/contract.py's


def check_values(cfg: DictConfig) -> None:
    """The values each key alone decides (numbers, ranges, augmentation parameters): no import,
    no file read, so a sweep checks every value its space can draw with them."""
    _numbers(cfg)
    _augment(cfg.dataset.augment)


def several_devices(devices) -> bool:
    """Whether trainer.devices asks for more than one device (a DDP run)."""
    return (
        (is_int(devices) and devices not in (0, 1))  # -1: every device
        or (OmegaConf.is_list(devices) and len(devices) > 1)
        or (isinstance(devices, str) and ("," in devices.strip(", ") or devices == "-1"))
    )


def check_objective(cfg: DictConfig) -> None:
    """Where a run returns `objective` (the command line, a sweep's trials): every name is one the
    run will log, else each run trains fully and only then fails."""
    objective = cfg.objective
    if not isinstance(objective, str) and not OmegaConf.is_list(objective):
        raise UserError(f"objective={objective} must be a metric name, or a list of them")
    names = [objective] if isinstance(objective, str) else list(objective)
    repeats = cfg.get("repeats", 1)
    logged = LOGGED | {f"{k}_std" for k in LOGGED} if is_int(repeats) and repeats > 1 else LOGGED
    for name in names:
        if not isinstance(name, str) or name not in logged:
            raise UserError(
                f"objective={name}: not a metric the run logs{did_you_mean(name, logged)} "
                f"(metrics: {', '.join(sorted(LOGGED))})"
            )
        if name.startswith("val/") and cfg.dataset.val_size == 0 and not cfg.dataset.get("folds"):
            raise UserError(
                f"objective={name} needs a validation split (dataset.val_size>0), or use "
                "objective=test/acc"
            )


def _numbers(cfg: DictConfig) -> None:
    lr = OmegaConf.select(cfg, "optimizer.lr")
    if not is_number(lr) or lr <= 0:
        raise UserError(f"optimizer.lr={lr} must be a number > 0")
    for key in INTEGERS:
        value = OmegaConf.select(cfg, key)
        if not is_int(value) or value <= 0:
            raise UserError(f"{key}={value} must be an integer > 0")
    wd = OmegaConf.select(cfg, "optimizer.weight_decay", default=0)
    if not is_number(wd) or wd < 0:
        raise UserError(f"optimizer.weight_decay={wd} must be a number >= 0")
    folds = OmegaConf.select(cfg, "dataset.folds")
    if folds is not None and (not is_int(folds) or folds < 2):
        raise UserError(f"dataset.folds={folds} must be null or an integer >= 2")
    for key, (rule, ok) in VALUES.items():
        value = OmegaConf.select(cfg, key, default=None)
        if OmegaConf.select(cfg, key, default="absent") != "absent" and not ok(value):
            raise UserError(f"{key}={value} must be {rule}")
    repeats = cfg.get("repeats", 1)
    if not is_int(repeats) or repeats < 1:
        raise UserError(f"repeats={repeats} must be an integer >= 1")
    if repeats > 1 and folds:
        raise UserError(
            f"repeats={repeats} with dataset.folds={folds}: choose one (seeds or folds)"
        )
    if (repeats > 1 or folds) and several_devices(cfg.trainer.devices):
        raise UserError(  # Lightning would start the other ranks again for each run
            f"trainer.devices={cfg.trainer.devices}: repeats and dataset.folds run one training "
            "after another in one process, which several devices cannot; use trainer.devices=1"
        )


def _augment(spec) -> None:
    """Each augmentation parameter in its range (a negative crop padding fails in torch)."""
    for op, params in (spec or {}).items():
        for name, value in (params or {}).items():
            rule, ok = AUGMENT.get(f"{op}.{name}", (None, None))
            if ok is not None and not ok(value):
                raise UserError(f"dataset.augment.{op}.{name}={value} must be {rule}")
    zoom = (spec or {}).get("zoom") or {}
    if is_number(zoom.get("low")) and is_number(zoom.get("high")) and zoom.low > zoom.high:
        raise UserError(
            f"dataset.augment.zoom.low={zoom.low} is above zoom.high={zoom.high}: low comes first"
        )


def _accelerator(t: DictConfig) -> None:
    """An accelerator that exists here (Lightning's own error is a 57-line traceback)."""
    if t.accelerator not in ACCELERATORS:
        raise UserError(
            f"trainer.accelerator={t.accelerator}{did_you_mean(t.accelerator, ACCELERATORS)} "
            f"(choose from {', '.join(ACCELERATORS)})"
        )
    if t.accelerator not in ("gpu", "cuda"):
        return
    import torch

    visible = torch.cuda.device_count()
    if not visible:
        raise UserError(
            f"trainer.accelerator={t.accelerator}: no CUDA GPU is visible here; use "
            "trainer.accelerator=auto (a GPU when there is one) or cpu"
        )
    if is_int(t.devices) and t.devices > visible:
        raise UserError(f"trainer.devices={t.devices}: only {visible} GPU(s) are visible")


def _scheduler(cfg: DictConfig) -> None:
    fn_keys = {f"fn.{k}" for k in cfg.scheduler.get("fn") or {} if not k.startswith("_")}
    _known_keys("scheduler", cfg.scheduler, SCHEDULER_KEYS, suggest=SCHEDULER_KEYS | fn_keys)
    warmup, monitor = cfg.scheduler.warmup_epochs, cfg.scheduler.monitor
    if not is_int(warmup) or warmup < 0:
        raise UserError(f"scheduler.warmup_epochs={warmup} must be an integer >= 0")
    if warmup and monitor:
        raise UserError(
            f"scheduler.warmup_epochs={warmup} cannot come before a plateau schedule (it steps "
            f"on scheduler.monitor={monitor}): set scheduler.warmup_epochs=0 or another scheduler"
        )
    if monitor and monitor.startswith("val/") and cfg.dataset.val_size == 0:
        raise UserError(
            f"scheduler.monitor={monitor} needs a validation split (dataset.val_size>0)"
        )


def _known_keys(group: str, node: DictConfig, allowed: set[str], why: str = "", suggest=()) -> None:
    for key in node:
        if key not in allowed:
            raise UserError(
                f"{group}.{key}: no such key{why}{did_you_mean(key, suggest or allowed)} "
                f"(keys: {', '.join(sorted(allowed))})"
            )


def _arguments(key: str, node: DictConfig, passed: set[str]) -> None:
    """Every key of a `_target_` node must be an argument of its target (a misspelt one would
    fail deep inside training, or be ignored)."""
    from hydra.utils import get_object

    try:
        target = get_object(node._target_)
    except Exception as e:
        raise UserError(f"{key}._target_={node._target_}: cannot import it ({e})") from None
    params = inspect.signature(target).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return
    accepted = set(params) - passed - {"self"}
    for name in node:
        if not name.startswith("_") and name not in accepted:
            raise UserError(
                f"{key}.{name}: {node._target_} takes no such argument"
                f"{did_you_mean(name, accepted)} (arguments: {', '.join(sorted(accepted))})"
            )


class CheckOutputDir(Callback):
    """Refuse an output folder that cannot be created, naming it (Hydra would show a traceback),
    and a resume folder that is not a run's, before Hydra makes the run folder (by default the
    resume folder itself)."""

    @staticmethod
    def _fail(message: str) -> None:
        print(f"error: {message}", file=sys.stderr)
        sys.exit(1)

    def _check(self, key: str, folder: str) -> None:
        blocker = unwritable(Path(folder).absolute())
        if blocker is not None:
            self._fail(f"{key}={folder}: cannot create it ({blocker} is not a writable folder)")

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        resume = config.get("resume")
        if resume and not (Path(resume) / ".hydra" / "config.yaml").is_file():
            self._fail(f"resume={resume}: not a run folder (no .hydra/config.yaml)")
        self._check("hydra.run.dir", config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self._check("hydra.sweep.dir", config.hydra.sweep.dir)
