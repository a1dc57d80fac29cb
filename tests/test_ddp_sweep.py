"""Sweeps whose every trial trains on two devices (DDP, two CPU processes over gloo): the worker
starts each trial's ranks itself, with the trial's own single-run command. Real processes, tens
of seconds each on two cores: slow-marked; CI runs them."""

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import ROOT, run_cli, states, study, sweep, sweep_cmd
from optuna.trial import TrialState

from cifar_sweep.sweep import contract
from cifar_sweep.sweep.contract import FAIL_KIND, FAIL_REASON, OWNER, RESUME, RETRY_OF, RUN_DIR

pytestmark = pytest.mark.slow
SMALL = ["model=tiny_cnn", "model.channels=[8]", "model.hidden=16", "sweeper=random"]
# dataset.batch_size is per device: 2 x 16 takes the steps of one device's 32
DDP = ["trainer.devices=2", "trainer.strategy=ddp", "dataset.batch_size=16"]


def rank_pids(folder: Path) -> dict[int, int]:
    """{rank: pid} of the live processes that train in the job folder `folder`."""
    found = {}
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().decode().split("\0")
        except (OSError, ValueError):
            continue
        if any(a.startswith("hydra.run.dir=") and str(folder) in a for a in argv):
            named = [a for a in argv if a.startswith("hydra.job.name=train_ddp_process_")]
            found[int(named[-1].rsplit("_", 1)[1]) if named else 0] = int(proc.name)
    return found


def whole_test_set_accuracy(folder: Path) -> float:
    """The accuracy of the job's best checkpoint on every test image, on one CPU process."""
    import lightning as L
    import torch
    from omegaconf import OmegaConf

    from cifar_sweep.data.datamodule import ImageDataModule
    from cifar_sweep.train import build_module, device_defaults

    cfg = device_defaults(OmegaConf.load(folder / ".hydra" / "config.yaml"))
    data = ImageDataModule(cfg.dataset, seed=cfg.seed, channels_last=False)
    data.setup()
    module, *_ = build_module(cfg, data)
    [best] = [p for p in (folder / "checkpoints").glob("*.ckpt") if p.stem[:5] == "epoch"]
    module.load_state_dict(torch.load(best, weights_only=True)["state_dict"])
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    [tested] = trainer.test(module, data.test_dataloader(), verbose=False)
    return tested["test/acc"]


def test_a_sweep_of_two_rank_trials_holds_n_trials_each_tested_on_the_whole_test_set(tmp_path):
    args = [*SMALL, *DDP, "hydra.sweeper.n_trials=2", "trainer.max_epochs=2", "test_in_trials=true"]
    sweep(tmp_path, *args)
    s = study(tmp_path)
    assert states(s) == {"COMPLETE": 2}
    for t in s.trials:
        folder = Path(t.user_attrs[RUN_DIR])
        # the sweep process that started its ranks owns it, also after rank 0 has exited and
        # before the sweep has told its end (others would fail it as worker_died in between)
        assert t.user_attrs[OWNER]["pid"] == os.getpid()
        assert (folder / "train_ddp_process_1.log").exists()  # two ranks trained it
        metrics = json.loads((folder / "metrics.json").read_text())  # one, by rank 0
        assert t.value == metrics["val/acc_best"]
        assert abs(metrics["test/acc"] - whole_test_set_accuracy(folder)) < 1e-6
    assert len(list((tmp_path / "sweep").glob("*/metrics.json"))) == 2


def test_two_workers_of_two_ranks_keep_their_device_groups(tmp_path: Path):
    groups = ("hydra.sweeper.workers=2", "hydra.sweeper.devices=[[0,1],[2,3]]")
    args = [*SMALL, *DDP, "trainer.accelerator=cpu", *groups, "hydra.sweeper.n_trials=2"]
    sweep(tmp_path, *args)
    s = study(tmp_path)
    assert states(s) == {"COMPLETE": 2}
    owners = {t.user_attrs[OWNER]["worker"]: t.user_attrs[OWNER]["device"] for t in s.trials}
    assert owners == {0: "0,1", 1: "2,3"}  # on a CPU machine these are labels: the ranks' CPUs
    assert all((Path(t.user_attrs[RUN_DIR]) / "metrics.json").exists() for t in s.trials)


def test_a_pruned_and_a_diverged_trial_stop_both_ranks_in_the_same_epoch(tmp_path: Path):
    """The pruner's decision is rank 0's, broadcast; the divergence check is reduced over the
    ranks: either way rank 1 ends with rank 0 instead of waiting for it in a collective (the
    worker would say it killed a rank left running)."""
    below = ["hydra.sweeper.pruner._target_=optuna.pruners.ThresholdPruner"]
    below += ["+hydra.sweeper.pruner.lower=2.0"]  # val/acc_best is below it: pruned at epoch 0
    args = [*SMALL[:-1], *DDP, "optimizer.lr=0.01,1e4", "trainer.max_epochs=20", *below]
    result = subprocess.run(
        sweep_cmd(tmp_path, *args), cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    s = study(tmp_path)
    pruned, diverged = sorted(s.trials, key=lambda t: t.params["optimizer.lr"])
    assert pruned.state == TrialState.PRUNED and list(pruned.intermediate_values) == [0]
    assert diverged.user_attrs[FAIL_REASON].startswith("diverged: ")
    assert "still ran" not in output and "Traceback" not in output


def test_a_killed_rank_fails_its_trial_at_once_and_the_retry_ends_as_one_uninterrupted_run(
    tmp_path: Path,
):
    """kill -9 of rank 1 mid-trial: the trial fails as worker_died within seconds, no rank of
    it is left, its retry goes on from the last finished epoch, the study holds exactly
    n_trials, and the retried point ends exactly where a 2-rank run without a kill ends."""
    epochs = 4
    deterministic = ["trainer.deterministic=true", "dataset.train_per_class=2000"]
    same = [*DDP, f"trainer.max_epochs={epochs}", *deterministic]
    sweep_proc = subprocess.Popen(
        sweep_cmd(tmp_path, *SMALL, *same, "hydra.sweeper.n_trials=2"),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        folder = tmp_path / "sweep" / "0"
        deadline = time.time() + 300
        while not (folder / "checkpoints" / "last.ckpt").exists():  # epoch 0 done
            assert sweep_proc.poll() is None and time.time() < deadline, "no epoch ended"
            time.sleep(0.1)
        ranks = rank_pids(folder)
        assert sorted(ranks) == [0, 1], ranks
        os.kill(ranks[1], signal.SIGKILL)
        killed = time.time()
        while rank_pids(folder):
            assert time.time() - killed < 10, f"ranks left: {rank_pids(folder)}"
            time.sleep(0.1)
        gone = time.time() - killed
        assert sweep_proc.wait(timeout=600) == 0
    finally:
        if sweep_proc.poll() is None:
            os.killpg(sweep_proc.pid, signal.SIGKILL)
    s = study(tmp_path)
    assert sum(contract.classify(t) in contract.FINISHED for t in s.trials) == 2
    first = s.trials[0]
    assert first.user_attrs[FAIL_KIND] == contract.WORKER_DIED
    assert first.user_attrs[FAIL_REASON] == "rank 1 of 2 was killed (SIGKILL)"
    [retry] = [t for t in s.trials if t.user_attrs.get(RETRY_OF) == 0]
    assert retry.user_attrs[RESUME] == str(folder) and retry.state == TrialState.COMPLETE
    started = retry.datetime_start.timestamp() - killed
    print(f"ranks gone {gone:.1f} s and the retry started {started:.1f} s after rank 1's death")
    assert started < 10
    log = (Path(retry.user_attrs[RUN_DIR]) / "__main__.log").read_text()
    resumed_at = int(re.search(r"going on from epoch (\d+)", log).group(1))
    assert 1 <= resumed_at < epochs  # only the epochs the killed run had not finished
    assert sorted(retry.intermediate_values) == list(range(epochs))  # the whole curve
    assert not [p for p in Path("/proc").glob("[0-9]*/cmdline") if _mentions(p, tmp_path)]
    point = [f"{k}={v!r}" for k, v in retry.params.items()]
    whole = run_cli(*SMALL[:-1], *same, *point, f"hydra.run.dir={tmp_path / 'whole'}")
    assert whole.returncode == 0, whole.stderr[-2000:]
    metrics = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    assert retry.value == metrics["val/acc_best"]


def _mentions(cmdline: Path, folder: Path) -> bool:
    try:
        return str(folder) in cmdline.read_bytes().decode(errors="replace")
    except OSError:
        return False


def test_ctrl_c_stops_the_ranks_of_a_trial_and_queues_its_point_first(tmp_path: Path):
    args = [*SMALL, *DDP, "hydra.sweeper.n_trials=2", "trainer.max_epochs=20"]
    proc = subprocess.Popen(
        sweep_cmd(tmp_path, *args, "dataset.train_per_class=1000"),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        start_new_session=True,
    )
    folder = tmp_path / "sweep" / "0"
    deadline = time.time() + 300
    while len(rank_pids(folder)) < 2 or not (folder / "checkpoints" / "last.ckpt").exists():
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-3000:]
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)  # as the terminal does: the sweep's own process group
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    assert stderr.strip().splitlines()[-1].startswith("interrupted:")
    assert not rank_pids(folder)  # the ranks, in sessions of their own, were stopped too
    s = study(tmp_path)
    assert s.trials[0].user_attrs[FAIL_KIND] == contract.INTERRUPTED
    [queued] = [t for t in s.trials if t.state == TrialState.WAITING]
    assert queued.user_attrs[RESUME] == str(folder)  # it goes on from its last epoch next time
