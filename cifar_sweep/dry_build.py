"""The dry build: what a run builds from its config, built on dummy inputs before any data is read.

The optimizer on one dummy parameter and the scheduler on it (with the Classifier's warm-up
chaining), each stepped once; the model on dummy images of the dataset's shape, forward and
backward; a Trainer from trainer.*, which resolves the accelerator, devices, strategy and
precision as training will. Any exception becomes one line, `<group>: <its first line>
(<group>.<key>=<value>, ...)`, as does what builds but cannot train: a learning rate that is not
finite and > 0 after a step, weights a step made non-finite, logits of the wrong shape or not
finite, weights the loss's gradient does not reach.

Hand-written: lists of value checks are never complete, and no library turns a constructor's
exception into the config keys behind it (Lightning's fast_dev_run trains a real batch, so it
reads the data first, and raises with a traceback).
"""

import contextlib
import inspect
import logging
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf
from torch.optim.lr_scheduler import ReduceLROnPlateau

from cifar_sweep.classifier import lr_schedule
from cifar_sweep.data import tree
from cifar_sweep.data.decode import GRAY_BANDS
from cifar_sweep.errors import UserError
from cifar_sweep.instantiate import build

# trainer.* `auto`s the runner decides per device (train.device_defaults), valid on any device:
# Lightning's defaults stand in for them
RUNNER_AUTO = {"precision", "benchmark"}
DRY_TRAINER = {
    "logger": False,
    "enable_checkpointing": False,
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "callbacks": [],
}
LIGHTNING_INFO = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")
GROUPS = ["dataset", "model", "optimizer", "scheduler", "trainer"]
_built: str | None = None  # the last config built here: a run checks twice (command, train())


@dataclass
class DryData:
    """What the dry build needs of the dataset, known before its images are read."""

    classes: int
    shape: tuple[int, int, int]  # channels, height, width
    origin: str  # where the shape comes from, for the message
    images: int  # training images, before the validation split


def dry_build(cfg: DictConfig, *, forward: bool, listing: tree.Tree | None = None) -> None:
    """Build `cfg`'s optimizer, scheduler, model and trainer on dummy inputs; raise a UserError
    naming the group and its keys for one that fails or cannot train. Without `forward` the model
    is built but not run. `listing`: the folder source's tree, where the caller has listed it."""
    global _built
    key = str([cfg[group] for group in GROUPS])
    if key == _built:
        return
    errors = GroupErrors(cfg)
    with _quiet(), _one_thread(), torch.random.fork_rng(devices=[]):  # a seeded run draws the same
        torch.manual_seed(0)
        data = dry_data(cfg.dataset, listing)
        _optimizer_and_scheduler(cfg, data, errors)
        _model(cfg, data, errors, forward=forward)
        _trainer(cfg, errors)
    _built = key


class GroupErrors:
    """A group's failure as one line, with the keys its message names or the user set (else
    all of the group's keys)."""

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        task = OmegaConf.select(cfg, "hydra.overrides.task", default=None)
        if task is None:
            from hydra.core.hydra_config import HydraConfig

            task = HydraConfig.get().overrides.task if HydraConfig.initialized() else []
        self.set = {str(o).split("=", 1)[0].lstrip("+~") for o in task}

    def line(self, group: str, message: str, on: str = "") -> UserError:
        leaves = list(_leaves(group, self.cfg[group]))
        chosen = [
            (k, v)
            for k, v in leaves
            if k in self.set or re.search(rf"\b{re.escape(k.rsplit('.', 1)[-1])}\b", message, re.I)
        ]
        keys = ", ".join(f"{k}={_shown(v)}" for k, v in chosen or leaves)
        return UserError(f"{group}: {message} ({keys}{on})")

    @contextlib.contextmanager
    def raising(self, group: str, on: str = ""):
        """Any exception inside as this group's one line; a UserError (it names its key) as is."""
        try:
            yield
        except UserError:
            raise
        except Exception as e:
            wrapped = isinstance(e, InstantiationException) and e.__cause__ is not None
            cause = e.__cause__ if wrapped else e  # the model's own error, not Hydra's wrapping
            if isinstance(cause, UserError):
                raise cause from None
            first = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
            raise self.line(group, first, on) from None


def _optimizer_and_scheduler(cfg: DictConfig, data: DryData, errors: GroupErrors) -> None:
    """The optimizer on one weight, the scheduler on it, a step of each in training's order."""
    weight = torch.nn.Parameter(torch.ones(2))
    with errors.raising("optimizer"):
        optimizer = build(cfg.optimizer)(params=[weight])
    s = cfg.scheduler
    batches = steps_per_epoch(cfg, data.images)
    with errors.raising("scheduler"):
        schedule = lr_schedule(
            optimizer,
            build(s.fn),
            monitor=s.monitor,
            interval=s.interval,
            warmup_epochs=s.warmup_epochs,
            max_epochs=cfg.trainer.max_epochs,
            steps_per_epoch=batches,
        )["scheduler"]

    def closure() -> torch.Tensor:  # as Lightning steps every optimizer (LBFGS needs one)
        optimizer.zero_grad()
        loss = weight @ torch.tensor([1.0, 0.0])  # gradient 0: a weight whose gradient vanished
        loss.backward()
        return loss

    lr = float(optimizer.param_groups[0]["lr"])  # as the schedule starts it
    with errors.raising("optimizer"):
        optimizer.step(closure)
    if not weight.isfinite().all():
        raise errors.line("optimizer", "one step made the weights non-finite")
    if lr > 0 and not weight[0] < 1:  # a learning rate <= 0 is the schedule's, named below
        raise errors.line("optimizer", "one step moved a weight up its gradient, not down")
    with errors.raising("scheduler"):
        schedule.step(0.0) if isinstance(schedule, ReduceLROnPlateau) else schedule.step()
    lr = float(optimizer.param_groups[0]["lr"])
    steps = cfg.trainer.max_epochs * (batches if s.interval == "step" else 1)
    if steps > 1 and not (math.isfinite(lr) and lr > 0):  # a run's last step may end at 0
        raise errors.line(
            "scheduler", f"the learning rate is {lr:g} after one step; training needs it > 0"
        )


def steps_per_epoch(cfg: DictConfig, images: int) -> int:
    """Optimizer steps an epoch, as the Classifier's schedule counts them (on one device)."""
    d, t = cfg.dataset, cfg.trainer
    if d.get("folds"):
        held = images // d.folds
    else:
        held = round(d.val_size * images) if isinstance(d.val_size, float) else d.val_size
    train = images - held
    batches = train // d.batch_size if d.drop_last else -(-train // d.batch_size)
    limit = t.get("limit_train_batches")
    if isinstance(limit, float):
        batches = int(batches * limit)
    elif isinstance(limit, int) and not isinstance(limit, bool):
        batches = min(batches, limit)
    return max(-(-batches // (t.get("accumulate_grad_batches") or 1)), 1)


def _model(cfg: DictConfig, data: DryData, errors: GroupErrors, *, forward: bool) -> None:
    """The model for the dataset's classes and channels; with `forward`, a forward and backward
    pass on two images of the dataset's shape (BatchNorm needs two values per channel to train)."""
    with errors.raising("model"):
        model = build(cfg.model, num_classes=data.classes, in_channels=data.shape[0])
    if not forward:
        return
    n = min(2, cfg.dataset.batch_size)  # a batch of one fails where training's would too
    on = f"; on {'x'.join(map(str, data.shape))} images, {data.origin}"
    with errors.raising("model", on):
        logits = model(torch.randn(n, *data.shape))
        if tuple(logits.shape) != (n, data.classes):
            raise ValueError(
                f"its output has shape {tuple(logits.shape)}, not ({n}, {data.classes})"
            )
        if not logits.isfinite().all():
            raise ValueError("its output is not finite")
        torch.nn.functional.cross_entropy(logits, torch.arange(n) % data.classes).backward()
    weights = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
    dead = [k for k, p in weights if p.grad is None or not p.grad.any()]
    if dead:
        raise errors.line(
            "model",
            f"the loss's gradient does not reach {len(dead)} of its {len(weights)} weight "
            f"tensors (first: {dead[0]}), so they cannot train",
            on,
        )


def dry_data(d: DictConfig, listing: tree.Tree | None) -> DryData:
    """The dataset's classes, image shape and training images: from the config, or for a folder
    source from its listing and one image's header."""
    if d.source == "synthetic":
        shape = (d.channels, d.image_size, d.image_size)
        origin = f"dataset.image_size={d.image_size}"
        data = DryData(d.num_classes, shape, origin, d.num_classes * d.train_per_class)
    elif d.source == "cifar10":
        data = DryData(10, (3, 32, 32), "dataset.source=cifar10", 50_000)
    elif d.source == "tiny_imagenet":
        wnids = Path(d.root) / "wnids.txt"
        classes = len(wnids.read_text().split()) if wnids.exists() else 200  # as published
        side = d.image_size or 64
        origin = f"dataset.image_size={side}" if d.image_size else "dataset.source=tiny_imagenet"
        data = DryData(classes, (3, side, side), origin, 500 * classes)  # 500 a class, as published
    else:
        listing = listing or tree.image_folder(Path(d.root), stat=False)
        channels, (w, h), origin = _first_image(d, listing)
        shape = (channels, d.image_size or h, d.image_size or w)
        data = DryData(len(listing.classes), shape, origin, len(listing.files["train"]))
    if data.classes < 2:
        raise UserError(f"dataset: {data.classes} class ({data.origin}); a classifier needs 2")
    return data


def _first_image(d: DictConfig, listing: tree.Tree) -> tuple[int, tuple[int, int], str]:
    """Channels, (width, height) and origin of the tree's first training image (a tree of colour
    and gray images is RGB, and its first may say 1 channel: the model builds the same)."""
    from PIL import Image

    path = listing.files["train"][0][0]
    try:
        with Image.open(path) as im:
            channels = 1 if set(im.getbands()) <= GRAY_BANDS else 3
            size = im.size
    except Exception:  # PIL's errors differ by format; the fix is the same
        raise UserError(f"dataset.root={d.root}: corrupt or unsupported image {path}") from None
    origin = f"dataset.image_size={d.image_size}" if d.image_size else f"as {path}"
    return channels, size, origin


def _trainer(cfg: DictConfig, errors: GroupErrors) -> None:
    """A Trainer from trainer.*'s Lightning arguments (any other key is the runner's, or refused
    by train.trainer_args): accelerator, devices, strategy and precision resolved as in fit."""
    accepted = inspect.signature(L.Trainer.__init__).parameters
    args = {
        k: v
        for k, v in cfg.trainer.items()
        if k in accepted and not (k in RUNNER_AUTO and v == "auto")
    }
    with errors.raising("trainer"):
        L.Trainer(**(args | DRY_TRAINER))


@contextlib.contextmanager
def _quiet():
    """Without the warnings and Lightning's info lines, which training itself shows once."""
    loggers = [logging.getLogger(name) for name in LIGHTNING_INFO]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)


@contextlib.contextmanager
def _one_thread():
    """Two images gain nothing from a second thread, whose spin-waits on a busy 2-core machine
    cost seconds (ResNet-18's dry build: 0.2 s on one thread; 0.8 s on two, 5.1 s the first)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _leaves(prefix: str, node: DictConfig):
    """(full key, value) of every key under a config node, `_target_` and `_partial_` left out."""
    for k, v in node.items():
        if str(k).startswith("_"):
            continue
        if isinstance(v, DictConfig):
            yield from _leaves(f"{prefix}.{k}", v)
        else:
            yield f"{prefix}.{k}", v


def _shown(value) -> str:
    """A value as the user would type it: true, null, [0.9, 0.999]."""
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    if isinstance(value, list | tuple):
        return f"[{', '.join(map(_shown, value))}]"
    return str(value)
