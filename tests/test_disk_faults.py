"""Real faults of the disk, made for real: a checkpoint cut short (a disk that filled, a copy
stopped half-way) and a run folder on a full file system. Each is one line, never a traceback;
a resume goes on from what can still be read."""

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import run_cli, run_in_process

RUN = ["model=tiny_cnn", "trainer.deterministic=true", "trainer.max_epochs=3"]


def metrics(folder: Path) -> dict:
    found = json.loads((folder / "metrics.json").read_text())
    return {k: v for k, v in found.items() if not k.startswith("time/")}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A run of 3 epochs through the command's own steps (its .hydra/ makes it a run folder)."""
    folder = tmp_path_factory.mktemp("finished")
    done = run_in_process(*RUN, f"dataset.cache_dir={folder / 'cache'}", f"hydra.run.dir={folder}")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return folder


def killed_while_testing(finished: Path, tmp_path: Path) -> Path:
    """A copy of the finished run as a kill while testing leaves it: no metrics.json."""
    folder = tmp_path / "run"
    shutil.copytree(finished, folder)
    (folder / "metrics.json").unlink()
    return folder


def cut_short(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def resumed(folder: Path, finished: Path):
    done = run_cli(*RUN, f"dataset.cache_dir={finished / 'cache'}", f"resume={folder}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    return done


def lines_naming(done, text: str) -> list[str]:
    return [line for line in done.stdout.splitlines() if text in line]


def test_a_truncated_last_checkpoint_goes_on_from_the_previous_epoch(finished, tmp_path):
    folder = killed_while_testing(finished, tmp_path)
    cut_short(folder / "checkpoints" / "last.ckpt")
    done = resumed(folder, finished)
    [said] = lines_naming(done, "unreadable")
    assert f"{folder / 'checkpoints' / 'last.ckpt'} is unreadable (" in said
    assert said.endswith("going on from epoch 2 with previous.ckpt")  # its last epoch again
    assert metrics(folder) == metrics(finished)


def test_both_checkpoints_truncated_train_again_from_epoch_0(finished, tmp_path):
    folder = killed_while_testing(finished, tmp_path)
    for name in ("last.ckpt", "previous.ckpt"):
        cut_short(folder / "checkpoints" / name)
    done = resumed(folder, finished)
    [said] = lines_naming(done, "unreadable")
    assert said.count(" is unreadable (") == 2 and said.endswith("training from epoch 0")
    assert metrics(folder) == metrics(finished)


def test_a_truncated_best_checkpoint_tests_the_last_weights(finished, tmp_path):
    folder = killed_while_testing(finished, tmp_path)
    [best] = (folder / "checkpoints").glob("epoch=*.ckpt")
    cut_short(best)
    done = resumed(folder, finished)
    [said] = lines_naming(done, "unreadable")
    assert f"{best} (the best checkpoint) is unreadable (" in said
    assert said.endswith("testing the last epoch's weights instead")
    tested = metrics(folder)
    assert 0 <= tested.pop("test/acc") <= 1 and tested.pop("test/loss") > 0
    untested = {k: v for k, v in metrics(finished).items() if not k.startswith("test/")}
    assert tested == untested
