"""Real faults of the disk, made for real: a checkpoint cut short (a disk that filled, a copy
stopped half-way) and a run folder on a full file system. Each is one line, never a traceback;
a resume goes on from what can still be read."""

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
from conftest import ROOT, compose_cfg, noise_tree, run_cli, run_in_process, tiny

from cifar_sweep.errors import SharedCauseError
from cifar_sweep.train import train

pytestmark = pytest.mark.slow  # each starts the command line, 6-8 s; CI runs them

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


def on_a_small_disk(disk: Path, size: str, *args: str) -> subprocess.CompletedProcess:
    """python -m cifar_sweep with `disk` a tmpfs of `size`, mounted in a mount namespace of its
    own (unshare -m -r: as root or not), so the run fills it for real."""
    disk.mkdir()
    mount = f"mount -t tmpfs -o size={size} none {disk}"
    probe = subprocess.run(
        ["unshare", "-m", "-r", "sh", "-c", mount], capture_output=True, text=True
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {probe.stderr.strip()[:200]}")
    cmd = [sys.executable, "-m", "cifar_sweep", *tiny(args)]
    script = f'{mount} && exec "$@"'
    namespaced = ["unshare", "-m", "-r", "sh", "-c", script, "sh", *cmd]
    return subprocess.run(namespaced, cwd=ROOT, capture_output=True, text=True, timeout=600)


def one_error_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr + done.stdout, done.stderr[-3000:]
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: ")
    return line


def test_a_run_folder_on_a_full_disk_is_one_line_naming_it_and_the_space(tmp_path: Path):
    # tiny_cnn's first checkpoint (about 4 MB of weights) does not fit in 3 MB
    disk = tmp_path / "disk"
    run = disk / "run"
    cache = f"dataset.cache_dir={tmp_path / 'cache'}"
    done = on_a_small_disk(disk, "3m", *RUN, cache, f"hydra.run.dir={run}")
    line = one_error_line(done)
    assert line.startswith(f"error: {run}: no space left on device (")
    assert " MB free there); free some space, or write elsewhere: hydra.run.dir=" in line
    assert "hydra.sweep.dir=" in line


def test_a_data_cache_on_a_full_disk_is_one_line_naming_dataset_cache_dir(tmp_path: Path):
    disk = tmp_path / "disk"
    tree = noise_tree(tmp_path / "tree", size=32, per_class=(80, 20))
    data = ["dataset=image_folder", f"dataset.root={tree}", f"dataset.cache_dir={disk}"]
    done = on_a_small_disk(disk, "200k", *RUN, *data, f"hydra.run.dir={tmp_path / 'run'}")
    line = one_error_line(done)
    assert line.startswith(f"error: {disk}: no space left on device (")
    assert "free some space, or write elsewhere: dataset.cache_dir=" in line


class QuotaExceeded(L.Callback):
    """TensorBoard's writer as it meets a quota, wrapped as a library might wrap it."""

    def on_train_epoch_end(self, trainer, module) -> None:
        try:
            raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))
        except OSError as e:
            raise RuntimeError("event file write failed") from e


def test_a_full_disk_in_a_run_is_a_shared_cause_that_stops_a_sweep(tmp_path: Path):
    cfg = compose_cfg(*RUN, tmp_path=tmp_path)
    with pytest.raises(SharedCauseError, match=rf"^{tmp_path / 'run'}: disk quota exceeded \("):
        train(cfg, tmp_path / "run", [QuotaExceeded()])
