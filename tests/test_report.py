"""The end-of-sweep report: its contour plot pairs the parameters that matter most."""

from pathlib import Path

import optuna

from cifar_sweep import report
from cifar_sweep.sweep import plots
from cifar_sweep.sweep.contract import OBJECTIVE


def test_contour_pairs_the_three_most_important_of_six_parameters(tmp_path: Path):
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(0))
    study.set_user_attr(OBJECTIVE, "val/acc_best")

    def objective(trial):  # only lr and width matter; four parameters are noise
        noise = [trial.suggest_float(f"noise{i}", 0, 1) for i in range(4)]
        lr, width = trial.suggest_float("lr", 1e-3, 1, log=True), trial.suggest_int("width", 8, 64)
        return -abs(lr - 0.1) * 10 + width / 64 + 0.001 * sum(noise)

    study.optimize(objective, n_trials=30)
    top = plots._top_params(study)
    assert len(top) == 3 and {"lr", "width"} <= set(top)
    files = report.write(study, tmp_path, plots=True)
    assert tmp_path / "plots" / "contour.png" in files


def test_a_study_without_finished_trials_still_gets_its_report(tmp_path: Path):
    study = optuna.create_study()
    for _ in range(2):
        trial = study.ask()
        [trial.suggest_float(n, 0, 1) for n in "abcde"]
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    assert plots._top_params(study) == ["a", "b", "c"]  # no importances: the first by name
    report.write(study, tmp_path, plots=True)
    assert (tmp_path / "optimization_results.yaml").exists()


def test_the_timeline_has_one_row_per_worker_and_one_bar_per_trial():
    from cifar_sweep.sweep import timeline
    from cifar_sweep.sweep.contract import OWNER

    study = optuna.create_study()
    for worker in (0, 1, 1):
        owner = {"host": "node1", "worker": worker, "pid": 1, "device": "cpu"}
        study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs={OWNER: owner}))
    ax = timeline.plot(study)
    assert [label.get_text() for label in ax.get_yticklabels()] == ["worker 0", "worker 1"]
    assert len(ax.patches) == 3


def test_a_multi_objective_study_gets_each_objectives_plots(tmp_path: Path):
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr(OBJECTIVE, ["val/acc_best", "time/epoch_s"])
    study.optimize(
        lambda t: (t.suggest_float("lr", 0, 1), t.suggest_int("width", 8, 64) / 64), n_trials=8
    )
    names = {f.name for f in report.write(study, tmp_path, plots=True)}
    for kind in ("optimization_history", "param_importances", "parallel_coordinate"):
        assert {f"{kind}_val_acc_best.png", f"{kind}_time_epoch_s.png"} <= names, names
    assert "pareto_front.png" in names
