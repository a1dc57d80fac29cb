"""The campaign: every study and the speed, measured stage by stage, resumable.

    python -m benchmarks.campaign                          # every GPU stage not yet measured
    python -m benchmarks.campaign --stages throughput      # named stages again
    python -m benchmarks.campaign --smoke --out /tmp/c     # every stage at toy scale, on the CPU
    python -m benchmarks.campaign --profile cpu            # the CPU reproduction (hours)
    python -m benchmarks.campaign --render benchmarks/results/h100-80gb-hbm3.json   # README only

Run folders, study databases and the data cache go under --out. A run records each stage in
benchmarks/results/<gpu>.json (or cpu-<cpu model>.json) as soon as it ends (a campaign cut short
goes on with the stages not done) and rewrites the README section "Measured on <gpu>" (or "on the
CPU") from that file; --copy-to DIR also copies both there after every stage. The CPU profile's
stages keep their folders: one cut short (Ctrl-C, a killed process) goes on from its last epoch
when the same command runs again, and its wall time adds up over the runs. A smoke run keeps its
results and a README copy under --out too.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import torch

from benchmarks import machine
from benchmarks.campaign import cpu, readme, stages

ROOT = Path(__file__).resolve().parents[2]
# 8 minutes a GPU stage: short enough to run one stage at a time on a borrowed GPU; a stage's
# sweeps stop when it runs out and keep what finished. A smoke stage needs 10-40 s on 2 idle
# cores; 300 s lets it finish on a busy CPU too.
BUDGET_S = {"gpu": 480, "smoke": 300, "cpu": 4 * 3600}  # a CPU stage: 20-70 minutes
PROFILES = {"gpu": stages.ALL, "cpu": cpu.ALL}


class Campaign:
    """Where a campaign reads and writes, its scale, and a clock for each stage's budget."""

    def __init__(self, args: argparse.Namespace):
        self.smoke, self.profile = args.smoke, args.profile
        self.stages = PROFILES[self.profile]
        self.keep = self.profile == "cpu"  # stages keep their folders and go on where they stopped
        if self.smoke:
            self.hardware, self.slug = "cpu (smoke: toy scale, not figures)", "smoke"
        elif self.keep:
            self.hardware = machine.cpu_description()
            self.slug = f"cpu-{machine.cpu_slug()}"
        else:
            if not torch.cuda.is_available():
                sys.exit("error: no CUDA device; the campaign measures a GPU (--smoke: toy scale)")
            self.hardware = torch.cuda.get_device_name()
            self.slug = "-".join(self.hardware.lower().replace("nvidia", "").split())
        default_out = Path("outputs", f"campaign-{'smoke' if self.smoke else self.profile}")
        self.out = (args.out or default_out).absolute()
        self.data = args.data.absolute()
        self.copy_to = args.copy_to
        # a GPU run's two products belong to the checkout (to commit); a smoke run's do not
        products = self.out if self.smoke else ROOT
        self.results = args.results or products / "benchmarks" / "results" / f"{self.slug}.json"
        self.readme = args.readme or products / "README.md"
        if not self.readme.exists():
            self.readme.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / "README.md", self.readme)
        self.budget_s = BUDGET_S["smoke" if self.smoke else self.profile]
        self.deadline = 0.0

    @contextmanager
    def clock(self, stage: str):
        """Seconds spent on `stage` over every run of it (with `keep`: a stage cut short and
        run again adds up), yielded as a function; saved every second in its folder."""
        path = self.out / stage / "wall_s.txt"
        before = float(path.read_text()) if self.keep and path.exists() else 0.0
        t0, done = time.perf_counter(), threading.Event()

        def spent() -> float:
            return round(before + time.perf_counter() - t0, 1)

        def save() -> None:  # whole or not at all: a kill mid-write leaves the last value
            path.parent.mkdir(parents=True, exist_ok=True)
            path.with_suffix(".partial").write_text(str(spent()))
            os.replace(path.with_suffix(".partial"), path)

        def every_second() -> None:
            while not done.wait(1):
                save()

        saver = threading.Thread(target=every_second, daemon=True)
        if self.keep:
            saver.start()
        try:
            yield spent
        finally:
            done.set()
            if self.keep:
                saver.join()
                save()

    def shown(self, args) -> str:
        """A command as the results file records it: --out and --data as <out> and <data>, so
        it names no folder of the machine it ran on."""
        text = " ".join(args)
        return text.replace(str(self.out), "<out>").replace(str(self.data), "<data>")

    def left(self) -> float:
        """Seconds left of the running stage's budget."""
        return self.deadline - time.monotonic()

    def run(self, *args: str, share: float = 1.0, keep_output: bool = False) -> dict:
        """A command from the repository root, stopped once `share` of the time left is spent;
        its wall time, and whether the deadline stopped it (its study keeps what finished)."""
        timeout = max(1.0, self.left() * share)
        t0 = time.perf_counter()
        try:
            done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
            rc, output = done.returncode, done.stdout + done.stderr
        except subprocess.TimeoutExpired as e:
            rc, output = None, (e.stdout or b"").decode(errors="replace")
        call = {
            "command": self.shown(args[2:] if args[0] == sys.executable else args),
            "wall_s": round(time.perf_counter() - t0, 1),
            "rc": rc,
            "stopped_by_deadline": rc is None,
        }
        if rc not in (0, None):  # the end of what a failed command said, for the record
            call["output_tail"] = output[-1500:]
            print(output[-1500:], file=sys.stderr)
        if keep_output:
            call["output"] = output
        return call


def load(path: Path) -> dict:
    """A results file's stages ({} when there is none yet); a one-line error when unreadable."""
    if not path.exists():
        return {}
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        sys.exit(f"error: {path}: not JSON ({e})")
    if not isinstance(results, dict) or not all(
        isinstance(e, dict) and "device" in e for e in results.values()
    ):
        sys.exit(f"error: {path}: not a campaign results file (an object of stage entries)")
    return results


def save(c: Campaign, results: dict) -> None:
    """Write the results and the README section; copy both to --copy-to."""
    c.results.parent.mkdir(parents=True, exist_ok=True)
    c.results.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    shown = with_other_cpus(c.results, results) if c.profile == "cpu" else results
    readme.update(c.readme, c.hardware, named_from_readme(c.results, c.readme), shown)
    if c.copy_to:
        c.copy_to.mkdir(parents=True, exist_ok=True)
        shutil.copy(c.results, c.copy_to / c.results.name)
        shutil.copy(c.readme, c.copy_to / "README.md")


def with_other_cpus(results_file: Path, results: dict) -> dict:
    """The CPU stages of the results files beside `results_file` (cpu-<model>.json, each entry
    names its machine), then `results`: the README's CPU section shows every one measured."""
    merged = {}
    for other in sorted(results_file.parent.glob("cpu-*.json")):
        if other.resolve() != results_file.resolve():
            try:
                merged |= {k: v for k, v in load(other).items() if k in cpu.ALL}
            except SystemExit as e:  # not a results file: said, and left out
                print(f"{e.code}; its stages are left out of the README", file=sys.stderr)
    return merged | results


def named_from_readme(path: Path, readme_file: Path) -> Path:
    """A path as the README names it: from the README's folder when it lies inside."""
    path, home = path.absolute(), readme_file.absolute().parent
    return path.relative_to(home) if path.is_relative_to(home) else path


def render(results_file: Path, readme_file: Path) -> None:
    """Rewrite the README section from a results file, e.g. one copied back from a GPU machine."""
    if not results_file.is_file():
        sys.exit(f"error: --render {results_file}: no such file")
    if not readme_file.is_file():
        sys.exit(f"error: --readme {readme_file}: no such file")
    results = load(results_file)
    if not results:
        sys.exit(f"error: --render {results_file}: no stage recorded")
    device = next(iter(results.values()))["device"]
    if any(name in cpu.ALL for name in results):
        results = with_other_cpus(results_file, results)
    readme.update(readme_file, device, named_from_readme(results_file, readme_file), results)
    print(f"README section for {device}: {readme_file}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.campaign", description=__doc__.splitlines()[0]
    )
    p.add_argument(
        "--stages",
        help=f"comma-separated, of: {', '.join(stages.ALL)} (gpu); {', '.join(cpu.ALL)} (cpu)",
    )
    p.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default="gpu",
        help="gpu: the GPU campaign; cpu: the studies that fit 2 CPU cores (default: %(default)s)",
    )
    p.add_argument("--smoke", action="store_true", help="toy scale on the CPU")
    p.add_argument(
        "--out",
        type=Path,
        help="run folders, studies and the data cache (default: outputs/campaign-<profile>, or "
        "outputs/campaign-smoke, under the current folder)",
    )
    p.add_argument(
        "--data",
        type=Path,
        default=Path("data/cifar10-jpeg"),
        help="CIFAR-10 as an ImageFolder tree, train/ and test/ (default: %(default)s)",
    )
    p.add_argument("--results", type=Path, help="the results file (default per device)")
    p.add_argument("--readme", type=Path, help="the README whose section is rewritten")
    p.add_argument("--copy-to", type=Path, help="also copy the results and README here")
    p.add_argument(
        "--render",
        type=Path,
        metavar="RESULTS",
        help="only rewrite the README section from a results file (no GPU)",
    )
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.render:
        return render(args.render, args.readme or ROOT / "README.md")
    named = args.stages.split(",") if args.stages else []
    known = PROFILES[args.profile]
    unknown = [s for s in named if s not in known]
    if unknown:
        sys.exit(
            f"error: --stages {','.join(unknown)}: no such stage of --profile {args.profile}; "
            f"stages: {', '.join(known)}"
        )
    c = Campaign(args)
    results = load(c.results)
    todo = named or [s for s in known if not results.get(s, {}).get("complete")]
    print(f"campaign on {c.hardware}: {', '.join(todo) or 'nothing left to measure'}", flush=True)
    for name in todo:
        c.deadline = time.monotonic() + c.budget_s
        with c.clock(name) as spent:
            entry = known[name](c, results.get(name, {}))
        entry |= {
            "wall_s": spent(),
            "device": c.hardware,
            "torch": torch.__version__,
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        entry.setdefault("complete", c.left() > 0)
        results[name] = entry
        save(c, results)
        line = readme.cpu_summary(name, entry, results) if c.keep else readme.summary(name, entry)
        print(
            f"{name}: {'done' if entry['complete'] else 'partial'} in {entry['wall_s']} s: {line}",
            flush=True,
        )
    print(f"results: {c.results}\nREADME section: {c.readme}")


if __name__ == "__main__":
    main()
