"""Where a run's splits live: whole on the training device (`device`, the fast path), or in host
memory with each batch gathered there and copied over (`host`), for splits the device cannot hold;
host memory is the loaded cache's memory map itself, never a copy of it per process.

`dataset.placement: auto` compares the splits' bytes with `dataset.device_budget_gb`, whose null
means half a CUDA device's free memory when the data moves (the rest is the model's and its
activations'). On the CPU the splits already sit in the memory they would move to, so a null
budget there is no limit.
"""

import logging

import torch

from cifar_sweep.errors import UserError

log = logging.getLogger(__name__)
FREE_SHARE = 0.5  # of a CUDA device's free memory, when dataset.device_budget_gb is null
GB = 2**30


def budget(cfg, device: torch.device) -> int | None:
    """The bytes the splits may take on `device`; None when no limit is known."""
    if cfg.device_budget_gb is not None:
        return int(cfg.device_budget_gb * GB)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * FREE_SHARE)
    return None


def choose(cfg, *, need: int, device: torch.device) -> str:
    """ "device" or "host" for splits of `need` bytes; `device` that cannot fit is an error."""
    limit = budget(cfg, device)
    fits = limit is None or need <= limit
    if fits and cfg.placement != "host":
        return "device"
    given = (
        f"dataset.device_budget_gb={cfg.device_budget_gb}"
        if cfg.device_budget_gb is not None
        else f"half the free memory of {device}"
    )
    size = f"the splits take {need / GB:.2f} GB but {given} is {(limit or 0) / GB:.2f} GB"
    if cfg.placement == "device":
        raise UserError(
            f"dataset.placement=device: {size}; use dataset.placement=auto (or host) to keep "
            "them in host memory, or a smaller dataset.image_size"
        )
    if cfg.placement == "auto":
        log.info(
            "dataset: %s: kept in %shost memory (dataset.placement=host), each batch copied to %s",
            size,
            "pinned " if device.type == "cuda" else "",
            device,
        )
    return "host"
