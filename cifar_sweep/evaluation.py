"""The evaluation report of a final run: per-class metrics, AUC, confusion matrix, gaps, cost."""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torchmetrics.classification import (  # noqa: E402
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)


def predict(trainer, module, batches, *, ckpt_path) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax probabilities and labels over every batch, by `trainer.predict` with the weights
    of `ckpt_path` (None: as they are): the run's precision and (compiled) graph, so no second
    compile and no fp32 numbers beside bf16 ones."""
    out = trainer.predict(module, dataloaders=batches, ckpt_path=ckpt_path)
    probs, labels = torch.cat([p for p, _ in out]), torch.cat([y for _, y in out])
    if trainer.world_size == 1:
        return probs, labels
    # on N devices each rank predicted its shard; shards differ by an image, which all_gather
    # of tensors cannot take
    shards = [None] * trainer.world_size
    torch.distributed.all_gather_object(shards, (probs, labels))
    return torch.cat([p for p, _ in shards]), torch.cat([y for _, y in shards])


def report(probs: torch.Tensor, labels: torch.Tensor, classes: list[str], metrics: dict) -> dict:
    """Accuracy, per-class precision/recall/F1, macro one-vs-rest AUC, gaps and cost figures."""
    k = len(classes)
    per_class = {
        name: metric(k, average=None)(probs, labels).tolist()
        for name, metric in (
            ("precision", MulticlassPrecision),
            ("recall", MulticlassRecall),
            ("f1", MulticlassF1Score),
        )
    }
    out = {
        "accuracy": MulticlassAccuracy(k, average="micro")(probs, labels).item(),
        "macro_f1": sum(per_class["f1"]) / k,
        "macro_auc_ovr": MulticlassAUROC(k, average="macro")(probs, labels).item(),
        "per_class": {c: {m: v[i] for m, v in per_class.items()} for i, c in enumerate(classes)},
        "confusion_matrix": MulticlassConfusionMatrix(k)(probs, labels).tolist(),
    }
    val = metrics.get("val/acc_best")
    if val is not None:
        out["train_val_gap"] = metrics["train/acc"] - val
        out["val_test_gap"] = val - out["accuracy"]
    for key in (
        "time/epoch_s",
        "time/total_s",
        "epochs",
        "model/params",
        "model/flops",
        "gpu/peak_mem_gb",
    ):
        if key in metrics:
            out[key] = metrics[key]
    return out


def write(result: dict, classes: list[str], out_dir: Path) -> None:
    """evaluation.json, classification_report.md and confusion_matrix.png in out_dir."""
    (out_dir / "evaluation.json").write_text(json.dumps(result, indent=2))
    lines = ["| class | precision | recall | F1 |", "|---|---|---|---|"]
    for c, m in result["per_class"].items():
        lines.append(f"| {c} | {m['precision']:.4f} | {m['recall']:.4f} | {m['f1']:.4f} |")
    lines.append(
        f"\naccuracy {result['accuracy']:.4f}, macro F1 {result['macro_f1']:.4f}, "
        f"macro one-vs-rest AUC {result['macro_auc_ovr']:.4f}"
    )
    (out_dir / "classification_report.md").write_text("\n".join(lines) + "\n")
    size = max(4, len(classes) * 0.45)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(result["confusion_matrix"], cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(image)
    fig.savefig(out_dir / "confusion_matrix.png", dpi=120, bbox_inches="tight")
    plt.close(fig)
