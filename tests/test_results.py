"""Results announced and kept: each command's last line, one test evaluation per run, folds and
seeds each with a report and an aggregate, trials that never touch the test set, tables whose
numbers read alike."""

import json
import re
from pathlib import Path

import pytest
from conftest import run_cli, sweep

from cifar_sweep import compare


@pytest.mark.slow  # moved to slow to keep the default run under 3 minutes; CI runs it
def test_a_limited_test_set_gives_one_answer_in_metrics_and_the_report(tmp_path: Path):
    out = tmp_path / "run"
    result = run_cli(
        f"hydra.run.dir={out}",
        f"dataset.cache_dir={tmp_path / 'cache'}",
        "trainer.max_epochs=1",
        "dataset.eval_batch_size=10",
        "+trainer.limit_test_batches=1",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    report = json.loads((out / "evaluation.json").read_text())
    assert sum(map(sum, report["confusion_matrix"])) == 10  # the one limited batch
    assert metrics["test/acc"] == pytest.approx(report["accuracy"])
    assert re.search(
        rf"run done: val/acc_best=0\.\d{{4}}  test/acc=0\.\d{{4}}; {out} holds metrics\.json, "
        "evaluation.json",
        result.stdout,
    )


@pytest.mark.parametrize(
    ("override", "runs", "over"),
    [
        ("dataset.folds=2", ["fold0", "fold1"], "2 folds"),
        pytest.param("repeats=2", ["seed0", "seed1"], "2 seeds", marks=pytest.mark.slow),
    ],
)
def test_folds_and_seeds_each_get_a_report_and_an_aggregate(tmp_path, override, runs, over):
    out = tmp_path / "run"
    result = run_cli(
        f"hydra.run.dir={out}",
        f"dataset.cache_dir={tmp_path / 'cache'}",
        "trainer.max_epochs=1",
        override,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for run in runs:
        assert "accuracy" in json.loads((out / run / "evaluation.json").read_text())
    aggregate = json.loads((out / "evaluation.json").read_text())
    assert set(aggregate["per_run"]) == set(runs)
    accuracies = [aggregate["per_run"][r]["accuracy"] for r in runs]
    assert aggregate["accuracy"] == pytest.approx(sum(accuracies) / 2)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and isinstance(metrics["model/params"], int)
    assert '"epochs": 1,' in (out / "metrics.json").read_text()  # not 1.0
    assert re.search(
        rf"run done: val/acc_best=\S+ ± \S+  test/acc=\S+ ± \S+ \(mean ± std over {over}\)",
        result.stdout,
    )


def test_sweep_trials_skip_the_test_set_and_the_sweep_ends_with_its_best(tmp_path: Path):
    result = sweep(tmp_path, "optimizer.lr=0.01,0.05", "sweeper=random", "hydra.sweeper.n_trials=1")
    [trial_dir] = [p for p in (tmp_path / "sweep").iterdir() if p.name.isdigit()]
    metrics = json.loads((trial_dir / "metrics.json").read_text())
    assert "val/acc_best" in metrics and not any(k.startswith("test/") for k in metrics)
    assert re.search(
        rf"sweep done: best val/acc_best=0\.\d+ \(trial 0\); {tmp_path / 'sweep'} holds "
        r"optimization_results.yaml, trials.csv and \d+ plots",
        result.stdout,
    )
    assert f"next: tensorboard --logdir {tmp_path / 'sweep'}" in result.stdout


def test_a_sweep_on_the_test_set_still_tests_its_trials(tmp_path: Path):
    args = ("optimizer.lr=0.01,0.05", "sweeper=random", "hydra.sweeper.n_trials=1")
    result = sweep(tmp_path, *args, "dataset.val_size=0", "objective=test/acc")
    assert re.search(r"sweep done: best test/acc=0\.\d+ \(trial 0\)", result.stdout)


def test_an_all_failed_sweep_writes_no_empty_plots(tmp_path: Path):
    args = ("optimizer.lr=1e6,2e6", "hydra.sweeper.max_failure_rate=1.0")  # both diverge
    result = sweep(tmp_path, *args, "hydra.sweeper.n_trials=2")
    assert not list((tmp_path / "sweep").glob("plots/*.png"))
    assert "sweep done: no completed trial;" in result.stdout
    assert "trials.csv and 0 plots" in result.stdout


def test_a_multi_objective_front_prints_four_digits(tmp_path: Path):
    result = sweep(
        tmp_path,
        "optimizer.lr=0.01,0.05",
        "sweeper=random",
        "hydra.sweeper.n_trials=1",
        "objective=[val/acc_best,val/loss]",
        "hydra.sweeper.direction=[maximize,minimize]",
        "hydra.sweeper.plots=false",
    )
    [line] = [s for s in result.stdout.splitlines() if s.startswith("  trial 0: values")]
    assert re.fullmatch(r"  trial 0: values \[0\.\d{1,4}, \d\.\d{1,3}\] params .*", line)


def test_a_comparison_column_uses_one_number_format(tmp_path: Path):
    common = {"train/acc": 0.9, "val/acc_best": 0.8, "test/acc": 0.79}
    runs = {
        "a": (0.8, {**common, "time/total_s": 20.0, "epochs": 20}),
        "b": (0.8, {**common, "time/total_s": 1.70393, "epochs": 3}),
    }
    rows = [r.split(" | ") for r in compare.table(runs, tmp_path).splitlines()[2:]]
    column = {name: i + 1 for i, name in enumerate(compare.COLUMNS)}  # after "| run"
    assert [r[column["total s"]] for r in rows] == ["20.0000", "1.7039"]
    assert [r[column["epochs"]] for r in rows] == ["20", "3"]


def test_the_log_says_which_normalization_the_run_uses(tmp_path: Path, caplog):
    from conftest import compose_cfg

    from cifar_sweep.data.datamodule import ImageDataModule

    for given, said in (
        ([], "as configured, not the measured ones"),
        (["dataset.mean=null", "dataset.std=null"], "the training images' own, measured"),
    ):
        cfg = compose_cfg(*given, tmp_path=tmp_path)
        with caplog.at_level("INFO", logger="cifar_sweep.data.datamodule"):
            ImageDataModule(cfg.dataset, seed=0, channels_last=False).setup()
        assert said in caplog.text
        caplog.clear()
