"""The sweeper-job contract: one place for names, one classify() for what a trial counts as, a
seeded study that starts informed still replays its seed, and a late result never fails a
retry that has started."""

import ast
import logging
from pathlib import Path

import optuna
import pytest
from conftest import ROOT
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import OverrideParseException
from optuna.trial import TrialState

from cifar_sweep.sweep import contract, loop, outcome, ownership, recovery
from cifar_sweep.sweep.contract import FAIL_KIND, RETRY_OF, WARM_START, classify

ATTRIBUTE_CALLS = {"set_user_attr", "set_system_attr", "set_trial_user_attr", "get"}
# the adapter's writes (optuna_private.set_user_attr(study, trial, KEY, value)): the key third
ADAPTER = "private"


def spelled_attribute_names(path: Path) -> list[str]:
    """String literals used as attribute keys in `path`: x.user_attrs[...], .get(...) on
    user_attrs/system_attrs, set_user_attr(...), set_trial_user_attr(id, ...)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Subscript) and getattr(node.value, "attr", "") in (
            "user_attrs",
            "system_attrs",
        ):
            key = node.slice
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") in ATTRIBUTE_CALLS:
            owner = getattr(node.func, "value", None)
            if node.func.attr == "get" and getattr(owner, "attr", "") not in (
                "user_attrs",
                "system_attrs",
            ):
                continue
            args = node.args[1:] if node.func.attr == "set_trial_user_attr" else node.args
            if getattr(owner, "id", "") == ADAPTER:
                args = node.args[2:]
            key = args[0] if args else None
        else:
            continue
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} {key.value!r}")
    return found


def test_attribute_names_are_spelled_only_in_the_contract():
    sources = [*(ROOT / "cifar_sweep").rglob("*.py"), *(ROOT / "hydra_plugins").rglob("*.py")]
    contract_file = ROOT / "cifar_sweep" / "sweep" / "contract.py"
    spelled = [hit for p in sources if p != contract_file for hit in spelled_attribute_names(p)]
    assert spelled == []


def test_optuna_private_api_is_used_only_in_its_adapter():
    """`study._storage`, `trial._trial_id` and the like live in sweep/optuna_private.py alone, so
    an Optuna release that changes them touches one file."""
    adapter = ROOT / "cifar_sweep" / "sweep" / "optuna_private.py"
    sources = [*(ROOT / "cifar_sweep").rglob("*.py"), *(ROOT / "hydra_plugins").rglob("*.py")]
    private = {"_storage", "_trial_id", "_contains", "_cached_frozen_trial"}
    used = [
        f"{p.relative_to(ROOT)}:{node.lineno} {node.attr}"
        for p in sources
        if p != adapter
        for node in ast.walk(ast.parse(p.read_text()))
        if isinstance(node, ast.Attribute) and node.attr in private
    ]
    assert used == []
    uses = [n for n in ast.walk(ast.parse(adapter.read_text())) if isinstance(n, ast.Attribute)]
    assert {n.attr for n in uses} >= {"_storage", "_trial_id"}  # the test looks where they are


def test_our_attribute_names_cannot_be_a_fixed_override_of_the_optuna_sweeper():
    """hydra-optuna-sweeper stores each fixed override as a user attribute named by its key."""
    names = [v for k, v in vars(contract).items() if k.isupper() and isinstance(v, str)]
    attrs = [n for n in names if n.startswith(contract.PREFIX)]
    assert contract.OWNER in attrs and contract.FAIL_KIND in attrs
    for name in attrs:
        with pytest.raises(OverrideParseException):
            OverridesParser.create().parse_overrides([f"{name}=1"])


def test_classify_names_a_failure_by_its_kind_and_a_copy_apart():
    s = optuna.create_study()
    done, silent, surplus = s.ask(), s.ask(), s.ask()
    s.tell(done, 1.0)
    s.tell(silent, state=TrialState.FAIL)  # as Optuna's stale check leaves it: no kind
    contract.fail(s, surplus, contract.NOT_RUN, "not run")
    s.add_trial(
        optuna.trial.create_trial(value=2.0, user_attrs={WARM_START: "old#0"}),
    )
    s.enqueue_trial({})
    s.ask()
    assert [classify(t) for t in s.trials] == [
        contract.COMPLETE,
        contract.WORKER_DIED,
        contract.NOT_RUN,
        contract.IMPORTED,
        contract.RUNNING,
    ]
    counts = contract.states(s)
    assert sum(counts[k] for k in contract.CHARGED) == 0  # none of these spends the budget


def ran_params(study: optuna.Study) -> list[float]:
    """Run a worker loop of 3 trials with a stand-in job; the x of each trial it ran."""
    ok = JobReturn()
    ok.status, ok.return_value = JobStatus.COMPLETED, 0.5
    loop.WorkerLoop(
        study=study,
        n_trials=3,
        n_jobs=1,
        grid=False,
        failure_budget=0,
        launch=lambda jobs, initial_job_idx: [ok for _ in jobs],
        overrides=lambda ts: [[f"x={t.suggest_float('x', 0, 1)}"] for t in ts],
        names=["acc"],
        heartbeat_s=60,
        grace_s=180,
        max_retry=1,
    ).run()
    return [t.params["x"] for t in study.trials if classify(t) == contract.COMPLETE]


def test_a_study_seeded_by_enqueue_or_warm_start_still_draws_its_seeded_sequence():
    def seeded() -> optuna.Study:
        return optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))

    plain = ran_params(seeded())
    warm = seeded()
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    warm.add_trial(
        optuna.trial.create_trial(
            value=0.1, params={"x": 0.9}, distributions=dist, user_attrs={WARM_START: "old#0"}
        )
    )
    queued = seeded()
    queued.enqueue_trial({"x": 0.25})
    assert ran_params(warm) == plain
    assert ran_params(queued) == [0.25, *plain[:2]]


def test_a_late_result_leaves_a_started_retry_running(caplog):
    """The first run finishes after another worker failed it and its retry has started: the
    retry's run is kept, live; nothing is added and nothing raises."""
    s = optuna.create_study(direction="maximize")
    first = s.ask()
    ownership.claim(s, first, worker=0, device="cpu")
    frozen = s._storage.get_trial(first._trial_id)
    s._storage.set_trial_state_values(first._trial_id, state=TrialState.FAIL)  # judged silent
    recovery.requeue(s, frozen, max_retry=1)
    retry = s.ask()  # another worker runs the retry
    ok = JobReturn()
    ok.status, ok.return_value = JobStatus.COMPLETED, 0.5
    with caplog.at_level(logging.WARNING):
        outcome.tell(s, first, ok)
    assert "its retry runs: kept" in caplog.text
    assert [t.state for t in s.trials] == [TrialState.FAIL, TrialState.RUNNING]
    assert s.trials[retry.number].user_attrs[RETRY_OF] == first.number
    assert FAIL_KIND not in s.trials[retry.number].user_attrs
