"""A run killed at any moment goes on from its last finished epoch with resume=<its folder>, and
ends exactly where an uninterrupted run ends (trainer.deterministic=true on the CPU): killed while
testing (its training ended, or stopped early) it trains nothing again; in another folder (a
retried trial, a moved run) it keeps its best checkpoint; from another kind of device it goes
on. Checkpoints cut short and full disks: test_disk_faults.py."""

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import ROOT, compose_cfg, run_cli, tiny

from cifar_sweep.errors import UserError
from cifar_sweep.resume import CONFIG, LAST
from cifar_sweep.train import train

RUN = [
    "model=tiny_cnn",
    "trainer.max_epochs=4",
    "trainer.deterministic=true",
    "dataset.augment.flip.p=0.5",  # the augmentation generator must be restored too
]


def metrics(folder: Path) -> dict:
    found = json.loads((folder / "metrics.json").read_text())
    return {k: v for k, v in found.items() if not k.startswith("time/")}


def kill_after_first_epoch(folder: Path, *args: str) -> None:
    """Start the run, SIGKILL it as soon as its first epoch's checkpoint exists."""
    cmd = [sys.executable, "-m", "cifar_sweep", *tiny([*RUN, *args, f"hydra.run.dir={folder}"])]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (folder / "checkpoints" / "last.ckpt").exists():
        assert proc.poll() is None and time.time() < deadline, "the run ended before a checkpoint"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (folder / "metrics.json").exists(), "killed too late: the run had finished"


@pytest.mark.slow  # three runs of the command line, about 20 s; CI runs it
def test_a_killed_run_resumed_ends_as_an_uninterrupted_run(tmp_path: Path):
    cache = f"dataset.cache_dir={tmp_path / 'cache'}"
    whole = run_cli(*RUN, cache, f"hydra.run.dir={tmp_path / 'whole'}")
    assert whole.returncode == 0, whole.stderr[-2000:]
    kill_after_first_epoch(tmp_path / "run", cache)
    resumed = run_cli(*RUN, cache, f"resume={tmp_path / 'run'}")  # goes on in its own folder
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    log = (tmp_path / "run" / "__main__.log").read_text()
    done = int(log.split("going on from epoch ")[1].split()[0])
    assert 1 <= done < 4  # so the rerun trained only the remaining epochs
    assert metrics(tmp_path / "run") == metrics(tmp_path / "whole")


def test_resume_with_another_config_is_refused_naming_the_key(tmp_path: Path):
    first = compose_cfg(*RUN, "trainer.max_epochs=1", tmp_path=tmp_path)
    train(first, tmp_path / "run")
    again = [*RUN, "trainer.max_epochs=1", "optimizer.lr=0.5", f"resume={tmp_path / 'run'}"]
    other = compose_cfg(*again, tmp_path=tmp_path)
    with pytest.raises(UserError, match=r"optimizer\.lr \(was 0\.1, now 0\.5\)"):
        train(other, tmp_path / "run")


def test_resume_of_a_folder_that_is_not_a_run_is_one_line(tmp_path: Path):
    done = run_cli(*RUN, f"resume={tmp_path / 'nope'}")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: resume={tmp_path / 'nope'}: not a run folder (no .hydra/config.yaml)"
    ]
    assert not (tmp_path / "nope").exists()


class Killed(Exception):
    """Stands for a SIGKILL at a chosen moment, in this process."""


class KillWhileTesting(L.Callback):
    def on_test_start(self, trainer, module) -> None:
        raise Killed


class TrainedEpochs(L.Callback):
    """Counts the epochs a run trains (every seed and fold of it: `every_run`)."""

    every_run = True

    def __init__(self):
        self.count = 0

    def on_train_epoch_start(self, trainer, module) -> None:
        self.count += 1


def killed_while_testing_then_resumed(tmp_path: Path, *args: str) -> TrainedEpochs:
    """An uninterrupted run in whole/; the same run killed while testing in run/, then resumed
    there; returns the epochs the resumed run trained."""
    train(compose_cfg(*RUN, *args, tmp_path=tmp_path), tmp_path / "whole")
    with pytest.raises(Killed):
        train(compose_cfg(*RUN, *args, tmp_path=tmp_path), tmp_path / "run", [KillWhileTesting()])
    trained = TrainedEpochs()
    again = compose_cfg(*RUN, *args, f"resume={tmp_path / 'run'}", tmp_path=tmp_path)
    train(again, tmp_path / "run", [trained])
    return trained


def test_a_run_killed_while_testing_tests_its_checkpoint_without_training_again(
    tmp_path: Path, caplog
):
    with caplog.at_level("INFO", logger="cifar_sweep.resume"):
        trained = killed_while_testing_then_resumed(tmp_path, "trainer.max_epochs=2")
    assert trained.count == 0
    assert "its training had ended after 2 epochs; nothing to train again" in caplog.text
    assert metrics(tmp_path / "run") == metrics(tmp_path / "whole")
    # no last-v1.ckpt beside last.ckpt: the next resume finds the same, ended, checkpoint
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "whole" / "checkpoints").iterdir())


def test_an_early_stopped_run_resumed_trains_no_further_epoch(tmp_path: Path):
    # never an improvement of 10 in val/loss: stops after its second epoch of 4
    stops = ["trainer.early_stopping.patience=1", "+trainer.early_stopping.min_delta=10"]
    trained = killed_while_testing_then_resumed(tmp_path, *stops)
    assert metrics(tmp_path / "whole")["epochs"] == 2  # stopped early
    assert trained.count == 0
    assert metrics(tmp_path / "run") == metrics(tmp_path / "whole")


class KillAtEpoch(L.Callback):
    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, module) -> None:
        if trainer.current_epoch == self.epoch:
            raise Killed


class BestWhenTesting(L.Callback):
    def on_test_start(self, trainer, module) -> None:
        best = trainer.checkpoint_callback
        self.path, self.score = Path(best.best_model_path), float(best.best_model_score)


# lr 0.01 for two epochs, then gradient ascent (AscentFromEpoch2): val/acc peaks at epoch 1,
# then falls, every loss finite
PEAKS_EARLY = ["optimizer.lr=0.01", "scheduler=constant", "trainer.max_epochs=4"]


class AscentFromEpoch2(L.Callback):
    """From epoch 2 on, a step up the gradient (lr -0.001): no config can ask for that, which
    is the point, so the test sets it on the optimizer itself."""

    def on_train_epoch_start(self, trainer, module) -> None:
        if trainer.current_epoch >= 2:
            for group in trainer.optimizers[0].param_groups:
                group["lr"] = -0.001


def saved_best_score(checkpoint: Path) -> float:
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    [state] = [v for k, v in saved["callbacks"].items() if k.startswith("AtomicCheckpoint")]
    return float(state["best_model_score"])


@pytest.mark.parametrize(
    "elsewhere",
    ["retried", pytest.param("moved", marks=pytest.mark.slow)],  # slow: CI runs it
)
def test_a_resume_in_another_folder_tests_the_best_epoch_of_the_run_it_goes_on_from(
    tmp_path: Path, elsewhere: str
):
    """A retried trial goes on in a folder of its own, a moved run folder (off a full disk) in
    its new place: either way the best epoch may be one from before."""
    ascent = AscentFromEpoch2()
    whole = train(compose_cfg(*RUN, *PEAKS_EARLY, tmp_path=tmp_path), tmp_path / "whole", [ascent])
    with pytest.raises(Killed):  # after epochs 0 and 1, the better ones
        first = compose_cfg(*RUN, *PEAKS_EARLY, tmp_path=tmp_path)
        train(first, tmp_path / "first", [KillAtEpoch(2), ascent])
    assert saved_best_score(tmp_path / "first" / LAST) == whole["val/acc_best"] > whole["val/acc"]
    source, out = tmp_path / "first", tmp_path / "retry"
    if elsewhere == "moved":
        source = out = Path(shutil.move(source, tmp_path / "moved"))
    retry = compose_cfg(*RUN, *PEAKS_EARLY, f"resume={source}", tmp_path=tmp_path)
    best = BestWhenTesting()
    again = train(retry, out, [best, ascent])
    assert again["test/acc"] == whole["test/acc"]  # the first run's best epoch, tested
    assert best.score == again["val/acc_best"] == whole["val/acc_best"]
    assert best.path.parent == out / "checkpoints"  # a copy: the folder stands alone
    assert metrics(out) == metrics(tmp_path / "whole")


def as_a_gpu_run_writes_it(checkpoint: Path, *, resolved: bool) -> None:
    """The checkpoint of this CPU run, as a GPU run would have written it: a CUDA data-order
    generator's state (Philox: 16 bytes), and with `resolved` (as before configs were compared
    as written) trainer.precision and channels_last decided for the GPU."""
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if resolved:
        saved[CONFIG]["trainer"].update(precision="bf16-mixed", channels_last=True)
    data = saved["ImageDataModule"]
    data["generator"] = torch.zeros(16, dtype=torch.uint8)
    data.pop("device", None)
    data.update({} if resolved else {"device": "cuda"})
    torch.save(saved, checkpoint)


@pytest.mark.parametrize("resolved", [True, False], ids=["config-resolved", "config-as-written"])
def test_a_run_from_a_gpu_resumes_on_the_cpu_with_a_data_order_from_seed_and_epoch(
    tmp_path: Path, caplog, resolved: bool
):
    cfg = compose_cfg(*RUN, "trainer.max_epochs=2", tmp_path=tmp_path)
    with pytest.raises(Killed):
        train(cfg, tmp_path / "run", [KillAtEpoch(1)])
    as_a_gpu_run_writes_it(tmp_path / "run" / LAST, resolved=resolved)
    shutil.copytree(tmp_path / "run", tmp_path / "again")
    found = []
    for folder in ("run", "again"):  # twice: the same data order each time
        resumed = compose_cfg(*RUN, "trainer.max_epochs=2", f"resume={tmp_path / folder}",
                              tmp_path=tmp_path)  # fmt: skip
        caplog.clear()
        with caplog.at_level("INFO"):
            found.append(train(resumed, tmp_path / folder))
        assert "going on from epoch 1" in caplog.text
        said = [r.getMessage() for r in caplog.records if "data order" in r.getMessage()]
        drawn_on = "another kind of device" if resolved else "cuda"  # as saved, or not at all
        assert said == [
            f"resume: the data order was drawn on {drawn_on}, this run is on cpu: epoch 1 on "
            "draws it from seed 0 and the epoch"
        ]
    assert metrics(tmp_path / "run") == metrics(tmp_path / "again")
    assert found[0]["epochs"] == 2


@pytest.mark.parametrize(("split", "folder"), [("repeats=2", "seed"), ("dataset.folds=2", "fold")])
def test_each_seed_or_fold_resumes_from_its_own_folder_without_training_again(
    tmp_path: Path, caplog, split: str, folder: str
):
    from cifar_sweep.__main__ import fit

    runs = [*RUN, "trainer.max_epochs=1", split]
    fit(compose_cfg(*runs, tmp_path=tmp_path), tmp_path / "run", [], evaluate=True)
    before = metrics(tmp_path / "run")
    trained = TrainedEpochs()
    again = compose_cfg(*runs, f"resume={tmp_path / 'run'}", tmp_path=tmp_path)
    with caplog.at_level("INFO", logger="cifar_sweep.resume"):
        fit(again, tmp_path / "run", [trained], evaluate=True)
    for i in (0, 1):  # each found its own checkpoint, whose training had ended
        assert f"resume={tmp_path / 'run' / f'{folder}{i}'}: its training had ended" in caplog.text
    assert trained.count == 0
    assert metrics(tmp_path / "run") == before
