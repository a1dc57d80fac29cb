"""The problem every arm solves, from problem.yaml: its size, seeds, data and the overrides that
make one trial; the JPEG subset it trains on, copied once under --out."""

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[2]
SPEC = Path(__file__).with_name("problem.yaml")


@dataclass(frozen=True)
class Problem:
    """What an arm needs to run its studies; `overrides` hold everything but the swept values."""

    experiment: str
    seeds: list[int]
    trials: int
    epochs: int
    concurrency: int
    threads: int
    overrides: list[str]
    smoke: bool

    def trial(self, seed: int) -> list[str]:
        """The overrides of every trial of the study with this seed, for `+experiment=...`."""
        return [*self.overrides, f"seed={seed}", f"trainer.max_epochs={self.epochs}"]

    def env(self) -> dict[str, str]:
        """The environment of an arm's processes: `threads` per trial, from their first import;
        this checkout's packages first in every process (Ray's and joblib's workers too), as
        worktrees may share one venv."""
        n = str(self.threads)
        path = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
        return {**os.environ, "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "PYTHONPATH": path}

    def describe(self) -> str:
        """One line for the results file and the README."""
        data = "generated 16x16 images (smoke)" if self.smoke else "CIFAR-10 (JPEG q75 copy) subset"
        return (
            f"+experiment={self.experiment} on {data}: {self.trials} trials of up to "
            f"{self.epochs} epochs, {self.concurrency} at once with {self.threads} thread each"
        )


def load(*, smoke: bool, seeds: int | None, data: Path | None, out: Path) -> Problem:
    """problem.yaml at full size (a subset of the `data` tree copied under `out`) or smoke size."""
    spec = OmegaConf.load(SPEC)
    size = spec.smoke if smoke else spec
    overrides = [*size.overrides]
    if not smoke:
        subset = out / f"data-{spec.train_per_class}-{spec.test_per_class}"  # per size
        subset = copy_subset(data, subset, spec.train_per_class, spec.test_per_class)
        overrides.append(f"dataset.root={subset}")
    quiet = ["trainer.progress_bar=false", f"dataset.cache_dir={out / 'cache'}"]
    return Problem(
        experiment=spec.experiment,
        seeds=list(range(seeds or size.seeds)),
        trials=size.trials,
        epochs=size.epochs,
        concurrency=spec.concurrency,
        threads=spec.threads,
        overrides=[*overrides, *quiet],
        smoke=smoke,
    )


def copy_subset(tree: Path, dest: Path, train: int, test: int) -> Path:
    """The first `train` and `test` images per class (in name order) of an ImageFolder tree,
    copied to `dest` once (a partial copy is never used: it is renamed into place whole)."""
    if dest.is_dir():
        return dest
    if not (tree / "train").is_dir():
        sys.exit(
            f"error: --data {tree}: no train/ folder there; unpack the JPEG copy of CIFAR-10 "
            "(make data/cifar10-jpeg CIFAR10_JPEG=<archive>) or point --data at a train/ and "
            "test/ ImageFolder tree"
        )
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    for split, count in (("train", train), ("test", test)):
        for cls in sorted(p for p in (tree / split).iterdir() if p.is_dir()):
            (partial / split / cls.name).mkdir(parents=True)
            for image in sorted(cls.iterdir())[:count]:
                shutil.copy2(image, partial / split / cls.name / image.name)
    partial.rename(dest)
    return dest
