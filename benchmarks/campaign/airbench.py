"""The campaign's stretch stage: PyPI's airbench (0.1.8) trained on our CIFAR-10 tensors, beside
our `fast94` recipe through the runner; time to 94% test for each."""

import os
import time

import torch

from cifar_sweep.config_dir import CONF

SMOKE_FAST94 = [
    "model.stem=8",
    "model.widths=[8,16,16]",
    "trainer.max_epochs=1",
    "trainer.compile=false",
    "dataset.batch_size=64",
]


def ours(c, single) -> tuple[dict, dict]:
    call, m = single(c, "fast94", "fast94", *(SMOKE_FAST94 if c.smoke else []), share=0.5)
    train_s = m.get("time/epoch_s", 0) * m.get("epochs", 0)  # the last epoch's time, all epochs
    acc = m.get("test/acc")
    return call, {
        "test_acc": acc,
        "epochs": m.get("epochs"),
        "train_s": train_s,
        "total_s": m.get("time/total_s"),
        "time_to_94_s": train_s if acc is not None and acc >= 0.94 else None,
    }


def theirs(c) -> dict:
    """airbench94 on our tensors: its CifarLoader reads cifar10/{train,test}.pt from the cwd."""
    if c.smoke or not torch.cuda.is_available():
        return {"note": "needs a CUDA GPU"}
    try:
        import airbench
    except ImportError:
        return {"note": "airbench is not installed: pip install airbench==0.1.8"}
    from omegaconf import OmegaConf

    from cifar_sweep.data import sources

    cfg = OmegaConf.load(CONF / "dataset" / "cifar10.yaml")
    cache = str(c.out / "cache")  # the cache the other stages built (the same key)
    cfg.merge_with(
        {"source": "folder", "root": str(c.data), "image_size": None, "cache_dir": cache}
    )
    splits = sources.load(cfg)
    work = c.out / "airbench" / "cifar10"
    work.mkdir(parents=True, exist_ok=True)
    for name, x, y in (
        ("train", splits.train_x, splits.train_y),
        ("test", splits.test_x, splits.test_y),
    ):
        torch.save(
            {"images": x.permute(0, 2, 3, 1).contiguous(), "labels": y, "classes": splits.classes},
            work / f"{name}.pt",
        )
    here = os.getcwd()
    os.chdir(work.parent)
    try:
        airbench.warmup94(verbose=False)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        model = airbench.train94(verbose=False)
        torch.cuda.synchronize()
        train_s = time.perf_counter() - t0
        test = airbench.CifarLoader("cifar10", train=False, batch_size=2000)
        acc = airbench.evaluate(model, test, tta_level=2)
    finally:
        os.chdir(here)
    return {"test_acc": acc, "train_s": train_s, "time_to_94_s": train_s if acc >= 0.94 else None}


def _line(r: dict) -> str:
    if r.get("test_acc") is None:
        return r.get("note", "no result")
    return f"{100 * r['test_acc']:.2f}% in {r['train_s']:.1f} s"


def run(c, single) -> dict:
    """`single` runs one experiment as the other stages do (stages.single)."""
    call, mine = ours(c, single)
    other = theirs(c)
    return {
        "figures": {
            "fast94": mine,
            "airbench94": other,
            "summary": f"fast94 {_line(mine)}; airbench94 {_line(other)}",
        },
        "commands": [call],
    }
