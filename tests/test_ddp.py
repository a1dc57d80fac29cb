"""One run on two devices (DDP, two CPU processes over gloo) through the command line.

The splits are uneven on purpose: 1121 training images in batches of 16 (one rank 561, the
other 560 = 35 x 16), 79 validation images in batches of 13 (40 and 39 = 3 x 13). Before ranks
got equal training shards and evaluation shards of their own length, one rank drew an empty
last batch there.
"""

import json
from pathlib import Path

import pytest
from conftest import run_cli

SMALL = [
    "model=tiny_cnn",
    "model.channels=[16,32]",
    "model.hidden=64",
    "trainer.max_epochs=4",
    "dataset.train_per_class=300",
    "dataset.noise=0.3",
    "dataset.val_size=79",
    "dataset.eval_batch_size=13",
]
# dataset.batch_size is per device: 2 x 16 takes the steps of one device's 32
DDP = ["trainer.devices=2", "trainer.strategy=ddp", "dataset.batch_size=16"]


def run(tmp_path: Path, name: str, *args: str) -> tuple[Path, dict, str]:
    """A run in tmp_path/name/<time to the microsecond>, as the default run folder is named."""
    result = run_cli(*SMALL, f"hydra.run.dir={tmp_path / name}/${{now:%H-%M-%S-%f}}", *args)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    (out,) = (tmp_path / name).iterdir()  # one run folder, whatever the number of ranks
    return out, json.loads((out / "metrics.json").read_text()), output


@pytest.mark.slow  # real processes, tens of seconds; make test-slow and CI run it
def test_two_devices_reach_the_accuracy_of_one_and_report_the_whole_test_set(tmp_path: Path):
    _, one, _ = run(tmp_path, "one")
    out, two, output = run(tmp_path, "two", *DDP)
    assert one["test/acc"] > 0.5 and two["test/acc"] > 0.5  # 4 classes: chance is 0.25
    assert abs(two["test/acc"] - one["test/acc"]) <= 0.1
    evaluated = json.loads((out / "evaluation.json").read_text())
    assert sum(map(sum, evaluated["confusion_matrix"])) == 100  # the whole test set, once
    assert abs(evaluated["accuracy"] - two["test/acc"]) < 1e-6
    assert output.count("metrics: {") == 1  # rank 0 logs and writes; rank 1 only trains
    assert (out / "train_ddp_process_1.log").exists()  # rank 1's log beside rank 0's


@pytest.mark.slow  # two ranks of real processes; make test-slow and CI run it
def test_divergence_on_two_devices_stops_both_ranks_with_one_error(tmp_path: Path):
    result = run_cli(
        *SMALL,
        *DDP,
        "optimizer.lr=1e4",
        "scheduler=constant",
        f"hydra.run.dir={tmp_path / 'run'}",
    )  # run_cli's timeout: a rank left waiting for the other would fail here
    assert result.returncode != 0
    assert "error: diverged: train/loss=" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_repeats_on_two_devices_are_refused_in_one_line(tmp_path: Path):
    result = run_cli(*DDP, "repeats=2", f"hydra.run.dir={tmp_path}")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: trainer.devices=2: repeats")
