"""Our sweeper against its peers on one problem: each arm's studies, one after another.

    python -m benchmarks.peers --data data/cifar10-jpeg     # every arm and seed not yet recorded
    python -m benchmarks.peers --smoke --out /tmp/peers     # the same path at toy size (minutes)
    python -m benchmarks.peers --arms ray-tune --seeds 1    # one arm's first seed
    python -m benchmarks.peers --render benchmarks/results/peers-intel-xeon.json   # README only

Each (arm, seed) is recorded in the results file as it ends (benchmarks/results/peers-<cpu>.json,
or under --out with --smoke), with the plot and the README section rewritten from it; a rerun
skips what is recorded, so a benchmark stopped at any moment goes on where it stopped (a study
cut short starts again from nothing). Run folders, studies, the JPEG subset and the data cache go
under --out. Measure with nothing else running on the machine.
"""

import argparse
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import machine
from benchmarks.peers import plot, problem, readme, results
from benchmarks.peers.arms import ARMS
from benchmarks.peers.problem import ROOT, Problem
from benchmarks.peers.process import ArmFailed


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.peers", description=__doc__.split("\n")[0]
    )
    p.add_argument("--smoke", action="store_true", help="toy size on a generated set")
    p.add_argument("--seeds", type=int, help="studies per arm (default: problem.yaml's)")
    p.add_argument("--arms", help=f"comma-separated, of: {', '.join(ARMS)} (default: all)")
    p.add_argument(
        "--out",
        type=Path,
        help="run folders, studies, data (default: outputs/peers, or outputs/peers-smoke)",
    )
    p.add_argument(
        "--data",
        type=Path,
        default=Path("data/cifar10-jpeg"),
        help="CIFAR-10 as an ImageFolder tree, train/ and test/ (default: %(default)s)",
    )
    p.add_argument("--results", type=Path, help="the results file (default per CPU)")
    p.add_argument("--readme", type=Path, help="the README whose section is rewritten")
    p.add_argument("--render", type=Path, metavar="RESULTS", help="only rewrite the README section")
    return p


def warm(p: Problem) -> None:
    """Decode the data into the cache once, so no arm pays for it."""
    from hydra import compose, initialize_config_dir

    from cifar_sweep.config_dir import CONF
    from cifar_sweep.data import sources

    with initialize_config_dir(str(CONF)):
        cfg = compose("config", overrides=[f"+experiment={p.experiment}", *p.trial(0)])
    sources.load(cfg.dataset)


def publish(found: dict, path: Path, readme_file: Path) -> None:
    """The results file, then the plot and the README section drawn from it."""
    results.save(path, found)
    picture = path.with_suffix(".png")
    plot.draw(found, picture, found.get("problem", ""))
    home = readme_file.absolute().parent
    absolute = [f.absolute() for f in (path, picture)]
    shown = [f.relative_to(home) if f.is_relative_to(home) else f for f in absolute]
    readme.update(readme_file, found, *shown)


def where(args: argparse.Namespace) -> tuple[Path, Path, Path]:
    """The run folder, the results file and the README: a smoke run's all under --out."""
    out = (args.out or Path("outputs", "peers-smoke" if args.smoke else "peers")).absolute()
    home = out if args.smoke else ROOT  # a smoke run writes nothing into the checkout
    name = "peers-smoke.json" if args.smoke else f"peers-{machine.cpu_slug()}.json"
    path = args.results or (out if args.smoke else ROOT / "benchmarks" / "results") / name
    readme_file = args.readme or home / "README.md"
    if not readme_file.exists():
        readme_file.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / "README.md", readme_file)
    return out, path, readme_file


def study(p: Problem, arm: str, seed: int, out: Path) -> dict | None:
    """One arm's study in a fresh folder (a study cut short starts again); None if it failed."""
    folder = out / arm / f"seed{seed}"
    shutil.rmtree(folder, ignore_errors=True)
    started = time.perf_counter()
    try:
        return ARMS[arm].run(p, seed, folder)
    except ArmFailed as e:
        print(f"{arm} seed {seed}: failed after {time.perf_counter() - started:.0f} s: {e}")
        return None


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.render:
        found = results.load(args.render)
        return publish(found, args.render, args.readme or ROOT / "README.md")
    named = args.arms.split(",") if args.arms else list(ARMS)
    if unknown := [a for a in named if a not in ARMS]:
        sys.exit(f"error: --arms {','.join(unknown)}: no such arm; arms: {', '.join(ARMS)}")
    out, path, readme_file = where(args)
    p = problem.load(smoke=args.smoke, seeds=args.seeds, data=args.data.absolute(), out=out)
    found = results.load(path) | {"machine": machine.cpu_description(), "problem": p.describe()}
    # seed by seed, every arm: a benchmark stopped early still compares the arms on whole seeds
    todo = [(a, s) for s in p.seeds for a in named if not results.done(found, a, s)]
    print(f"peers on {found['machine']}: {len(todo)} studies to run; {p.describe()}", flush=True)
    if todo:
        warm(p)
    skipped, failed = set(), []
    for arm, seed in todo:
        if arm in skipped:
            continue
        record = study(p, arm, seed, out)
        if record is None:
            failed.append(f"{arm} seed {seed}")
            continue
        if "skipped" in record:
            skipped.add(arm)
            results.skip(found, arm, record["skipped"])
            print(f"{arm}: skipped: {record['skipped']}", flush=True)
        else:
            results.add(found, arm, record)
            found["date"] = datetime.now(UTC).isoformat(timespec="seconds")
            print(
                f"{arm} seed {seed}: {record['wall_s']:.0f} s, best {record['best_val']:.4f}, "
                f"{record['epochs']} epochs, {record['pruned']} pruned",
                flush=True,
            )
        publish(found, path, readme_file)
    print(f"results: {path}\nREADME section: {readme_file}")
    if failed:
        sys.exit(f"error: {', '.join(failed)} failed (their output.txt under {out}); run again")


if __name__ == "__main__":
    main()
