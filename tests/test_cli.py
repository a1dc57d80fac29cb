"""Bad input through the real command line: a non-zero exit, exactly one line on stderr naming the
key, option or path with what would be right, no traceback, and the study and earlier outputs
left as they were. The README's Errors section lists these cases."""

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import optuna
import pytest
from conftest import ROOT, tiny
from PIL import Image

from cifar_sweep.data import sources
from cifar_sweep.errors import UserError

# (arguments, what the one line must say); {tree} names a generated image tree, {case} the case's
# own folder; "-m" first makes it a sweep
CASES = [
    (["dataset.batch_size=1.5"], "dataset.batch_size=1.5 must be an integer > 0"),
    (["dataset.batch_size=0"], "dataset.batch_size=0 must be an integer > 0"),
    (["dataset.eval_batch_size=-8"], "dataset.eval_batch_size=-8 must be an integer > 0"),
    (["trainer.max_epochs=2.5"], "trainer.max_epochs=2.5 must be an integer > 0"),
    (["trainer.max_epochs=0"], "trainer.max_epochs=0 must be an integer > 0"),
    (["optimizer.lr=fast"], "optimizer.lr=fast must be a number > 0"),
    (["optimizer.lr=0"], "optimizer.lr=0 must be a number > 0"),
    (["optimizer.lr=-0.1"], "optimizer.lr=-0.1 must be a number > 0"),
    (["repeats=0"], "repeats=0 must be an integer >= 1"),
    (["dataset.folds=1"], "dataset.folds=1 must be null or an integer >= 2"),
    (["model=resnet19"], "model=resnet19: no such option; did you mean resnet18? (options: "),
    (["optimizer=adamm"], "optimizer=adamm: no such option; did you mean adam?"),
    (["scheduler=cosin"], "scheduler=cosin: no such option; did you mean cosine?"),
    (["+experiment=resnet18_lrr"], "experiment=resnet18_lrr: no such option; did you mean"),
    (["optimizer.momentun=0.9"], "optimizer.momentun: no such key; did you mean momentum?"),
    (["modell=resnet18"], "modell: no such key; did you mean model?"),
    (["optimizer.lr=["], "optimizer.lr=[: cannot parse it"),
    (["+optimizer.betas=[0.9,0.99]"], "optimizer.betas: torch.optim.SGD takes no such argument"),
    (["+model.depth=34"], "model.depth: cifar_sweep.models.resnet.ResNet18 takes no such argument"),
    (["+scheduler.T_maxx=3"], "scheduler.T_maxx: no such key; did you mean fn.T_max?"),
    (["+dataset.foo=1"], "dataset.foo: no such key for source synthetic"),
    (["dataset=cifar10", "+dataset.noise=0.3"], "dataset.noise: no such key for source cifar10"),
    (["+dataset.augment.blur.sigma=1"], "dataset.augment.blur: unknown; choose from"),
    (
        ["scheduler=reduce_on_plateau", "scheduler.warmup_epochs=2"],
        "scheduler.warmup_epochs=2 cannot come before a plateau schedule",
    ),
    (["dataset.val_size=100000"], "dataset.val_size=100000 must be below the 400 training images"),
    (
        ["dataset.val_size=1.5"],
        "dataset.val_size=1.5 must be a count (an integer >= 0) or a fraction",
    ),
    (["dataset.val_size=-0.2"], "dataset.val_size=-0.2 must be a count"),
    (["dataset.std=[0.5,0,0.5]"], "dataset.std=[0.5, 0, 0.5] must be null"),
    (["dataset=image_folder"], "dataset.root is required for this dataset: dataset.root="),
    (["dataset=image_folder", "dataset.root=/no/such/tree"], "/no/such/tree does not exist"),
    (
        ["dataset=image_folder", "dataset.root={tree}/empty_class"],
        "class folder {tree}/empty_class/train/b holds no images",
    ),
    (
        ["dataset=image_folder", "dataset.root={tree}/no_test_class"],
        "class 'b' has no folder in test/",
    ),
    (
        ["dataset=image_folder", "dataset.root={tree}/small", "dataset.val_size=12"],
        "dataset.val_size=12 must be below the 12 training images",
    ),
    (
        ["dataset=image_folder", "dataset.root={tree}/small", "dataset.val_size=0.01"],
        "dataset.val_size=0.01 is none of the 12 training images",
    ),
    (
        ["dataset=image_folder", "dataset.root={tree}/corrupt"],
        "corrupt or unsupported image {tree}/corrupt/train/a/1.png",
    ),
    (
        ["dataset=image_folder", "dataset.root={tree}/small", "dataset.mean=[0.5,0.5,0.5]"],
        "dataset.mean has 3 values but the images have 1 channel(s)",
    ),
    (
        ["dataset=image_folder", "dataset.root={tree}/small", "dataset.cache_dir=/etc/hostname/c"],
        "dataset.cache_dir=/etc/hostname/c: cannot write the cache there",
    ),
    (["hydra.run.dir=/etc/hostname/run"], "hydra.run.dir=/etc/hostname/run: cannot create it"),
    (["-m", "hydra.sweeper.n_trials=0"], "hydra.sweeper.n_trials=0 must be an integer >= 1"),
    (["-m", "hydra.sweeper.n_trials=-2"], "hydra.sweeper.n_trials=-2 must be an integer >= 1"),
    (["-m", "dataset.batch_size=1.5"], "dataset.batch_size=1.5 must be an integer > 0"),
    (["-m", "sweeper=tpee"], "sweeper=tpee: no such option; did you mean tpe?"),
    (["-m", "pruner=medain"], "pruner=medain: no such option; did you mean median?"),
    (
        ["-m", "hydra.sweeper.sampler._target_=optuna.samplers.TPESamplr"],
        "hydra.sweeper.sampler: Error locating target 'optuna.samplers.TPESamplr'; did you mean "
        "TPESampler?",
    ),
    (
        ["-m", "sweeper=grid", "optimizer.lr=interval(0.01,0.1)"],
        "optimizer.lr: sweeper=grid needs finite lists",
    ),
    (
        ["-m", "hydra.sweeper.storage=sqllite:///{case}/studies.db"],
        "unknown database 'sqllite'; did you mean sqlite?",
    ),
    (
        ["-m", "hydra.sweeper.storage=postgresql://me@127.0.0.1:9/studies"],
        "hydra.sweeper.storage=postgresql://me@127.0.0.1:9/studies: no database server answers",
    ),
    (
        ["-m", "hydra.sweeper.storage=postgresql://me:secret@127.0.0.1:9/studies"],
        "hydra.sweeper.storage holds a literal password",
    ),
    (["-m", "hydra.sweep.dir=/etc/hostname/sweep"], "hydra.sweep.dir=/etc/hostname/sweep: cannot"),
]
FULL_ERROR = [(["model=resnet19"], "MissingConfigException"), (["optimizer.lr=0"], "UserError")]


def write_tree(root: Path, sizes: dict[str, list[int]], *, test: bool = True) -> Path:
    """train/<class>/<i>.png (and test/), grayscale; sizes[c] holds each image's side."""
    rng = np.random.default_rng(0)
    for split in ("train", "test") if test else ("train",):
        for c, sides in sizes.items():
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i, side in enumerate(sides):
                pixels = rng.integers(0, 256, (side, side), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / c / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> Path:
    """Image trees with one fault each (and a small sound one)."""
    base = tmp_path_factory.mktemp("trees")
    write_tree(base / "small", {"a": [10] * 6, "b": [10] * 6})
    write_tree(base / "empty_class", {"a": [10] * 3})
    (base / "empty_class" / "train" / "b").mkdir()
    (base / "empty_class" / "test" / "b").mkdir()
    write_tree(base / "no_test_class", {"a": [10] * 3, "b": [10] * 3})
    shutil.rmtree(base / "no_test_class" / "test" / "b")
    write_tree(base / "corrupt", {"a": [10] * 3, "b": [10] * 3})
    (base / "corrupt" / "train" / "a" / "1.png").write_bytes(b"\x89PNG not an image at all")
    return base


def earlier_state(case: Path, studies: Path) -> dict:
    """An earlier run's output and a study with one finished trial, in the case's own folder."""
    run = case / "outputs" / "runs" / "earlier"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text('{"val/acc": 0.5}')
    shutil.copy(studies, case / "studies.db")
    return state(case)


def state(case: Path) -> dict:
    storage = f"sqlite:///{case / 'studies.db'}"
    studies = {
        s.study_name: (s.n_trials, s.best_trial.value if s.best_trial else None)
        for s in optuna.get_all_study_summaries(storage)
    }
    return {"studies": studies, "earlier": (case / "outputs/runs/earlier/metrics.json").read_text()}


def command(args: list[str], case: Path) -> list[str]:
    sweep = args[:1] == ["-m"]
    own = [
        f"hydra.run.dir={case / 'outputs' / 'runs' / 'new'}",
        f"hydra.sweep.dir={case / 'outputs' / 'multirun' / 'new'}",
        f"hydra.sweeper.storage=sqlite:///{case / 'studies.db'}",
        f"dataset.cache_dir={case / 'cache'}",
    ]
    cli = [sys.executable, "-m", "cifar_sweep", *(["-m"] if sweep else [])]
    return [*cli, *tiny([*own, *args[sweep:]])]


def run(args: list[str], case: Path, full_error: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if "FULL_ERROR" not in k}
    env |= {"HYDRA_FULL_ERROR": "1"} if full_error else {}
    return subprocess.run(
        command(args, case), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def results(trees: Path, tmp_path_factory) -> dict:
    """Every case run once, three at a time (most end within a second or two, in start-up)."""
    base = tmp_path_factory.mktemp("cases")
    study = optuna.create_study(study_name="earlier", storage=f"sqlite:///{base / 'studies.db'}")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    jobs = {}
    for i, (args, _) in enumerate(CASES + FULL_ERROR):
        case = base / f"case{i}"
        before = earlier_state(case, base / "studies.db")
        args = [a.format(tree=trees, case=case) for a in args]
        jobs[i] = (case, before, args, i >= len(CASES))
    with ThreadPoolExecutor(3) as pool:
        done = pool.map(lambda job: run(job[2], job[0], job[3]), jobs.values())
        return {
            i: (job[0], job[1], result) for (i, job), result in zip(jobs.items(), done, strict=True)
        }


@pytest.mark.parametrize(("i", "expected"), [(i, e) for i, (_, e) in enumerate(CASES)])
def test_bad_input_is_one_line_naming_it(i: int, expected: str, results: dict, trees: Path):
    case, before, result = results[i]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("error: ")
    assert expected.format(tree=trees, case=case) in lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert state(case) == before  # the study and the earlier run are as they were
    assert not (case / "outputs" / "multirun" / "new" / "optimization_results.yaml").exists()


@pytest.mark.parametrize("i", range(len(CASES), len(CASES) + len(FULL_ERROR)))
def test_hydra_full_error_still_shows_the_whole_traceback(i: int, results: dict):
    _, _, result = results[i]
    assert result.returncode != 0
    assert "Traceback (most recent call last)" in result.stderr
    assert FULL_ERROR[i - len(CASES)][1] in result.stderr


def test_failed_download_names_the_offline_alternative(tmp_path: Path, monkeypatch):
    from conftest import compose_cfg
    from torchvision.datasets import CIFAR10

    monkeypatch.setattr(CIFAR10, "url", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    cfg = compose_cfg("dataset=cifar10", f"dataset.root={tmp_path}", tmp_path=tmp_path)
    with pytest.raises(
        UserError, match=r"could not download.*dataset=cifar10_folder dataset.root="
    ):
        sources.load(cfg.dataset)
