"""Bad input answered as one line naming the key, option or path with what would be right; no
traceback, and the study and earlier outputs left as they were. The README's Errors section lists
these cases.

Every case runs in-process through the command's own steps (Hydra composes, the output-folder
callback, the run's checks and train() or the sweeper's checks, space and sampler), since each
subprocess costs seconds of imports; CLI_CASES, one per kind of error source, also run through the
real command line, as does Ctrl-C.
"""

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from conftest import ROOT, ctrl_c_once_training, tiny
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.types import RunMode
from PIL import Image

from cifar_sweep import report
from cifar_sweep.checks import CheckOutputDir, check, check_objective
from cifar_sweep.data import sources
from cifar_sweep.errors import UserError, one_line
from cifar_sweep.sweep.sweep_checks import check_sweep

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
    (
        ["+callbacks.x._target_=mypkg.Thing"],
        "callbacks.x: mypkg.Thing is not built here: only torch.*, optuna.*, cifar_sweep.*",
    ),
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
    # found in review: each printed a traceback, trained in vain, or created something
    (["hydra.run.dir=/proc/nope/run"], "hydra.run.dir=/proc/nope/run: cannot create it (/proc is"),
    (["trainer.accelerator=gpux"], "trainer.accelerator=gpux; did you mean gpu? (choose from"),
    (
        ["dataset.augment.crop.padding=-4"],
        "dataset.augment.crop.padding=-4 must be an integer >= 0",
    ),
    (["dataset.augment.flip.p=1.5"], "dataset.augment.flip.p=1.5 must be a probability in [0, 1]"),
    (
        ["+dataset.augment.cutout={{size:0}}"],
        "dataset.augment.cutout.size=0 must be an integer >= 1",
    ),
    (["+dataset.augment.zoom={{low:2,high:1}}"], "dataset.augment.zoom.low=2 is above zoom.high=1"),
    (["+dataset.augment.rotation={{degrees:-5}}"], "dataset.augment.rotation.degrees=-5 must be"),
    (["objective=val/foo"], "objective=val/foo: not a metric the run logs; did you mean val/loss?"),
    (["-m", "objective=val/acc_bst"], "objective=val/acc_bst: not a metric the run logs; did you"),
    (
        ["dataset.val_size=0"],
        "objective=val/acc_best needs a validation split (dataset.val_size>0)",
    ),
    (["seed=1.5"], "seed=1.5 must be an integer"),
    (["objective=5"], "objective=5 must be a metric name, or a list of them"),
    (["repeats=abc"], "repeats=abc must be an integer >= 1"),
    (["trainer.precision=17"], "trainer.precision=17 must be one of auto, 32, 16-mixed"),
    (["trainer.label_smoothing=1.0"], "trainer.label_smoothing=1.0 must be a number in [0, 1)"),
    (["trainer.early_stopping.patience=-1"], "trainer.early_stopping.patience=-1 must be null or"),
    (["trainer.early_stopping.mode=up"], "trainer.early_stopping.mode=up must be min or max"),
    (["dataset.drop_last=maybe"], "dataset.drop_last=maybe must be true or false"),
    (
        ["-m", "optimizer.lr=interval(0.1, 0.001)"],
        "optimizer.lr=interval(0.1, 0.001): the low bound comes first, interval(0.001, 0.1)",
    ),
    (
        ["-m", "optimizer.lr=tag(log, interval(0, 0.1))"],
        "optimizer.lr: a log-scale interval needs a low bound > 0",
    ),
    (["-m", "dataset.batch_size=range(64, 32)"], "dataset.batch_size=range(64, 32, 1) holds no"),
    (
        ["-m", "optimizer.lr=interval(-0.1, 0.1)"],
        "optimizer.lr=-0.1 must be a number > 0 (a value of the sweep over optimizer.lr)",
    ),
    (
        ["-m", "optimizer=choice(sgd, adamm)"],
        "optimizer=adamm: no such option; did you mean adam? (options: adam, adamw, rmsprop, sgd;",
    ),
    (
        ["-m", "dataset.augment.crop.padding=range(-2, 4)"],
        "dataset.augment.crop.padding=-2 must be an integer >= 0 (a value of the sweep over",
    ),
    (
        ["-m", "hydra.sweeper.params={{optimizer.lr:'interval(1,0.5)'}}"],
        "optimizer.lr=interval(1.0, 0.5): the low bound comes first",
    ),
    (
        ["-m", "hydra.sweeper.storage=sqlite:///{case}/nodir/studies.db"],
        "hydra.sweeper.storage=sqlite:///{case}/nodir/studies.db: the folder {case}/nodir does not",
    ),
    (
        ["-m", "sweeper=nsgaii", "pruner=hyperband"],
        "pruner=hyperband: a multi-objective study (2 objectives) cannot prune; use pruner=none",
    ),
    (
        ["-m", "hydra.sweeper.direction=[maximize,minimize]"],
        "hydra.sweeper.direction=['maximize', 'minimize'] gives 2 direction(s) for 1 objective(s)",
    ),
    (["-m", "hydra.sweeper.grace_s=0"], "hydra.sweeper.grace_s=0 must be an integer > 0"),
    (["-m", "hydra.sweeper.max_retry=-1"], "hydra.sweeper.max_retry=-1 must be an integer >= 0"),
    (["-m", "hydra.sweeper.workers=0"], "hydra.sweeper.workers=0 must be an integer >= 1"),
    (
        ["-m", "sweeper=pbt", "scheduler=constant", "model.width=8,16"],
        "sweeper=pbt: model.width cannot change in the middle of a member's training",
    ),
    (
        ["-m", "sweeper=pbt", "scheduler=constant", "dataset.val_size=0.1,0.2"],
        "sweeper=pbt: dataset.val_size cannot change in the middle of a member's training",
    ),
    (
        ["-m", "sweeper=pbt", "scheduler=constant", "pruner=median"],
        "sweeper=pbt with pruner=median: PBT ends each member's intervals itself; use pruner=none",
    ),
    (["-m", "sweeper=pbt"], "sweeper=pbt with scheduler=cosine: PBT sets the learning rate"),
    (
        ["-m", "sweeper=pbt", "scheduler=constant", "hydra.sweeper.pbt.quantile=0.75"],
        "hydra.sweeper.pbt.quantile=0.75 must be a number in (0, 0.5]",
    ),
    (
        ["-m", "sweeper=pbt", "scheduler=constant", "hydra.sweeper.pbt.max_epochs=3"],
        "hydra.sweeper.pbt.max_epochs=3 must be trainer.max_epochs (2)",
    ),
    (
        ["-m", "sweeper=pbt", "scheduler=constant", "trainer.early_stopping.patience=3"],
        "sweeper=pbt with trainer.early_stopping.patience: a member trains every epoch",
    ),
]
# one per kind of error source, also through the real command line: a value check, an unknown
# key, an unknown option, a parse error, a sweep check, the sweeper's own set-up, a data-tree
# error found in training's data loading, a Hydra callback, a folder that must not be created
CLI_CASES = [
    ["optimizer.lr=0"],
    ["optimizer.momentun=0.9"],
    ["model=resnet19"],
    ["optimizer.lr=["],
    ["-m", "optimizer.lr=interval(0.1, 0.001)"],
    ["-m", "hydra.sweeper.sampler._target_=optuna.samplers.TPESamplr"],
    ["dataset=image_folder", "dataset.root={tree}/corrupt"],
    ["hydra.run.dir=/proc/nope/run"],
    ["-m", "hydra.sweeper.storage=sqlite:///{case}/nodir/studies.db"],
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
    """The case's study, its earlier run, and every file outside the new run's own folder (which
    Hydra makes for its log) and the decode cache (valid images, reused by the next run)."""
    storage = f"sqlite:///{case / 'studies.db'}"
    studies = {
        s.study_name: (s.n_trials, s.best_trial.value if s.best_trial else None)
        for s in optuna.get_all_study_summaries(storage)
    }
    own = (case / "outputs" / "runs" / "new", case / "cache")
    files = {p for p in case.rglob("*") if not any(p == d or d in p.parents for d in own)}
    return {"studies": studies, "files": files}


def overrides(args: list[str], case: Path) -> list[str]:
    """The case's arguments after its own folders, study and cache, and TINY."""
    own = [
        f"hydra.run.dir={case / 'outputs' / 'runs' / 'new'}",
        f"hydra.sweep.dir={case / 'outputs' / 'multirun' / 'new'}",
        f"hydra.sweeper.storage=sqlite:///{case / 'studies.db'}",
        f"dataset.cache_dir={case / 'cache'}",
    ]
    return tiny([*own, *args[args[:1] == ["-m"] :]])


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A study with one finished trial, copied into each case's folder."""
    base = tmp_path_factory.mktemp("cases")
    study = optuna.create_study(study_name="earlier", storage=f"sqlite:///{base / 'studies.db'}")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    return base


def answer(args: list[str], case: Path, capsys) -> str:
    """The line the command prints for `args`, by its own steps in-process: Hydra composes (its
    errors through one_line), the output-folder callback, then a run's checks and train(), or
    a sweep's checks and the sweeper's space, sampler and study name."""
    sweep = args[:1] == ["-m"]
    mode = RunMode.MULTIRUN if sweep else RunMode.RUN
    try:
        with initialize_config_dir(str(ROOT / "conf")):
            cfg = GlobalHydra.instance().hydra.compose_config(
                "config", overrides(args, case), run_mode=mode, from_shell=True
            )
            callback = CheckOutputDir()
            try:
                (callback.on_multirun_start if sweep else callback.on_run_start)(config=cfg)
            except SystemExit:
                return capsys.readouterr().err.strip().removeprefix("error: ")
            if sweep:
                from cifar_sweep.retrain import swept_study_name

                check_sweep(cfg)
                swept_study_name(list(cfg.hydra.overrides.task), cfg)
            else:
                from cifar_sweep.train import train

                check_objective(cfg)
                check(cfg)
                train(cfg, case / "outputs" / "runs" / "new")
    except UserError as e:
        return str(e)
    except Exception as e:
        line = one_line(e)
        if line is None:
            raise
        return line
    raise AssertionError(f"{args} was accepted")


@pytest.mark.parametrize(("args", "expected"), CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_input_is_one_line_naming_it(args, expected, base, trees, tmp_path, capsys):
    case = tmp_path / "case"
    before = earlier_state(case, base / "studies.db")
    args = [a.format(tree=trees, case=case) for a in args]
    line = answer(args, case, capsys)
    assert "\n" not in line and "Traceback" not in line
    assert expected.format(tree=trees, case=case) in line
    assert state(case) == before  # nothing created, the study and the earlier run as they were


def test_no_gpu_is_named_before_the_data_loads(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    line = answer(["trainer.accelerator=gpu"], tmp_path, capsys)
    assert line.startswith("trainer.accelerator=gpu: no CUDA GPU is visible here; use ")


def command(args: list[str], case: Path) -> list[str]:
    cli = [sys.executable, "-m", "cifar_sweep", *(["-m"] if args[:1] == ["-m"] else [])]
    return [*cli, *overrides(args, case)]


def run(args: list[str], case: Path, full_error: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if "FULL_ERROR" not in k}
    env |= {"HYDRA_FULL_ERROR": "1"} if full_error else {}
    return subprocess.run(
        command(args, case), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def results(trees: Path, base: Path) -> dict:
    """CLI_CASES and FULL_ERROR run once each, three at a time (most end in start-up)."""
    expected = {tuple(args): line for args, line in CASES}
    jobs = []
    for i, args in enumerate(CLI_CASES + [a for a, _ in FULL_ERROR]):
        case = base / f"cli{i}"
        before = earlier_state(case, base / "studies.db")
        line = expected.get(tuple(args), "").format(tree=trees, case=case)
        jobs.append((case, before, [a.format(tree=trees, case=case) for a in args], line))
    with ThreadPoolExecutor(3) as pool:
        done = pool.map(lambda j, i: run(j[2], j[0], i >= len(CLI_CASES)), jobs, range(len(jobs)))
        return {i: (*job, result) for i, (job, result) in enumerate(zip(jobs, done, strict=True))}


@pytest.mark.parametrize("i", range(len(CLI_CASES)), ids=[" ".join(a) for a in CLI_CASES])
def test_the_command_line_prints_that_one_line(i: int, results: dict):
    case, before, _, expected, result = results[i]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert expected and result.returncode == 1
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("error: ") and expected in lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert state(case) == before
    assert not (case / "outputs" / "multirun" / "new" / "optimization_results.yaml").exists()


@pytest.mark.parametrize("i", range(len(FULL_ERROR)))
def test_hydra_full_error_still_shows_the_whole_traceback(i: int, results: dict):
    result = results[len(CLI_CASES) + i][-1]
    assert result.returncode != 0
    assert "Traceback (most recent call last)" in result.stderr
    assert FULL_ERROR[i][1] in result.stderr


@pytest.mark.slow  # moved to slow to keep the default run under 3 minutes; CI runs it
def test_ctrl_c_in_a_run_prints_one_line_and_exits_130(tmp_path: Path):
    out = tmp_path / "run"
    cmd = [*command(["trainer.max_epochs=500"], tmp_path), f"hydra.run.dir={out}"]
    done = ctrl_c_once_training(cmd, out / "tb")
    assert done.returncode == 130, done.stderr[-3000:]
    assert done.stderr.splitlines() == [
        f"interrupted: the run stopped before it finished; {out} holds what it wrote so far"
    ]
    assert "Traceback" not in done.stdout
    assert not (out / "metrics.json").exists()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///{tmp}/nodir/x.db", "error: sqlite:///{tmp}/nodir/x.db: no such database file"),
        ("sqlite:///{tmp}/nope.db", "error: sqlite:///{tmp}/nope.db: no such database file"),
        ("journal:{tmp}/nope.log", "error: journal:{tmp}/nope.log: no such database file"),
        ("bogus://x", "error: bogus://x: cannot open it (Can't load plugin"),
    ],
)
def test_the_report_opens_only_an_existing_storage(url, expected, tmp_path: Path):
    url, expected = url.format(tmp=tmp_path), expected.format(tmp=tmp_path)
    with pytest.raises(SystemExit) as exit_:
        report.main([url, "--out", str(tmp_path / "report")])
    assert str(exit_.value.code).startswith(expected)
    assert "\n" not in str(exit_.value.code)
    assert list(tmp_path.iterdir()) == []  # no database, no folder, no report


def test_the_report_suggests_a_study_name(base: Path):
    with pytest.raises(SystemExit) as exit_:
        report.main([f"sqlite:///{base / 'studies.db'}", "earlir"])
    assert "no study 'earlir'" in str(exit_.value.code)
    assert "did you mean earlier?" in str(exit_.value.code)


def test_failed_download_names_the_offline_alternative(tmp_path: Path, monkeypatch):
    from conftest import compose_cfg
    from torchvision.datasets import CIFAR10

    monkeypatch.setattr(CIFAR10, "url", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    cfg = compose_cfg("dataset=cifar10", f"dataset.root={tmp_path}", tmp_path=tmp_path)
    with pytest.raises(
        UserError, match=r"could not download.*dataset=cifar10_folder dataset.root="
    ):
        sources.load(cfg.dataset)


def test_two_runs_started_together_get_two_folders():
    cmd = [sys.executable, "-m", "cifar_sweep", "--cfg", "hydra", "--resolve", "-p"]
    procs = [
        subprocess.Popen([*cmd, f"hydra.{mode}.dir"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        for mode in ("run", "run", "sweep", "sweep")
    ]
    run1, run2, sweep1, sweep2 = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert run1.startswith("outputs/runs/") and sweep1.startswith("outputs/multirun/")
    assert run1 != run2 and sweep1 != sweep2


def test_help_names_the_program_and_the_commands_a_user_starts_with():
    cmd = [sys.executable, "-m", "cifar_sweep", "--help"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[0].startswith("cifar_sweep: train image classifiers")
    for start in ("+experiment=quickstart -m", "optimizer.lr=0.05", "model=resnet18 -m"):
        assert f"python -m cifar_sweep {start}" in done.stdout
    assert "__main__" not in done.stdout and "is powered by Hydra" not in done.stdout


def test_the_report_without_arguments_lists_the_studies_of_the_default_storage(
    tmp_path: Path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)  # the default storage, sqlite:///outputs/studies.db, is relative
    with pytest.raises(SystemExit) as exit_:
        report.main([])
    assert "outputs/studies.db: no such database file" in str(exit_.value.code)
    (tmp_path / "outputs").mkdir()
    url = f"sqlite:///{tmp_path / 'outputs' / 'studies.db'}"
    for name, value in (("first", 0.5), ("second", 0.7)):
        s = optuna.create_study(study_name=name, storage=url, direction="maximize")
        s.optimize(lambda t, v=value: v + 0 * t.suggest_float("x", 0, 1), n_trials=2)
    report.main([])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("2 studies in sqlite:///outputs/studies.db; report one with:")
    assert lines[1].startswith("  first: 2 trials (complete=2); best value=0.5 (trial 0")
    assert lines[2].startswith("  second: 2 trials (complete=2); best value=0.7")
    assert not (tmp_path / "outputs" / "reports").exists()  # a listing writes nothing
