"""The `logger` group's Lightning loggers for one run folder, and the `callbacks` group's
callbacks: each node a `_target_` with its keys, as lightning-hydra-template writes them."""

from pathlib import Path

from omegaconf import DictConfig

from cifar_sweep.instantiate import build


def build_loggers(loggers: DictConfig | None, out_dir: Path) -> list:
    """One logger per node of `logger` (none: `logger=[]`); a null save_dir is the run's folder,
    so each seed and fold of a run logs in its own."""
    built = []
    for node in (loggers or {}).values():
        if node is None:  # logger.x=null drops one
            continue
        folder = {"save_dir": str(out_dir)} if "save_dir" in node and node.save_dir is None else {}
        built.append(build(node, **folder))
    return built


def build_callbacks(callbacks: DictConfig | None) -> list:
    """The user's own Lightning callbacks, one per node of `callbacks`."""
    return [build(node) for node in (callbacks or {}).values() if node is not None]
