"""The GPU campaign at toy scale on the CPU (`make campaign SMOKE=1`): every stage runs through
the same code as on a GPU, records its figures, and a second run goes on where the first ended."""

import json
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

STAGES = [
    "gpu-tests",
    "throughput",
    "s2-nas",
    "s4-lr",
    "s4-detached",
    "s0",
    "s1",
    "workers",
    "s4-budget",
    "airbench",
]


def campaign(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "benchmarks/campaign.py",
        "--smoke",
        f"--results={tmp_path / 'results.json'}",
        f"--readme={tmp_path / 'README.md'}",
        *args,
    ]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_smoke_campaign_records_every_stage_and_resumes(tmp_path: Path):
    readme = tmp_path / "README.md"
    readme.write_text("# project\n\n## Limits\n\n- none\n")
    campaign(tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())
    assert sorted(results) == sorted(STAGES)
    assert all(r["complete"] and r["figures"] for r in results.values())
    assert results["gpu-tests"]["figures"]["skipped"] > 0  # no CUDA here: skipped, with a reason
    assert {"runner_s_per_epoch", "bare_s_per_epoch", "mfu"} <= set(
        results["throughput"]["figures"]["rows"][0]
    )
    assert results["s4-lr"]["figures"]["per_lr"].keys() == {"0.001", "0.01", "0.1"}
    assert results["s0"]["figures"]["models"].keys() == {"seq_cnn", "two_branch_cnn"}
    assert results["s2-nas"]["figures"]["retrain_test_acc"] is not None
    text = readme.read_text()
    section = text[text.index("## Measured on cpu") : text.index("## Limits")]
    assert all(f"| {s} |" in section for s in STAGES) and "not measured yet" not in section
    assert "CIFAR-10 (JPEG q75 copy)" in section and "72.62%" in section  # published beside ours
    # again: nothing left to measure, unless a stage is named
    assert "nothing left to measure" in campaign(tmp_path).stdout
    before = results["s4-budget"]["date"]
    campaign(tmp_path, "--stages=s4-budget")
    again = json.loads((tmp_path / "results.json").read_text())
    assert again["s4-budget"]["date"] >= before and again["s0"] == results["s0"]
    assert readme.read_text().count("## Measured on cpu") == 1  # the section is replaced, not added


def test_an_unknown_stage_is_refused_naming_the_stages():
    done = subprocess.run(
        [sys.executable, "benchmarks/campaign.py", "--smoke", "--stages=s9"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0 and "--stages s9: no such stage; stages: gpu-tests" in done.stderr
