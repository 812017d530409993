"""Held-out quality of a correctness reward model: accuracy at 0.5, ROC-AUC, expected calibration error, the score
gap between correct and incorrect answers, and a reliability diagram."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.calibration import calibration_curve
from sklearn.metrics import roc_auc_score

from vlm.io import atomic_write_bytes


def expected_calibration_error(p: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """Σ_bins |bin| / n · |mean(y) - mean(p)| over equal-width probability bins. Written out because scikit-learn
    (1.9.1) has the reliability curve (`calibration_curve`) but no ECE; use sklearn's if it gains one."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            error += inside.mean() * abs(y[inside].mean() - p[inside].mean())
    return float(error)


def binary_metrics(logits: np.ndarray, y: np.ndarray) -> dict:
    """Metrics of P(correct) = sigmoid(logit) against 0/1 labels."""
    p = 1.0 / (1.0 + np.exp(-logits))
    both = len(set(y.tolist())) == 2
    return {
        "examples": int(len(y)),
        "correct_share": float(y.mean()) if len(y) else None,
        "accuracy": float(((p >= 0.5) == (y == 1)).mean()) if len(y) else None,
        "majority_class_accuracy": float(max(y.mean(), 1 - y.mean())) if len(y) else None,
        "roc_auc": float(roc_auc_score(y, logits)) if both else None,
        "ece": expected_calibration_error(p, y) if len(y) else None,
        "score_gap": float(logits[y == 1].mean() - logits[y == 0].mean()) if both else None,
    }


def reliability_diagram(logits: np.ndarray, y: np.ndarray, path: str | Path, title: str) -> Path:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = 1.0 / (1.0 + np.exp(-logits))
    observed, predicted = calibration_curve(y, p, n_bins=10, strategy="uniform")
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    ax.plot(predicted, observed, marker="o", label="reward model")
    ax.set_xlabel("predicted P(correct)")
    ax.set_ylabel("share labelled correct")
    ax.set_title(title, fontsize=9)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8)
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())
