"""Runs that go on from their last finished epoch: `resume=<run folder>`, or a trial retried.

Every run keeps `checkpoints/last.ckpt`, written at the end of each epoch to a temporary file
and renamed, so a process killed at any moment leaves the previous epoch's checkpoint whole.
It holds what Lightning restores (model, optimizer, scheduler, loops, callbacks' counters), the
data order and augmentation generator and the global RNGs (ImageDataModule.state_dict), and the
run's config, so a resumed run with a different config is refused instead of silently mixing two.
"""

import logging
import os
from pathlib import Path

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from cifar_sweep.errors import UserError

log = logging.getLogger(__name__)
LAST = Path("checkpoints") / "last.ckpt"
CONFIG = "cifar_sweep/config"  # the run's config, as a key of the checkpoint
# keys that may change between a run and its resumption: where it is, and what to call it
FREE_KEYS = {"resume", "trial", "hydra"}


class AtomicCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose files appear whole or not at all (written, then renamed)."""

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        partial = f"{filepath}.partial"
        super()._save_checkpoint(trainer, partial)
        if trainer.is_global_zero:
            os.replace(partial, filepath)
        self._last_checkpoint_saved = filepath


class EveryEpoch(AtomicCheckpoint):
    """checkpoints/last.ckpt after every epoch, whether or not it was the best."""

    def __init__(self, out_dir: Path, cfg: DictConfig):
        super().__init__(dirpath=out_dir / LAST.parent, filename=LAST.stem, save_top_k=1)
        self.config = _comparable(cfg)

    def on_save_checkpoint(self, trainer, module, checkpoint: dict) -> None:
        checkpoint[CONFIG] = self.config


def _comparable(cfg: DictConfig) -> dict:
    """The run's config, resolved, without the keys a resumed run may change (never resolving
    those: hydra's own may refer to values that exist only inside a Hydra job)."""
    return {
        key: OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        for key, value in cfg.items()
        if key not in FREE_KEYS
    }


def _first_difference(saved, now, prefix: str = "") -> str | None:
    """The first dotted key whose value differs between two plain configs, or None."""
    if isinstance(saved, dict) and isinstance(now, dict):
        for key in sorted(set(saved) | set(now), key=str):
            found = _first_difference(saved.get(key), now.get(key), f"{prefix}{key}.")
            if found:
                return found
        return None
    return None if saved == now else f"{prefix[:-1]} (was {saved!r}, now {now!r})"


def same_config(cfg: DictConfig) -> dict:
    """`resume`'s last checkpoint, if its run had this config; else an error naming the first
    key that differs."""
    saved = torch.load(Path(cfg.resume) / LAST, map_location="cpu", weights_only=True)
    differs = _first_difference(saved.get(CONFIG, {}), _comparable(cfg))
    if differs:
        raise UserError(
            f"resume={cfg.resume}: the run there had another config: {differs}; "
            "rerun its own command with resume=..."
        )
    return saved


def checkpoint(cfg: DictConfig) -> Path | None:
    """The checkpoint this run goes on from: `resume`'s last.ckpt, or None to start afresh.
    A checkpoint of a run with another config is an error naming the first differing key."""
    if not cfg.get("resume"):
        return None
    last = Path(cfg.resume) / LAST  # the folder itself is checked before Hydra starts the run
    if not last.exists():
        return None  # stopped before its first epoch ended: nothing to go on from
    saved = same_config(cfg)
    if saved["epoch"] + 1 >= cfg.trainer.max_epochs:  # stopped while testing: nothing to go on
        log.info("resume=%s: its training had ended; training again from epoch 0", cfg.resume)
        return None
    log.info("resume=%s: going on from epoch %d", cfg.resume, saved["epoch"] + 1)  # 0-based
    return last
