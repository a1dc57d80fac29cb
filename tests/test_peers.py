"""Our sweeper against its peers (`python -m benchmarks.peers`): what counts on an arm's curve, the
target and the time to it, the stock sweeper's config, the JPEG subset, and (slow) the smoke run
of every arm, recorded as it ends, then skipped when run again."""

import json
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import optuna
import pytest
from conftest import ROOT, compose_cfg, noise_tree

from benchmarks.peers import problem, readme, record, results, space, stock
from benchmarks.peers.__main__ import main
from benchmarks.peers.arms import ARMS

README = "# project\n\n## Measured\n\nkept\n\n## Limits\n\n- none\n"


def trial(known: float, value, state: str = "COMPLETE", epochs: int = 6) -> dict:
    return record.trial(
        start=known - 10, end=known, known=known, value=value, epochs=epochs, state=state
    )


def study(seed: int, *trials: dict, wall: float = 100.0) -> dict:
    return record.summarize(seed, wall, list(trials), concurrency=2)


def test_a_pruned_trial_counts_on_the_curve_and_a_failed_one_does_not():
    r = study(
        0,
        trial(30, 0.40),
        trial(20, 0.55, "PRUNED", epochs=2),
        trial(40, 0.90, "FAIL"),
        trial(50, 0.60),
    )
    assert r["curve"] == [[20, 0.55], [50, 0.60]]  # by the time each result was held
    assert r["best_val"] == 0.60 and r["pruned"] == 1 and r["failed"] == 1
    assert r["epochs"] == 6 + 2 + 6 + 6
    assert r["idle_core_s"] == 2 * 100 - 4 * 10  # 2 cores for 100 s, 4 trials busy 10 s each


def test_a_promoted_point_counts_each_epoch_once_and_is_pruned_only_if_its_last_segment_was():
    r = study(
        0,
        trial(10, 0.40, "PRUNED", epochs=1) | {"point": 0},  # paused at the first rung
        trial(20, 0.45, "PRUNED", epochs=1) | {"point": 1},  # stopped for good
        trial(40, 0.50, "COMPLETE", epochs=5) | {"point": 0},  # point 0 promoted: epochs 1-5
    )
    assert r["epochs"] == 7 and r["pruned"] == 1
    assert r["curve"] == [[10, 0.40], [20, 0.45], [40, 0.50]]


def test_a_pruned_trial_of_a_study_counts_its_epochs_and_its_last_reported_value(tmp_path: Path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    s = optuna.create_study(storage=storage, direction="maximize")
    pruned, complete = s.ask(), s.ask()
    for epoch in range(6):
        complete.report(0.1 * epoch, step=epoch)
        if epoch < 3:
            pruned.report(0.1 * epoch, step=epoch)
    s.tell(pruned, state=optuna.trial.TrialState.PRUNED)
    s.tell(complete, 0.5)

    rows = record.from_study(storage, datetime.now())

    assert [r["epochs"] for r in rows] == [3, 6] and [r["state"] for r in rows] == [
        "PRUNED",
        "COMPLETE",
    ]
    assert rows[0]["value"] == pytest.approx(0.2) and rows[1]["value"] == 0.5


def test_the_target_is_the_stock_sweepers_median_final_and_a_miss_counts_its_wall_time():
    found = {"target": None, "arms": {}}
    for seed, best in enumerate((0.50, 0.60, 0.70)):
        results.add(found, stock.NAME, study(seed, trial(10 * (seed + 1), best)))
    results.add(found, "cifar_sweep", study(1, trial(5, 0.58), trial(8, 0.65), wall=90))
    results.add(found, "cifar_sweep", study(0, trial(5, 0.59), wall=80))

    assert found["target"] == pytest.approx(0.60)
    ours = found["arms"]["cifar_sweep"]
    assert ours["seeds"] == [0, 1]  # kept in seed order, each list alike
    assert ours["time_to_target_s"] == [80, 8] and ours["reached"] == [False, True]
    assert found["arms"][stock.NAME]["reached"] == [False, True, True]
    assert results.done(found, "cifar_sweep", 1) and not results.done(found, "cifar_sweep", 2)


def test_the_readme_section_gives_our_ratio_to_each_peer_and_replaces_itself(tmp_path: Path):
    found = {"target": None, "arms": {}, "machine": "cpu", "problem": "toy"}
    results.add(found, stock.NAME, study(0, trial(100, 0.60), wall=100))
    results.add(found, "ray-tune", study(0, trial(50, 0.61), wall=60))
    results.add(found, "cifar_sweep", study(0, trial(30, 0.60), wall=40))
    results.skip(found, "cifar_sweep-promote", "pruner=asha not available")
    path = tmp_path / "README.md"
    path.write_text(README)

    for _ in range(2):
        readme.update(path, found, Path("peers.json"), Path("peers.png"))

    text = path.read_text()
    assert text.count("## Against the peers") == 1 and text.index("## Against") < text.index(
        "## Limits"
    )
    assert "against hydra-optuna-sweeper: time to target 0.30x theirs (goal <= 0.5)" in text
    assert "against ray-tune: time to target 0.60x theirs (goal <= 0.8), final best -1.00" in text
    assert "skipped: pruner=asha not available" in text and "(peers.png)" in text
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert len({line.count("|") for line in rows}) == 1  # every row as wide as the header


def test_a_suggested_trial_composes_into_the_nas_model_it_names(tmp_path: Path):
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3)).ask()
    overrides = space.suggest(trial)

    cfg = compose_cfg("+experiment=nas_hyperband", *overrides, tmp_path=tmp_path)

    layers = trial.params["model.layers"]
    assert 2 <= layers <= 4 and 1e-4 <= cfg.optimizer.lr <= 1e-2
    assert [cfg.model.channels[i] for i in range(layers)] == [
        trial.params[f"model.channels.{i}"] for i in range(layers)
    ]


def test_the_stock_arm_gives_the_stock_sweeper_our_space_without_our_keys(tmp_path: Path):
    name = stock.write_config(tmp_path, "nas_hyperband")
    cmd = [sys.executable, "-m", "cifar_sweep", "--config-dir", str(tmp_path)]
    cmd += ["--config-name", "stock", f"+experiment={name}", "--cfg", "hydra", "-p", "hydra"]

    shown = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)

    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper" in shown.stdout
    assert "hydra_joblib_launcher" in shown.stdout
    assert "custom_search_space: benchmarks.peers.space.per_layer" in shown.stdout
    assert "optimizer.lr: tag(log, interval(1e-4, 1e-2))" in shown.stdout
    assert "heartbeat_s" not in shown.stdout and "workers" not in shown.stdout


def test_the_subset_takes_the_first_images_of_each_class_once(tmp_path: Path):
    tree = noise_tree(tmp_path / "tree", size=8, per_class=(5, 3))

    subset = problem.copy_subset(tree, tmp_path / "subset", train=2, test=1)
    (tree / "train" / "c0" / "0.png").unlink()  # a second call keeps the copy it made
    problem.copy_subset(tree, tmp_path / "subset", train=2, test=1)

    assert sorted(p.name for p in (subset / "train" / "c0").iterdir()) == ["0.png", "1.png"]
    assert len(list(subset.glob("train/*/*"))) == 8 and len(list(subset.glob("test/*/*"))) == 4


def test_an_unknown_arm_is_one_line_naming_the_arms():
    with pytest.raises(SystemExit) as exit_:
        main(["--smoke", "--arms=ray,cifar_sweep"])

    assert str(exit_.value) == (
        "error: --arms ray: no such arm; arms: hydra-optuna-sweeper, optuna-script, ray-tune, "
        "cifar_sweep, cifar_sweep-promote"
    )


def peers(*args: str) -> subprocess.CompletedProcess:
    """`python -m benchmarks.peers --smoke ...` from the repository root, as a user types it."""
    cmd = [sys.executable, "-m", "benchmarks.peers", "--smoke", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200)


@pytest.mark.slow
@pytest.mark.timeout(1500)  # 10 toy studies: about 3.5 minutes on 2 idle cores
def test_smoke_records_every_arm_and_seed_and_a_rerun_runs_none_again(tmp_path: Path):
    out = tmp_path / "out"
    before = {p for p in (ROOT / "benchmarks" / "results").iterdir()}

    done = peers(f"--out={out}")

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    path = out / "peers-smoke.json"
    found = json.loads(path.read_text())
    assert {"target", "machine", "problem", "arms"} <= set(found) and 0 < found["target"] <= 1
    assert list(found["arms"]) == list(ARMS)
    for name, arm in found["arms"].items():
        assert not arm.get("skipped") and arm["seeds"] == [0, 1], (name, arm.get("skipped"))
        per_seed = ("wall_s", "best_val", "time_to_target_s", "reached", "epochs", "curves")
        assert all(len(arm[k]) == 2 for k in per_seed), name
        assert all(0 < b <= 1 for b in arm["best_val"]) and all(arm["curves"]), name
        assert all(c[-1][1] == b for c, b in zip(arm["curves"], arm["best_val"], strict=True))
    assert (out / "peers-smoke.png").is_file() and "## Against the peers" in (
        out / "README.md"
    ).read_text()
    assert set((ROOT / "benchmarks" / "results").iterdir()) == before

    again = peers(f"--out={out}")

    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert not re.search(r"seed \d+: \d+ s, best", again.stdout)  # no study ran again
    assert json.loads(path.read_text())["arms"] == found["arms"]
