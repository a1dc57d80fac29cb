"""Population-based training (sweeper=pbt) on Ray Tune's toy problem: a learning rate whose best
value moves as training goes on. Stand-in jobs train a one-number model in-process through the
real worker loop, pruner and queue, keeping a checkpoint file per trial as real jobs do, so the
scheduling, exploit and explore are tested in a second; real sweeps are slow-marked."""

import json
import math
import random
from pathlib import Path

import optuna
import pytest
from hydra.core.utils import JobReturn, JobStatus
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from cifar_sweep.errors import UserError
from cifar_sweep.sweep import optuna_private, pbt_replay
from cifar_sweep.sweep.contract import (
    PBT_GENERATION,
    PBT_MEMBER,
    PBT_NEXT,
    PBT_PARENT,
    RESUME,
    RETRY_OF,
    RUN_DIR,
)
from cifar_sweep.sweep.loop import WorkerLoop
from cifar_sweep.sweep.pbt import PBTPruner
from cifar_sweep.sweep.pbt_explore import explore

EPOCHS, INTERVAL, POPULATION = 30, 1, 4
LOW, HIGH = 1e-3, 1.0  # the search space of lr, log scale
GRID = [3e-1, 1e-1, 3e-2, 1e-2, 3e-3, 1e-3]  # fixed rates, each trained EPOCHS epochs
LEARNED = 20.0  # the score at which the best rate has come down from 1e-1 to 1e-3


# measured (seeds 0, 1, 2): PBT's best member 24.8, 20.5, 24.6; the grid's best 14.3 (lr 0.03)


def best_lr(score: float) -> float:
    """The best rate for a model that has learned `score`: 1e-1 at first, 1e-3 once learned
    (as Ray's pbt_function toy, whose best rate moves with the accuracy reached)."""
    return 0.1 * 10 ** (-2 * min(score / LEARNED, 1.0))


def gain(lr: float, score: float) -> float:
    """One epoch's progress: 1 at the best rate, nothing a decade away from it or further."""
    return max(0.0, 1.0 - abs(math.log10(lr / best_lr(score))))


def fixed_rate(lr: float) -> float:
    score = 0.0
    for _ in range(EPOCHS):
        score += gain(lr, score)
    return score


def stand_in_jobs(
    s: optuna.Study, trained: list, *, stop_after: int | None = None, diverge_above=math.inf
):
    """A launcher whose jobs train the toy model: from the checkpoint in `resume=` (its epoch and
    score), writing their own after every epoch, reporting each epoch and stopping where the
    pruner says. `stop_after`: Ctrl-C after that many epochs in all, as a kill would; a rate above
    `diverge_above` fails its job's first epoch as divergence.StopOnNonFinite does."""

    def launch(jobs, initial_job_idx):
        returns = []
        for job in jobs:
            args = dict(o.lstrip("+").split("=", 1) for o in job)
            trial_id = int(args["trial.id"])
            trial = optuna_private.reattach(s, trial_id)
            frozen = optuna_private.frozen(s, trial_id)
            lr = float(args["optimizer.lr"])
            epoch, score = 0, 0.0
            if "resume" in args:
                saved = Path(args["resume"].strip("'")) / "checkpoints" / "last.ckpt"
                epoch, score = json.loads(saved.read_text()).values()
            own = Path(frozen.user_attrs[RUN_DIR]) / "checkpoints"
            own.mkdir(parents=True, exist_ok=True)
            ret = None
            if lr > diverge_above:
                error = UserError(f"diverged: train/loss is nan at epoch {epoch} (lr {lr})")
                returns.append(JobReturn(status=JobStatus.FAILED, _return_value=error))
                continue
            for e in range(epoch, EPOCHS):
                score += gain(lr, score)
                (own / "last.ckpt").write_text(json.dumps({"epoch": e + 1, "score": score}))
                trained.append((frozen.user_attrs[PBT_MEMBER], e, lr))
                if stop_after is not None and len(trained) >= stop_after:
                    raise KeyboardInterrupt
                trial.report(score, e)
                if trial.should_prune():
                    pruned = optuna.TrialPruned(f"pruned after epoch {e}")
                    ret = JobReturn(status=JobStatus.FAILED, _return_value=pruned)
                    break
            returns.append(ret or JobReturn(status=JobStatus.COMPLETED, _return_value=score))
        return returns

    return launch


def pbt_study(seed: int = 0) -> optuna.Study:
    pruner = PBTPruner(
        population=POPULATION,
        interval_epochs=INTERVAL,
        quantile=0.25,
        perturb=[1.2, 0.8],
        resample_p=0.25,
        max_epochs=EPOCHS,
        seed=seed,
    )
    sampler = optuna.samplers.RandomSampler(seed=seed)
    return optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)


def run(s: optuna.Study, tmp_path: Path, trained: list, failure_budget=0, **kw) -> None:
    WorkerLoop(
        study=s,
        n_trials=s.pruner.n_trials,
        n_jobs=1,
        grid=False,
        failure_budget=failure_budget,
        launch=stand_in_jobs(s, trained, **kw),
        overrides=lambda trials: [
            [f"optimizer.lr={t.suggest_float('optimizer.lr', LOW, HIGH, log=True)}"] for t in trials
        ],
        names=["score"],
        heartbeat_s=60,
        grace_s=180,
        max_retry=1,
        sweep_dir=str(tmp_path),
    ).run()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_population_follows_a_moving_best_rate_and_beats_every_fixed_rate(seed, tmp_path):
    s, trained = pbt_study(seed), []
    run(s, tmp_path, trained)
    grid = {lr: fixed_rate(lr) for lr in GRID}
    assert len(trained) == POPULATION * EPOCHS  # each member EPOCHS epochs, as each fixed rate
    assert s.best_value > max(grid.values()), (s.best_value, grid)
    # the best member's rate came down with the best rate
    rates = [t.params["optimizer.lr"] for t in pbt_replay.lineage(s.trials, s.best_trial)]
    assert rates[-1] < rates[0]
    assert abs(math.log10(rates[-1] / best_lr(s.best_value))) < 1
    assert s.best_trial.last_step == EPOCHS - 1 and s.best_trial.state == TrialState.COMPLETE


def test_an_exploit_goes_on_from_the_parents_checkpoint_at_its_epoch(tmp_path):
    s, trained = pbt_study(), []
    run(s, tmp_path, trained)
    exploits = 0
    for t in s.trials:
        if PBT_PARENT not in t.user_attrs:
            assert t.user_attrs[PBT_GENERATION] == 0 and RESUME not in t.user_attrs
            continue
        parent = s.trials[t.user_attrs[PBT_PARENT]]
        decided = s.trials[_before(s, t)].user_attrs[PBT_NEXT]  # at its member's last interval
        assert decided["parent"] == parent.number and t.params == decided["params"]
        assert t.user_attrs[RESUME] == parent.user_attrs[RUN_DIR]
        # its curve is the parent's up to the epoch it goes on from, then its own
        start = parent.last_step + 1
        assert {k: v for k, v in t.intermediate_values.items() if k < start} == dict(
            parent.intermediate_values
        )
        assert min(k for k in t.intermediate_values if k >= start) == start
        exploits += parent.user_attrs[PBT_MEMBER] != t.user_attrs[PBT_MEMBER]
    assert exploits > 0


def test_the_lineage_plot_draws_each_interval_and_an_arrow_per_exploit(tmp_path):
    from matplotlib.patches import Rectangle
    from matplotlib.text import Annotation

    from cifar_sweep.sweep import lineage

    s, trained = pbt_study(), []
    run(s, tmp_path, trained)
    ax = lineage.plot(s)
    ended = s.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    exploits = [
        t
        for t in ended
        if PBT_PARENT in t.user_attrs
        and s.trials[t.user_attrs[PBT_PARENT]].user_attrs[PBT_MEMBER] != t.user_attrs[PBT_MEMBER]
    ]
    arrows = [c for c in ax.get_children() if isinstance(c, Annotation)]
    bars = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert len(arrows) == len(exploits) > 0 and len(bars) == len(ended)
    assert sum(b.get_width() for b in bars) == POPULATION * EPOCHS  # every epoch drawn once


def _before(s: optuna.Study, t) -> int:
    """The number of the interval of `t`'s member that ended just before `t` was queued."""
    same = [
        x
        for x in s.trials
        if x.user_attrs.get(PBT_MEMBER) == t.user_attrs[PBT_MEMBER]
        and x.user_attrs.get(PBT_GENERATION) == t.user_attrs[PBT_GENERATION] - 1
        and x.state == TrialState.PRUNED
    ]
    return same[-1].number


def test_a_sweep_stopped_mid_interval_and_rerun_trains_every_member_to_the_end_once(tmp_path):
    s, trained = pbt_study(), []
    with pytest.raises(KeyboardInterrupt):
        run(s, tmp_path, trained, stop_after=POPULATION * EPOCHS // 2 + 1)
    run(s, tmp_path, trained)
    members = {t.user_attrs[PBT_MEMBER] for t in s.trials if PBT_MEMBER in t.user_attrs}
    assert members == set(range(POPULATION))
    complete = s.get_trials(states=(TrialState.COMPLETE,))
    assert sorted(t.user_attrs[PBT_MEMBER] for t in complete) == list(range(POPULATION))
    assert all(t.last_step == EPOCHS - 1 for t in complete)
    # nothing trained twice: the interrupted interval went on from its own last epoch
    assert len(trained) == POPULATION * EPOCHS
    assert not s.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))


def test_the_best_members_replay_config_sets_its_learning_rate_at_every_epoch(tmp_path):
    import torch
    from conftest import compose_cfg

    from cifar_sweep.instantiate import build

    s, trained = pbt_study(), []
    run(s, tmp_path, trained)
    cfg = compose_cfg(*pbt_replay.overrides(s, s.best_trial))  # as retrain composes it
    optimizer = build(cfg.optimizer)(params=[torch.nn.Parameter(torch.zeros(1))])
    schedule = build(cfg.scheduler.fn)(optimizer=optimizer)
    replayed = []
    for _ in range(cfg.trainer.max_epochs):
        replayed.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    chain = pbt_replay.lineage(s.trials, s.best_trial)
    starts = [0] + [t.last_step + 1 for t in chain[:-1]]
    trained_with = [
        t.params["optimizer.lr"]
        for t, start in zip(chain, starts, strict=True)
        for _ in range(start, t.last_step + 1)
    ]
    assert len(trained_with) == EPOCHS and len(set(trained_with)) > 1
    assert replayed == pytest.approx(trained_with)


def test_explore_perturbs_by_the_factors_or_draws_afresh_always_within_bounds():
    dists = {
        "lr": FloatDistribution(1e-4, 1.0, log=True),
        "momentum": FloatDistribution(0.5, 0.99),
        "width": IntDistribution(8, 64, step=8),
        "norm": CategoricalDistribution(["batch", "none"]),
    }
    start = {"lr": 0.9, "momentum": 0.6, "width": 56, "norm": "batch"}
    rng, n = random.Random(0), 2000
    perturbed = {name: 0 for name in ("lr", "momentum", "width")}
    # x1.2 and x0.8, clipped to the bounds and rounded to the step
    expected = {"lr": (1.0, 0.72), "momentum": (0.72, 0.5), "width": (64, 48)}
    norms = set()
    for _ in range(n):
        new = explore(start, dists, rng=rng, perturb=[1.2, 0.8], resample_p=0.25)
        for name, value in new.items():
            assert optuna_private.contains(dists[name], value), (name, value)
        for name, values in expected.items():
            perturbed[name] += new[name] in [pytest.approx(v) for v in values]
        norms.add(new["norm"])
    for name in ("lr", "momentum"):  # the others, resample_p = 0.25 of them, drawn afresh
        assert 0.72 < perturbed[name] / n < 0.78, (name, perturbed[name] / n)
    assert perturbed["width"] / n > 0.75  # a fresh draw may land on 48 or 64 too
    assert norms == {"batch", "none"}  # a categorical value is always drawn afresh


def test_an_interval_trains_on_from_another_checkpoint_with_its_own_lr_and_only_that_changed(
    tmp_path,
):
    """The job side of an exploit, in-process: a run the pruner stopped after one epoch at lr
    0.1, gone on from by a run at lr 0.02 that names optimizer.lr in trial.changes."""
    import lightning as L
    import torch
    from conftest import compose_cfg

    from cifar_sweep.errors import UserError
    from cifar_sweep.sweep.changes import SetChangedValues
    from cifar_sweep.train import train

    class PausedAfterFirstEpoch(L.Callback):  # as the pruner stops an interval
        pruned_epoch = None

        def on_validation_end(self, trainer, module):
            if not trainer.sanity_checking:
                self.pruned_epoch, trainer.should_stop = trainer.current_epoch, True

    run = ["model=tiny_cnn", "scheduler=constant", "optimizer.lr=0.1", "trainer.max_epochs=2"]
    parent = compose_cfg(*run, tmp_path=tmp_path)
    train(parent, tmp_path / "parent", [PausedAfterFirstEpoch()], test=False)
    child = [*run, "optimizer.lr=0.02", f"resume={tmp_path / 'parent'}"]
    with pytest.raises(UserError, match=r"optimizer\.lr \(was 0\.1, now 0\.02\)"):
        train(compose_cfg(*child, tmp_path=tmp_path), tmp_path / "refused", test=False)
    cfg = compose_cfg(*child, "+trial.changes=[optimizer.lr]", tmp_path=tmp_path)
    changed = SetChangedValues(cfg.optimizer, ["optimizer.lr"])
    metrics = train(cfg, tmp_path / "child", [changed], test=False)
    assert metrics["epochs"] == 2  # the parent's epoch, then one of its own
    saved = [
        torch.load(tmp_path / f / "checkpoints" / "last.ckpt", weights_only=True)
        for f in ("parent", "child")
    ]
    assert saved[1]["global_step"] == 2 * saved[0]["global_step"]
    assert saved[1]["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(0.02)
    assert saved[0]["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(0.1)


def test_a_later_interval_tells_its_job_which_values_may_differ_from_its_checkpoint(tmp_path):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from cifar_sweep.sweep.contract import trial_overrides

    s, trained = pbt_study(), []
    run(s, tmp_path, trained)
    later = optuna_private.reattach(s, optuna_private.trial_id(s.trials[-1]))
    first = optuna_private.reattach(s, optuna_private.trial_id(s.trials[0]))
    parsed = OverridesParser.create().parse_overrides(trial_overrides(s.study_name, later))
    values = {o.get_key_element().lstrip("+"): o.value() for o in parsed}
    assert values["trial.changes"] == ["optimizer.lr"]
    assert values["resume"] == s.trials[s.trials[-1].user_attrs[PBT_PARENT]].user_attrs[RUN_DIR]
    assert not any("changes" in o for o in trial_overrides(s.study_name, first))  # from scratch


@pytest.mark.slow  # Optuna's plots of 120 trials: 6.5 s on a busy 2-core machine; CI runs it
def test_the_report_of_a_pbt_study_draws_its_lineage(tmp_path):
    from cifar_sweep.sweep import plots

    s, trained = pbt_study(), []
    run(s, tmp_path, trained)
    drawn = plots.draw(s, tmp_path, ["score"])
    assert tmp_path / "plots" / "lineage.png" in drawn


def test_another_population_or_quantile_is_another_study():
    from conftest import ROOT
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    from cifar_sweep.retrain import swept_study_name

    def name(*extra: str) -> str:
        args = ["sweeper=pbt", "scheduler=constant", *extra]
        with initialize_config_dir(str(ROOT / "conf")):
            hydra = GlobalHydra.instance().hydra
            cfg = hydra.compose_config("config", args, run_mode=RunMode.MULTIRUN)
            return swept_study_name(args, cfg)  # as the sweeper names its study

    names = {name(), name("hydra.sweeper.pbt.population=3"), name("hydra.sweeper.pbt.quantile=0.5")}
    assert len(names) == 3 and name() == name()


def test_a_trial_asked_when_another_worker_took_the_queued_interval_is_not_run():
    from cifar_sweep.sweep.contract import NOT_RUN, classify
    from cifar_sweep.sweep.loop import drop_surplus
    from cifar_sweep.sweep.pbt_schedule import STRAY, to_ask

    s = pbt_study()
    assert to_ask(s, n_jobs=1, max_retry=1) == 1  # member 0's first interval, queued
    taken, stray = s.ask(), s.ask()  # a second worker asked at the same moment: a fresh trial
    kept = drop_surplus(s, [taken, stray], s.pruner.n_trials)
    assert [t.number for t in kept] == [taken.number]
    frozen = s.trials[stray.number]
    assert classify(frozen) == NOT_RUN and STRAY in frozen.user_attrs.values()


def test_a_job_of_a_later_interval_gets_the_callback_that_sets_its_values():
    from conftest import compose_cfg

    from cifar_sweep.__main__ import changed_values_callbacks
    from cifar_sweep.sweep.changes import SetChangedValues

    [callback] = changed_values_callbacks(
        compose_cfg("optimizer.lr=0.02", "+trial.changes=[optimizer.lr,dataset.augment.flip.p]")
    )
    assert isinstance(callback, SetChangedValues) and callback.values == {"lr": 0.02}
    assert changed_values_callbacks(compose_cfg()) == []  # a plain run, a first interval


def test_piecewise_holds_each_segments_values_from_its_epoch_until_another_sets_them():
    import torch

    from cifar_sweep.piecewise import Piecewise

    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.1, momentum=0.9, weight_decay=5e-4)
    segments = [{"epoch": 2, "lr": 0.02}, {"epoch": 0, "lr": 0.05, "weight_decay": 1e-4}]
    schedule = Piecewise(optimizer, [*segments, {"epoch": 3, "momentum": 0.5}])
    seen = []
    for _ in range(4):
        group = optimizer.param_groups[0]
        seen.append((group["lr"], group["weight_decay"], group["momentum"]))
        optimizer.step()
        schedule.step()
    assert seen == [(0.05, 1e-4, 0.9), (0.05, 1e-4, 0.9), (0.02, 1e-4, 0.9), (0.02, 1e-4, 0.5)]
    with pytest.raises(ValueError, match="sets only lr, momentum, weight_decay"):
        Piecewise(optimizer, [{"epoch": 0, "betas": (0.9, 0.99)}])


@pytest.mark.parametrize(
    "overrides",
    [  # the default, and the CPU comparison's command (S4's learning-rate question)
        ["sweeper=pbt", "scheduler=constant"],
        [
            "+experiment=resnet18_lr",
            "sweeper=pbt",
            "hydra.sweeper.params={optimizer.lr:'tag(log, interval(0.001, 0.1))'}",
            "hydra.sweeper.pbt.population=3",
        ],
    ],
)
def test_sweeper_pbt_builds_its_pruner_from_the_yaml_and_passes_its_checks(overrides):
    from conftest import ROOT
    from hydra import compose, initialize_config_dir

    from cifar_sweep.sweep.pbt_checks import check_pbt
    from cifar_sweep.sweep.storage import pruner

    with initialize_config_dir(str(ROOT / "conf")):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    check_pbt(cfg, list(cfg.hydra.sweeper.params))
    built = pruner(cfg.hydra.sweeper)
    assert isinstance(built, PBTPruner) and built.max_epochs == cfg.trainer.max_epochs
    assert (built.quantile, built.perturb, built.resample_p) == (0.25, [1.2, 0.8], 0.25)  # Ray's
    assert built.n_trials == built.population * math.ceil(cfg.trainer.max_epochs / 3)


REAL = (  # a real PBT sweep on the tiny set: 2 members, 3 one-epoch intervals each
    "model=tiny_cnn",
    "model.channels=[8]",
    "model.hidden=16",
    "sweeper=pbt",
    "scheduler=constant",
    "hydra.sweeper.params={optimizer.lr:'tag(log, interval(1e-3, 0.5))'}",  # retrain takes it
    "hydra.sweeper.pbt.population=2",
    "hydra.sweeper.pbt.interval_epochs=1",
    "trainer.max_epochs=3",
)


@pytest.mark.slow  # a real sweep of 6 one-epoch trials; CI runs it
def test_a_real_interval_goes_on_from_its_parents_checkpoint_with_its_own_lr(tmp_path):
    import torch
    from conftest import study, sweep

    sweep(tmp_path, *REAL)
    s = study(tmp_path)
    complete = s.get_trials(states=(TrialState.COMPLETE,))
    assert sorted(t.user_attrs[PBT_MEMBER] for t in complete) == [0, 1]
    assert all(t.last_step == 2 for t in complete)
    later = [t for t in s.trials if PBT_PARENT in t.user_attrs and t.state != TrialState.FAIL]
    assert len(later) == 4  # each member's second and third interval
    for t in later:
        parent = s.trials[t.user_attrs[PBT_PARENT]]
        mine, theirs = (
            torch.load(Path(x.user_attrs[RUN_DIR]) / "checkpoints" / "last.ckpt", weights_only=True)
            for x in (t, parent)
        )
        per_epoch = theirs["global_step"] // (parent.last_step + 1)
        # the parent's steps, then its own
        assert mine["global_step"] == per_epoch * (t.last_step + 1)
        assert mine["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(
            t.params["optimizer.lr"]
        )
        [log] = [p.read_text() for p in Path(t.user_attrs[RUN_DIR]).glob("*.log")]
        assert f"going on from epoch {parent.last_step + 1}, where the pruner paused it" in log

    # retrain replays the best member from scratch: its epochs, at its lineage's rates
    from conftest import in_process, sweep_overrides

    from cifar_sweep import retrain

    out = tmp_path / "retrain"
    result = in_process(retrain.run, [*sweep_overrides(tmp_path, *REAL), f"hydra.run.dir={out}"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "is a PBT member: replayed from scratch as" in result.stdout
    [metrics] = out.glob("**/metrics.json")
    assert json.loads(metrics.read_text())["epochs"] == 3
    [saved] = metrics.parent.glob("checkpoints/last.ckpt")
    rates = [t.params["optimizer.lr"] for t in pbt_replay.lineage(s.trials, s.best_trial)]
    state = torch.load(saved, weights_only=True)["optimizer_states"][0]["param_groups"][0]
    assert state["lr"] == pytest.approx(rates[-1])  # the last interval's rate at its end


@pytest.mark.slow  # a real sweep killed while a later interval trains, then rerun: CI runs it
def test_a_pbt_sweep_killed_mid_interval_goes_on_to_the_same_members_and_epochs(tmp_path):
    from conftest import kill_once_a_trial_runs_with, study, sweep

    args = (*REAL, "trainer.max_epochs=4")
    kill_once_a_trial_runs_with(tmp_path, args, PBT_PARENT, "later interval")
    sweep(tmp_path, *args)  # the same command, typed again
    s = study(tmp_path)
    complete = s.get_trials(states=(TrialState.COMPLETE,))
    assert sorted(t.user_attrs[PBT_MEMBER] for t in complete) == [0, 1]
    assert all(t.last_step == 3 for t in complete)
    assert not s.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))


@pytest.mark.slow  # a real sweep killed once, then rerun: CI runs it
def test_an_interval_killed_after_it_was_decided_is_decided_again_by_its_retry(tmp_path):
    """The first interval to end is killed (SIGKILL) after its end was decided and its checkpoint
    saved, before the study was told; its retry decides again rather than training on into the
    next interval: every member still ends an interval at every epoch."""
    from conftest import study, sweep, sweep_killed_once

    args = (*REAL, "trainer.max_epochs=2")
    sweep_killed_once(tmp_path, *args, hook="on_fit_end")
    sweep(tmp_path, *args)  # the same command, typed again
    s = study(tmp_path)
    ended: dict[int, list[int]] = {}
    for t in s.get_trials(states=(TrialState.PRUNED, TrialState.COMPLETE)):
        ended.setdefault(t.user_attrs[PBT_MEMBER], []).append(t.last_step)
    assert {member: sorted(steps) for member, steps in ended.items()} == {0: [0, 1], 1: [0, 1]}
    [retry] = [t for t in s.trials if RETRY_OF in t.user_attrs]
    assert retry.state == TrialState.PRUNED and PBT_NEXT in retry.user_attrs


def test_an_interval_killed_in_its_first_epoch_is_retried_from_its_parents_checkpoint(tmp_path):
    """A later interval copies its parent's best checkpoint into its own folder as it restores
    (epoch=N-step=M.ckpt, no last.ckpt of its own yet); killed before its first epoch ends, its
    retry goes on from the parent's checkpoint, not from epoch 0 in its own folder."""
    from cifar_sweep.sweep import recovery

    parent, own = tmp_path / "3", tmp_path / "7"
    (parent / "checkpoints").mkdir(parents=True)
    (parent / "checkpoints" / "last.ckpt").write_bytes(b"epoch 3")
    (own / "checkpoints").mkdir(parents=True)
    (own / "checkpoints" / "epoch=2-step=30.ckpt").write_bytes(b"the parent's best, copied")
    study = optuna.create_study(direction="maximize")
    trial = study.ask({"optimizer.lr": FloatDistribution(1e-3, 1.0, log=True)})
    attrs = {RUN_DIR: str(own), RESUME: str(parent), PBT_MEMBER: 1, PBT_GENERATION: 1}
    attrs |= {PBT_PARENT: 3}
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    study.tell(trial, state=TrialState.FAIL)

    assert recovery.requeue(study, study.trials[trial.number], max_retry=3)

    [retry] = study.get_trials(states=(TrialState.WAITING,))
    assert retry.user_attrs[RESUME] == str(parent)
    assert retry.user_attrs[PBT_PARENT] == 3 and retry.user_attrs[PBT_MEMBER] == 1


def test_two_workers_that_queued_and_took_one_interval_at_once_run_it_once():
    """Two workers queue member 0's first interval at the same moment and each asks for one
    before the later could step back: the later is not run, and names the one that runs it."""
    from cifar_sweep.sweep.contract import NOT_RUN, classify
    from cifar_sweep.sweep.loop import drop_surplus

    s = pbt_study()
    for _ in range(2):  # what pbt_schedule.queue writes, twice, before either withdraws
        s.enqueue_trial({}, user_attrs={PBT_MEMBER: 0, PBT_GENERATION: 0})
    first, second = s.ask(), s.ask()
    assert second.user_attrs[PBT_MEMBER] == 0  # both hold the same (member, generation)

    kept = drop_surplus(s, [second], s.pruner.n_trials) + drop_surplus(
        s, [first], s.pruner.n_trials
    )

    assert [t.number for t in kept] == [first.number]
    frozen = s.trials[second.number]
    assert classify(frozen) == NOT_RUN
    assert f"trial {first.number} runs its PBT interval" in str(frozen.user_attrs.values())


def test_a_member_that_diverges_goes_on_from_a_top_members_checkpoint(tmp_path):
    """A rate that blows the toy up fails its interval as diverged; the member is not lost: it
    goes on from a top member's checkpoint at the epoch the failed interval started from, and
    every member still trains to the end (Ray's PBT stops such a trial)."""
    s, trained = pbt_study(), []
    run(s, tmp_path, trained, diverge_above=0.2, failure_budget=POPULATION * EPOCHS)
    failed = s.get_trials(states=(TrialState.FAIL,))
    assert failed and all("diverged" in t.user_attrs.values() for t in failed)
    complete = s.get_trials(states=(TrialState.COMPLETE,))
    assert sorted(t.user_attrs[PBT_MEMBER] for t in complete) == list(range(POPULATION))
    assert all(t.last_step == EPOCHS - 1 for t in complete)
    for t in failed:
        member, generation = t.user_attrs[PBT_MEMBER], t.user_attrs[PBT_GENERATION]
        [after] = [  # the member's next try (it may fail again)
            x
            for x in s.trials
            if x.user_attrs.get(PBT_MEMBER) == member
            and x.user_attrs.get(PBT_GENERATION) == generation + 1
        ]
        if PBT_PARENT in t.user_attrs:  # from the epoch the failed interval started at
            start = s.trials[t.user_attrs[PBT_PARENT]].last_step
            assert s.trials[after.user_attrs[PBT_PARENT]].last_step == start
        else:  # its first interval: a fresh draw from epoch 0
            assert PBT_PARENT not in after.user_attrs and RESUME not in after.user_attrs


@pytest.mark.parametrize("retries, rescued", [(0, False), (1, True)])
def test_a_member_whose_worker_died_more_than_max_retry_times_is_rescued(retries, rescued):
    """An interval failed as worker_died is retried up to max_retry times (recovery); once no
    retry will come, its member goes on as a rescue instead of being lost."""
    from optuna.trial import create_trial

    from cifar_sweep.sweep.contract import FAIL_KIND, RETRIES, WORKER_DIED
    from cifar_sweep.sweep.pbt_schedule import ready

    s = pbt_study()
    dist = {"optimizer.lr": FloatDistribution(LOW, HIGH, log=True)}
    for member in range(POPULATION):  # every member ended its first interval at epoch 0
        attrs = {PBT_MEMBER: member, PBT_GENERATION: 0, RUN_DIR: f"/runs/{member}"}
        attrs[PBT_NEXT] = {"parent": member, "params": {"optimizer.lr": 0.1}, "exploit": False}
        s.add_trial(
            create_trial(
                state=TrialState.PRUNED,
                params={"optimizer.lr": 0.1},
                distributions=dist,
                intermediate_values={0: float(member)},
                user_attrs=attrs,
            )
        )
    died = {PBT_MEMBER: 0, PBT_GENERATION: 1, PBT_PARENT: 0, FAIL_KIND: WORKER_DIED}
    s.add_trial(
        create_trial(
            state=TrialState.FAIL,
            params={"optimizer.lr": 0.1},
            distributions=dist,
            user_attrs={**died, RETRIES: retries},
        )
    )
    found = ready(s.get_trials(), POPULATION, s.direction, max_retry=1)
    assert (0 in [member for _, member, _ in found]) == rescued
