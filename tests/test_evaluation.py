"""The evaluation report on hand-made predictions: the confusion matrix's rows are the true
classes and its columns the predicted ones; per-class figures, accuracy and gaps are exact."""

import json
from pathlib import Path

import pytest
import torch

from cifar_sweep import evaluation

CLASSES = ["cat", "dog", "owl"]
# (true, predicted) counts, deliberately not symmetric: 1 cat taken for a dog but no dog for a
# cat, 2 owls for cats but no cat for an owl, 1 dog for an owl but no owl for a dog
COUNTS = [[3, 1, 0], [0, 2, 1], [2, 0, 4]]


def predictions() -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax-like probabilities (0.8 on the predicted class) and the true labels."""
    pairs = [(t, p) for t, row in enumerate(COUNTS) for p, n in enumerate(row) for _ in range(n)]
    labels = torch.tensor([t for t, _ in pairs])
    probs = torch.full((len(pairs), 3), 0.1)
    probs[torch.arange(len(pairs)), torch.tensor([p for _, p in pairs])] = 0.8
    return probs, labels


def test_confusion_matrix_counts_each_true_class_in_its_row_and_each_prediction_in_its_column():
    probs, labels = predictions()
    report = evaluation.report(probs, labels, CLASSES, {})
    assert report["confusion_matrix"] == COUNTS  # cm[true][pred]
    assert report["confusion_matrix"][2][0] == 2  # two owls predicted as cats


def test_per_class_recall_precision_and_accuracy_are_the_hand_counted_ones():
    probs, labels = predictions()
    report = evaluation.report(probs, labels, CLASSES, {"val/acc_best": 0.8, "train/acc": 0.9})
    recall = {"cat": 3 / 4, "dog": 2 / 3, "owl": 4 / 6}  # of each true class, the share found
    precision = {"cat": 3 / 5, "dog": 2 / 3, "owl": 4 / 5}  # of each prediction, the share right
    for c in CLASSES:
        figures = report["per_class"][c]
        assert figures["recall"] == pytest.approx(recall[c])
        assert figures["precision"] == pytest.approx(precision[c])
        f1 = 2 * precision[c] * recall[c] / (precision[c] + recall[c])
        assert figures["f1"] == pytest.approx(f1)
    assert report["accuracy"] == pytest.approx(9 / 13)
    assert report["train_val_gap"] == pytest.approx(0.1)
    assert report["val_test_gap"] == pytest.approx(0.8 - 9 / 13)


def test_written_report_keeps_the_matrix_and_names_each_class_with_its_figures(tmp_path: Path):
    probs, labels = predictions()
    evaluation.write(evaluation.report(probs, labels, CLASSES, {}), CLASSES, tmp_path)
    assert json.loads((tmp_path / "evaluation.json").read_text())["confusion_matrix"] == COUNTS
    table = (tmp_path / "classification_report.md").read_text()
    assert "| owl | 0.8000 | 0.6667 | 0.7273 |" in table  # precision, recall, F1
    assert (tmp_path / "confusion_matrix.png").stat().st_size > 1000
