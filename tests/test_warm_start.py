"""Studies that start informed (known points queued first, an earlier study's trials copied in)
and trials that are the mean of several seeds."""

from pathlib import Path

import optuna
import pytest
from conftest import states, sweep
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from cifar_sweep.errors import UserError
from cifar_sweep.sweep import warm_start
from cifar_sweep.sweep.contract import OBJECTIVE_STD, SEEDS, WARM_START

SPACE = {
    "optimizer.lr": FloatDistribution(1e-4, 1e-1, log=True),
    "optimizer": CategoricalDistribution(["sgd", "adamw"]),
}


def studies(tmp_path: Path) -> dict[str, optuna.Study]:
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    return {
        n: optuna.load_study(study_name=n, storage=url) for n in optuna.get_all_study_names(url)
    }


def test_queued_points_run_first_and_a_warm_start_copies_without_retraining(tmp_path: Path):
    point = "hydra.sweeper.enqueue=[{optimizer.lr: 0.01}]"
    sweep(tmp_path, point, "hydra.sweeper.n_trials=1", "repeats=2", "name=first")
    sweep(tmp_path, point, "hydra.sweeper.n_trials=1", "repeats=2", "name=first")  # a rerun
    [first] = studies(tmp_path).values()
    assert states(first) == {"COMPLETE": 1}  # the rerun queued the point again not
    assert first.trials[0].params["optimizer.lr"] == 0.01
    for t in first.trials:  # each trial is the mean of seeds 0 and 1, its spread recorded
        assert t.user_attrs[SEEDS] == [0, 1] and t.user_attrs[OBJECTIVE_STD] >= 0
        assert {p.name for p in (tmp_path / "sweep" / str(t.number)).glob("seed*")} == {
            "seed0",
            "seed1",
        }
    sweep(
        tmp_path,
        f"hydra.sweeper.warm_start={first.study_name}",
        "hydra.sweeper.n_trials=2",
        "name=second",
        f"hydra.sweep.dir={tmp_path / 'second'}",
    )
    second = next(s for n, s in studies(tmp_path).items() if n.startswith("second-"))
    copied = [t for t in second.trials if WARM_START in t.user_attrs]
    assert sorted(t.values for t in copied) == sorted(t.values for t in first.trials)
    ran = [t for t in second.trials if WARM_START not in t.user_attrs]
    assert len(ran) == 2 and all(t.state == TrialState.COMPLETE for t in ran)  # 2 new trials
    folders = {p.name for p in (tmp_path / "second").glob("[0-9]*")}
    assert folders == {str(t.number) for t in ran}  # nothing copied was trained again


@pytest.mark.parametrize(
    ("points", "message"),
    [
        ([{"optimizer.lrr": 0.01}], r"enqueue\[0\]: optimizer.lrr is not in the search space"),
        ([{"optimizer.lr": 5.0}], r"enqueue\[0\]: optimizer.lr=5.0 is outside the search space"),
        ([{"optimizer": "adam"}], r"enqueue\[0\]: optimizer='adam' is outside"),
        ([0.01], r"enqueue\[0\]=0.01 must be a mapping"),
    ],
)
def test_a_bad_queued_point_is_refused_naming_it(points, message):
    with pytest.raises(UserError, match=message):
        warm_start.enqueue(optuna.create_study(), points, SPACE)


def test_a_warm_start_from_a_missing_study_names_the_studies_there(tmp_path: Path):
    result = sweep(tmp_path, "hydra.sweeper.warm_start=nosuch", ok=False)
    assert result.returncode != 0
    assert "hydra.sweeper.warm_start=nosuch: no study 'nosuch'" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_define_by_run_space_is_known_to_the_checks():
    from omegaconf import OmegaConf

    from cifar_sweep.sweep.spaces import per_layer

    config = OmegaConf.create(
        {
            "hydra": {
                "sweeper": {
                    "per_layer": {
                        "count": "model.layers",
                        "low": 2,
                        "high": 4,
                        "choices": {"channels": [16, 32], "kernels": [3, 5]},
                    }
                }
            }
        }
    )
    dists = warm_start.distributions(SPACE, per_layer, config)
    assert {"model.layers", "model.channels.3", "model.kernels.0"} <= set(dists)
    warm_start.enqueue(optuna.create_study(), [{"model.layers": 2, "model.channels.1": 32}], dists)
