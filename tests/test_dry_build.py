"""A constructor's mistake (optimizer, scheduler, model, accelerator) is one line naming the group
and its keys, answered before any data is read: the dry build, and the value checks beside it."""

import subprocess
import sys

import pytest
import torch
from conftest import ROOT, compose_cfg, run_in_process, sweep, tiny

from cifar_sweep.checks import check

# (overrides, group, what the line names): each printed a traceback or trained in vain before
MISTAKES = [
    (["optimizer.momentum=0"], "optimizer", ["optimizer.momentum=0", "optimizer.nesterov=true"]),
    (["optimizer.momentum=1.5"], "optimizer", ["optimizer.momentum=1.5"]),
    (["optimizer=adam", "+optimizer.betas=[1.0,0.999]"], "optimizer", ["optimizer.betas="]),
    (["optimizer=adam", "+optimizer.eps=-1e-8"], "optimizer", ["optimizer.eps=-1e-08"]),
    (["optimizer=adamw", "+optimizer.betas=0.9"], "optimizer", ["optimizer.betas=0.9"]),
    (["scheduler=step", "scheduler.fn.step_size=0"], "scheduler", ["scheduler.fn.step_size=0"]),
    (["scheduler=exponential", "scheduler.fn.gamma=0"], "scheduler", ["scheduler.fn.gamma=0"]),
    (["scheduler=constant", "scheduler.fn.factor=0"], "scheduler", ["scheduler.fn.factor=0"]),
    (["scheduler=onecycle", "scheduler.fn.max_lr=0"], "scheduler", ["scheduler.fn.max_lr=0"]),
    (["optimizer=adam", "+optimizer.maximize=true"], "optimizer", ["optimizer.maximize=true"]),
    (["scheduler=cosine", "scheduler.fn.T_max=0"], "scheduler", ["scheduler.fn.T_max=0"]),
    (["scheduler=onecycle", "scheduler.fn.pct_start=1.5"], "scheduler", ["pct_start=1.5"]),
    (
        ["scheduler=reduce_on_plateau", "scheduler.fn.mode=maximum"],
        "scheduler",
        ["scheduler.fn.mode=maximum"],
    ),
    (["model.width=0"], "model", ["model.width=0"]),
    (["model.width=-8"], "model", ["model.width=-8"]),
    (["model=nas_cnn", "model.channels=[64,-1,64,64]"], "model", ["model.channels=[64, -1,"]),
    (["model=nas_cnn", "model.layers=4", "dataset.image_size=8"], "model", ["model.layers=4"]),
    (["model=seq_cnn", "dataset.image_size=4"], "model", ["3x4x4"]),
    (["model=seq_cnn", "model.dropout=1.5"], "model", ["model.dropout=1.5"]),
    (["model=resnet_dense", "model.units=0"], "model", ["model.units=0"]),
    (["model=fast_cnn", "model.logit_scale=0"], "model", ["model.logit_scale=0"]),
    (["trainer.accelerator=tpu"], "trainer", ["trainer.accelerator=tpu"]),
    (["trainer.devices=0"], "trainer", ["trainer.devices=0"]),
    (["trainer.strategy=ddpp"], "trainer", ["trainer.strategy=ddpp"]),
]


@pytest.mark.parametrize(
    ("args", "group", "named"), MISTAKES, ids=[" ".join(a) for a, _, _ in MISTAKES]
)
def test_a_constructor_mistake_is_one_line_naming_its_group_and_keys(args, group, named, tmp_path):
    result = run_in_process(f"hydra.run.dir={tmp_path / 'run'}", *args)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith(f"error: {group}"), lines
    assert all(key in lines[0] for key in named), lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "run" / "tb").exists()  # refused before the trainer logged anything


@pytest.mark.slow  # moved to slow to keep the default run under 3 minutes; CI runs it
def test_the_command_line_prints_the_issue_example_as_one_line(tmp_path):
    cmd = [sys.executable, "-m", "cifar_sweep"]
    args = tiny(["optimizer.momentum=0", f"hydra.run.dir={tmp_path / 'run'}"])
    result = subprocess.run([*cmd, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: optimizer: Nesterov momentum requires a momentum and zero dampening "
        "(optimizer.momentum=0, optimizer.nesterov=true)"
    ]
    assert "Traceback" not in result.stdout


def test_a_sweep_with_a_bad_base_config_fails_before_its_study(tmp_path):
    result = sweep(
        tmp_path,
        "optimizer.momentum=0",
        "optimizer.lr=0.01,0.1",
        "hydra.sweeper.n_trials=2",
        ok=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: optimizer: Nesterov momentum requires")
    assert not (tmp_path / "studies.db").exists()  # no study, no trial


def test_the_dry_build_leaves_the_random_state_and_the_threads_as_they_were():
    cfg = compose_cfg()
    state, threads = torch.random.get_rng_state(), torch.get_num_threads()
    check(cfg)
    assert torch.equal(torch.random.get_rng_state(), state)  # a seeded run draws the same
    assert torch.get_num_threads() == threads  # training keeps its threads


def test_a_trial_that_draws_a_bad_value_fails_naming_its_keys(tmp_path):
    result = sweep(tmp_path, "optimizer.momentum=choice(0)", "hydra.sweeper.n_trials=1", ok=False)
    assert result.returncode == 1
    assert "failed with: optimizer: Nesterov momentum requires" in result.stderr
    assert "(optimizer.momentum=0, optimizer.nesterov=true)" in result.stderr


@pytest.mark.parametrize("group", ["model", "optimizer", "scheduler"])
def test_every_option_passes_the_dry_build_in_a_short_run_and_a_long_one(group):
    for option in sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml")):
        cfg = compose_cfg(f"{group}={option}")
        for epochs in (1, 30):  # a one-epoch schedule may end at 0 after its last step
            cfg.trainer.max_epochs = epochs
            check(cfg)
