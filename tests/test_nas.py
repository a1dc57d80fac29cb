"""The NAS model and its conditional search space."""

import optuna
import pytest
import torch
from conftest import compose_cfg

from cifar_sweep.errors import UserError
from cifar_sweep.instantiate import build
from cifar_sweep.sweep.spaces import per_layer


@pytest.mark.parametrize("layers", [2, 3, 4])
def test_nas_cnn_has_the_asked_layers_and_output_shape(layers: int):
    cfg = compose_cfg("model=nas_cnn", f"model.layers={layers}")
    model = build(cfg.model, num_classes=10, in_channels=3)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    convs = [m for m in model if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == list(cfg.model.channels[:layers])
    assert [c.kernel_size[0] for c in convs] == list(cfg.model.kernels[:layers])


def test_nas_cnn_refuses_more_layers_than_entries():
    cfg = compose_cfg("model=nas_cnn", "model.layers=5")
    with pytest.raises(UserError, match="model.layers=5"):
        build(cfg.model, num_classes=10, in_channels=3)


def test_per_layer_space_suggests_only_existing_layers():
    from conftest import ROOT
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(ROOT / "conf")):
        cfg = compose("config", ["model=nas_cnn", "search_space=nas"], return_hydra_config=True)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    counts = set()
    for _ in range(20):
        trial = study.ask()
        per_layer(cfg, trial)
        n = trial.params["model.layers"]
        counts.add(n)
        assert set(trial.params) == {"model.layers"} | {
            f"model.{k}.{i}" for k in ("channels", "kernels") for i in range(n)
        }
        assert {trial.params[f"model.channels.{i}"] for i in range(n)} <= {16, 32, 64}
        study.tell(trial, 0.0)
    assert counts == {2, 3, 4}
