"""An arm's command, started as a user would start it, from the repository root: timed, its
output kept in the arm's folder."""

import subprocess
import time
from datetime import datetime
from pathlib import Path

from benchmarks.peers.problem import ROOT, Problem


class ArmFailed(RuntimeError):
    """The arm's command exited non-zero; the message ends with what it printed last."""


def launch(problem: Problem, cmd: list[str], out: Path) -> tuple[datetime, float]:
    """Run `cmd` with the problem's threads; (when it started, its wall seconds). Its output goes
    to `out`/output.txt."""
    out.mkdir(parents=True, exist_ok=True)
    log = out / "output.txt"
    t0, start = datetime.now(), time.perf_counter()
    with log.open("w") as sink:
        rc = subprocess.run(cmd, cwd=ROOT, env=problem.env(), stdout=sink, stderr=sink).returncode
    wall = time.perf_counter() - start
    if rc != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-15:]
        raise ArmFailed(f"exit {rc}: {' | '.join(tail)}")
    return t0, wall
