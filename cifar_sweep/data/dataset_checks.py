"""The dataset's own checks, before any image is decoded or torch is imported: its keys for its
source, its values, and a tree's file names (listed once, then given to the dry build).
"""

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from cifar_sweep.data import tree
from cifar_sweep.errors import UserError, did_you_mean
from cifar_sweep.values import is_int, is_number

# dataset.* keys that every source reads, and those of one source: any other key would be ignored
DATASET_KEYS = set(
    "source root cache_dir val_size split_seed folds batch_size drop_last eval_batch_size mean std "
    "augment placement device_budget_gb".split()
)
SOURCE_KEYS = {
    "cifar10": set(),
    "folder": {"image_size"},
    "tiny_imagenet": {"image_size", "download"},
    "synthetic": set(
        "num_classes image_size channels train_per_class test_per_class noise".split()
    ),
}


def check_dataset(d: DictConfig) -> tree.Tree | None:
    """The dataset's keys and values; a folder source's listing, for the dry build."""
    if d.source not in SOURCE_KEYS:
        raise UserError(
            f"dataset.source={d.source}{did_you_mean(d.source, SOURCE_KEYS)} "
            f"(sources: {', '.join(SOURCE_KEYS)})"
        )
    allowed = DATASET_KEYS | SOURCE_KEYS[d.source]
    for key in d:
        if key not in allowed:
            raise UserError(
                f"dataset.{key}: no such key for source {d.source}{did_you_mean(key, allowed)} "
                f"(keys: {', '.join(sorted(allowed))})"
            )
    if d.source != "synthetic" and d.root is None:
        raise UserError("dataset.root is required for this dataset: dataset.root=/path/to/tree")
    size = d.val_size
    if not (is_int(size) and size >= 0) and not (isinstance(size, float) and 0 < size < 1):
        raise UserError(
            f"dataset.val_size={size} must be a count (an integer >= 0) or a fraction in (0, 1)"
        )
    if d.get("image_size") is not None and (not is_int(d.image_size) or d.image_size <= 0):
        raise UserError(f"dataset.image_size={d.image_size} must be null or an integer > 0")
    for key in ("mean", "std"):
        values = d[key]
        if values is not None and (
            not OmegaConf.is_list(values)
            or not values
            or not all(is_number(v) and (v > 0 or key == "mean") for v in values)
        ):
            rule = "numbers > 0" if key == "std" else "numbers"
            raise UserError(
                f"dataset.{key}={values} must be null (computed from the training images) or a "
                f"list of {rule}, one per channel"
            )
    if d.source == "folder":  # before the heavy imports: the tree's file names
        listing = tree.image_folder(Path(d.root), stat=False)
        if not d.folds:
            val_count(size, len(listing.files["train"]))
        return listing
    if d.source == "synthetic" and not d.folds:
        val_count(size, d.num_classes * d.train_per_class)
    return None


def val_count(val_size, n: int) -> int:
    """dataset.val_size as a number of the n training images: a count, or a fraction in (0, 1)."""
    count = round(val_size * n) if isinstance(val_size, float) else val_size
    if count >= n:
        raise UserError(
            f"dataset.val_size={val_size} must be below the {n} training images "
            "(a count, or a fraction in (0, 1) such as 0.1)"
        )
    if isinstance(val_size, float) and count == 0:
        raise UserError(f"dataset.val_size={val_size} is none of the {n} training images")
    return count
