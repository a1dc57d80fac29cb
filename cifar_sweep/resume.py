"""Runs that go on from their last finished epoch: `resume=<run folder>`, or a trial retried.

Every run keeps `checkpoints/last.ckpt` and the epoch before it as `previous.ckpt`, each written
to a temporary file and renamed (the old last hard-linked as previous first), so at any moment
both are whole; a resume reads them in that order and says in one line which it could not read.
Each holds what Lightning restores (model, optimizer, scheduler, loops, callbacks' counters),
the data order and augmentation generator and the global RNGs (ImageDataModule.state_dict), and
the run's config as written (`auto` undecided, so a retry on another kind of device is the same
run), so a resumed run with a different config is refused instead of silently mixing two
(but for the keys a PBT interval changes, `trial.changes`).
Once training has ended (its last epoch, or a stop: early stopping, the pruner), last.ckpt is
written once more with the fit's metrics, epochs and best checkpoint: a resume of that run trains
nothing and goes straight to testing, as a run killed while testing needs; one the pruner
stopped goes on with its remaining epochs (an ASHA promotion, a PBT interval).
"""

import contextlib
import copy
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from cifar_sweep.errors import UserError

log = logging.getLogger(__name__)
LAST = Path("checkpoints") / "last.ckpt"
PREVIOUS = LAST.with_name("previous.ckpt")  # the epoch before: read where last.ckpt is not
CONFIG = "cifar_sweep/config"  # the run's config, as a key of the checkpoint
ENDED = "cifar_sweep/ended"  # once training has ended: the fit's metrics, epochs, best checkpoint
# keys that may change between a run and its resumption: where it is, what to call it, where
# it is logged
FREE_KEYS = {"resume", "trial", "hydra", "logger"}


class AtomicCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose files appear whole or not at all (written, then renamed); no
    version counter, so a file of the same name is replaced rather than joined by `-v1`."""

    def __init__(self, **kwargs):
        super().__init__(enable_version_counter=False, **kwargs)

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        partial = f"{filepath}.partial"
        super()._save_checkpoint(trainer, partial)
        if trainer.is_global_zero:
            self._publish(partial, filepath)
        self._last_checkpoint_saved = filepath

    def _publish(self, partial: str, filepath: str) -> None:
        os.replace(partial, filepath)

    def load_state_dict(self, state_dict: dict) -> None:
        """ModelCheckpoint's, and in another folder (a retried trial goes on in its own, a run
        folder moved off a full disk) with the ranked checkpoints found there or copied into
        it: Lightning's would forget their scores, and the first resumed epoch pass for the best."""
        ranked = state_dict.get("best_k_models", {})
        here = {p: str(Path(self.dirpath) / Path(p).name) for p in ranked}
        elsewhere = state_dict.get("dirpath", self.dirpath) != self.dirpath
        found = all(os.path.exists(p) or os.path.exists(here[p]) for p in ranked)
        if not (ranked and elsewhere and found):
            return super().load_state_dict(state_dict)  # with its warning where files are gone
        if rank_zero_only.rank == 0:
            Path(self.dirpath).mkdir(parents=True, exist_ok=True)
            for old, new in here.items():
                if not os.path.exists(new):  # else moved along with its folder
                    shutil.copyfile(old, f"{new}.partial")
                    os.replace(f"{new}.partial", new)
        moved = {
            "dirpath": self.dirpath,
            "best_k_models": {here[p]: score for p, score in ranked.items()},
            "last_model_path": "",
            **{
                k: here.get(state_dict.get(k), "")
                for k in ("best_model_path", "kth_best_model_path")
            },
        }
        super().load_state_dict({**state_dict, **moved})


def record(trainer) -> dict:
    """What a resume of an ended run reads instead of fitting again: the fit's metrics (those
    logged after the last validation too), its epochs and its best checkpoint."""
    return {
        "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
        "epochs": trainer.current_epoch,
        "best": trainer.checkpoint_callback.best_model_path,
        # stopped by the sweep's pruner (sweep/pruning.py), not by its own recipe: an ASHA
        # promotion, or a resume, goes on with its remaining epochs
        "pruned": any(getattr(c, "pruned_epoch", None) is not None for c in trainer.callbacks),
    }


def _last_epoch(trainer) -> bool:
    """Whether training ends after this epoch: its last, or a stop (early stopping and the
    pruner decide in on_validation_end, before checkpoint callbacks run)."""
    limit = trainer.max_epochs
    return trainer.should_stop or (limit not in (None, -1) and trainer.current_epoch + 1 >= limit)


class EveryEpoch(AtomicCheckpoint):
    """checkpoints/last.ckpt after every epoch, whether or not it was the best; after the last,
    once training has ended, with the fit's record (ENDED)."""

    def __init__(self, out_dir: Path, cfg: DictConfig):
        super().__init__(dirpath=out_dir / LAST.parent, filename=LAST.stem, save_top_k=1)
        self.config = _comparable(cfg)
        self.ended: dict | None = None

    def _save_topk_checkpoint(self, trainer, monitor_candidates) -> None:
        if not _last_epoch(trainer):  # that one by on_train_end, with what fit logs after it
            super()._save_topk_checkpoint(trainer, monitor_candidates)

    def on_train_end(self, trainer, module) -> None:
        super().on_train_end(trainer, module)
        fit = record(trainer)  # the best by name: it lies beside last.ckpt, wherever that moves
        self.ended = {**fit, "best": Path(fit["best"]).name if fit["best"] else ""}
        self._save_checkpoint(trainer, str(Path(self.dirpath) / LAST.name))

    def _publish(self, partial: str, filepath: str) -> None:
        """The new last.ckpt renamed into place once the old one is also previous.ckpt (a
        second link to it, renamed over the older one): at any moment both files are whole."""
        if os.path.exists(filepath):
            keep = f"{Path(filepath).with_name(PREVIOUS.name)}.partial"
            with contextlib.suppress(FileNotFoundError):
                os.remove(keep)  # a kill's leftover
            try:
                os.link(filepath, keep)
            except OSError:  # a file system without hard links
                shutil.copyfile(filepath, keep)
            os.replace(keep, Path(filepath).with_name(PREVIOUS.name))
        os.replace(partial, filepath)

    def on_save_checkpoint(self, trainer, module, checkpoint: dict) -> None:
        checkpoint[CONFIG] = self.config
        if self.ended is not None:
            checkpoint[ENDED] = self.ended

    def load_state_dict(self, state_dict: dict) -> None:
        """Nothing to restore: its one file has a fixed name in this run's own folder."""


@dataclass
class Start:
    """Where a run starts: `checkpoint` to fit from (None: epoch 0), or, with `ended`, the
    record of a fit that had ended: nothing to train, only to test."""

    checkpoint: Path | None = None
    ended: dict | None = None


def _comparable(cfg: DictConfig) -> dict:
    """The run's config, resolved, without the keys a resumed run may change (never resolving
    those: hydra's own may refer to values that exist only inside a Hydra job)."""
    return {
        key: OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        for key, value in cfg.items()
        if key not in FREE_KEYS
    }


def _first_difference(saved, now, prefix: str = "") -> str | None:
    """The first dotted key whose value differs between two plain configs, or None. A key now
    `auto` matches any saved value: checkpoints of runs before configs were kept as written hold
    what `auto` became on their device (trainer.precision bf16-mixed on a GPU)."""
    if isinstance(saved, dict) and isinstance(now, dict):
        for key in sorted(set(saved) | set(now), key=str):
            found = _first_difference(saved.get(key), now.get(key), f"{prefix}{key}.")
            if found:
                return found
        return None
    if saved == now or now == "auto":  # `auto` is what the device decides: any run's decision
        return None
    return f"{prefix[:-1]} (was {saved!r}, now {now!r})"


def _why(error: Exception) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0][:200]


def _read(folder: Path) -> tuple[dict | None, Path | None, dict[Path, str]]:
    """The first of `folder`'s last.ckpt and previous.ckpt that can be read, its path, and
    the ones before it that could not, with why."""
    unreadable = {}
    for path in (folder / LAST, folder / PREVIOUS):
        if not path.exists():
            continue
        try:  # mapped: the config and counters are read, the tensors left on disk
            saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            return saved, path, unreadable
        except Exception as e:  # cut short (a full disk, a copy stopped), or not a checkpoint
            unreadable[path] = _why(e)
    return None, None, unreadable


def _without(config: dict, keys) -> dict:
    """`config` without the dotted `keys` (a copy)."""
    config = copy.deepcopy(config)
    for key in keys:
        *path, last = key.split(".")
        node = config
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return config


def _refuse_another_config(cfg: DictConfig, saved: dict) -> None:
    """An error naming the first key that differs from the checkpoint's config, but for those a
    PBT interval changes (`trial.changes`: its explored values, set on the optimizer itself)."""
    changes = list(OmegaConf.select(cfg, "trial.changes", default=None) or [])
    differs = _first_difference(
        _without(saved.get(CONFIG, {}), changes), _without(_comparable(cfg), changes)
    )
    if differs:
        raise UserError(
            f"resume={cfg.resume}: the run there had another config: {differs}; "
            "rerun its own command with resume=..."
        )


def same_config(cfg: DictConfig) -> None:
    """Nothing if `resume`'s checkpoint (the newest readable) had this config, or there is none;
    else an error naming the first key that differs."""
    saved, *_ = _read(Path(cfg.resume))
    if saved is not None:
        _refuse_another_config(cfg, saved)


def start(cfg: DictConfig) -> Start:
    """Where this run starts: `resume`'s newest readable checkpoint, its ended fit, or epoch 0,
    said in one line with the checkpoints it could not read (moved aside, out of the next
    epoch's last -> previous). A checkpoint of a run with another config is an error naming
    the first differing key."""
    if not cfg.get("resume"):
        return Start()
    saved, path, unreadable = _read(Path(cfg.resume))  # the folder is checked before the run
    if saved is None and not unreadable:
        return Start()  # stopped before its first epoch ended: nothing to go on from
    begin, said = Start(), "training from epoch 0"
    if saved is not None:
        _refuse_another_config(cfg, saved)
        begin, said = _going_on(saved, path, max_epochs=cfg.trainer.max_epochs)
        said += f" with {path.name}" if unreadable and begin.checkpoint else ""
    for bad in unreadable:
        os.replace(bad, f"{bad}.unreadable")
    lines = [
        f"{p} is unreadable ({why}), kept as {p.name}.unreadable" for p, why in unreadable.items()
    ]
    level = logging.WARNING if unreadable else logging.INFO
    log.log(level, "resume=%s: %s", cfg.resume, "; ".join([*lines, said]))
    return begin


def _going_on(saved: dict, path: Path, *, max_epochs: int) -> tuple[Start, str]:
    """Where a readable checkpoint goes on from, and how to say it."""
    ended = saved.get(ENDED)
    if ended and ended.get("pruned"):
        return Start(path), f"going on from epoch {ended['epochs']}, where the pruner paused it"
    if ended:
        said = f"its training had ended after {ended['epochs']} epochs; nothing to train again"
        best = str(path.parent / ended["best"]) if ended["best"] else ""
        return Start(path, {**ended, "best": best}), said
    if saved["epoch"] + 1 >= max_epochs:  # written before a fit's record was kept
        return Start(), "its training had ended, its metrics unsaved; training from epoch 0"
    return Start(path), f"going on from epoch {saved['epoch'] + 1}"  # 0-based


def testable(best: str, *, last: Path | None) -> str | None:
    """The checkpoint to test: the best; where that cannot be read, said in one line, the last
    epoch's weights (`last`; None: those in memory after a fit)."""
    if not best:
        return None
    try:
        torch.load(best, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # cut short, or gone: the last weights still give a test/acc
        log.warning("%s (the best checkpoint) is unreadable (%s); testing the last epoch's "
                    "weights instead", best, _why(e))  # fmt: skip
        return None if last is None else str(last)
    return best
