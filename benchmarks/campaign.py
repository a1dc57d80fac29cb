"""The GPU campaign: every study and the speed, measured stage by stage, resumable.

    python benchmarks/campaign.py                        # every stage not yet measured, in order
    python benchmarks/campaign.py --stages throughput    # named stages again
    python benchmarks/campaign.py --smoke                # every stage at toy scale, on the CPU
    python benchmarks/campaign.py --render benchmarks/results/h100-80gb-hbm3.json   # README only

Results go to benchmarks/results/<gpu>.json, one entry per stage, written after each stage (a
run cut short goes on where it stopped); the README section "Measured on <gpu>" is rewritten
from that file each time. Where the variable OUT is set (the device tool), both files are also
copied there. A smoke run writes under outputs/campaign-smoke/ and touches neither.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import campaign_readme
import campaign_stages
import torch

ROOT = Path(__file__).resolve().parents[1]


class Campaign:
    """Where a campaign reads and writes, its scale, and a clock for each stage's budget."""

    def __init__(self, *, smoke: bool, results: Path | None, readme: Path | None):
        self.smoke = smoke
        if smoke:
            self.device, self.slug = "cpu (smoke: toy scale, not figures)", "smoke"
        else:
            if not torch.cuda.is_available():
                sys.exit("error: no CUDA device; the campaign measures a GPU (--smoke: toy scale)")
            self.device = torch.cuda.get_device_name()
            self.slug = "-".join(self.device.lower().replace("nvidia", "").split())
        base = ROOT / "outputs" / "campaign-smoke" if smoke else ROOT
        self.results = results or base / "benchmarks" / "results" / f"{self.slug}.json"
        self.readme = readme or (base / "README.md" if smoke else ROOT / "README.md")
        if smoke and not self.readme.exists():
            self.readme.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / "README.md", self.readme)
        self.out = base / "runs" if smoke else ROOT / "outputs" / "campaign"
        # each stage is one device command of at most 9 minutes, start-up (wheels, data) included
        self.budget_s = 40 if smoke else 480
        self.deadline = 0.0

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
            "command": " ".join(args[2:] if args[0] == sys.executable else args),
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
    return json.loads(path.read_text()) if path.exists() else {}


def save(c: Campaign, results: dict) -> None:
    """Write the results and the README section; copy both to $OUT for the device tool."""
    c.results.parent.mkdir(parents=True, exist_ok=True)
    c.results.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    campaign_readme.update(
        c.readme,
        c.device,
        c.results.relative_to(ROOT) if c.results.is_relative_to(ROOT) else c.results,
        results,
    )
    if os.environ.get("OUT"):
        out = Path(os.environ["OUT"])
        shutil.copy(c.results, out / c.results.name)
        shutil.copy(c.readme, out / "README.md")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", help=f"comma-separated, of: {', '.join(campaign_stages.ALL)}")
    parser.add_argument("--smoke", action="store_true", help="toy scale on the CPU")
    parser.add_argument("--results", type=Path, help="the results file (default per device)")
    parser.add_argument("--readme", type=Path, help="the README whose section is rewritten")
    parser.add_argument(
        "--render",
        type=Path,
        metavar="RESULTS",
        help="only rewrite the README section from a results file (no GPU)",
    )
    args = parser.parse_args(argv)
    if args.render:  # e.g. after copying a device run's results file back
        results = load(args.render)
        device = next(iter(results.values()))["device"]
        campaign_readme.update(args.readme or ROOT / "README.md", device, args.render, results)
        return
    named = args.stages.split(",") if args.stages else []
    unknown = [s for s in named if s not in campaign_stages.ALL]
    if unknown:
        sys.exit(
            f"error: --stages {','.join(unknown)}: no such stage; stages: "
            f"{', '.join(campaign_stages.ALL)}"
        )
    c = Campaign(smoke=args.smoke, results=args.results, readme=args.readme)
    results = load(c.results)
    todo = named or [s for s in campaign_stages.ALL if not results.get(s, {}).get("complete")]
    print(f"campaign on {c.device}: {', '.join(todo) or 'nothing left to measure'}", flush=True)
    for name in todo:
        c.deadline = time.monotonic() + c.budget_s
        t0 = time.perf_counter()
        entry = campaign_stages.ALL[name](c, results.get(name, {}))
        entry |= {
            "wall_s": round(time.perf_counter() - t0, 1),
            "device": c.device,
            "torch": torch.__version__,
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        entry.setdefault("complete", c.left() > 0)
        results[name] = entry
        save(c, results)
        print(
            f"{name}: {'done' if entry['complete'] else 'partial'} in {entry['wall_s']} s: "
            f"{campaign_readme.summary(name, entry)}",
            flush=True,
        )
    print(f"results: {c.results}\nREADME section: {c.readme}")


if __name__ == "__main__":
    main()
