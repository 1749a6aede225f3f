"""Metrics in their own range: accuracy and expected calibration error (ECE) for classification, NME for landmarks."""

from __future__ import annotations

import numpy as np


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE (Guo et al. 2017): ``Σ_b n_b/N · |acc_b − conf_b|`` over ``bins`` equal-width confidence bins."""
    conf = probs.max(-1)
    correct = (probs.argmax(-1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - conf[mask].mean())
    return float(ece)


def classification_metrics(logits: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy, ECE (15 bins) and mean negative log-likelihood of class ``logits`` against integer ``labels``."""
    labels = labels.astype(np.int64).reshape(-1)
    probs = _softmax(logits.astype(np.float64))
    nll = -np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)).mean()
    return {"accuracy": float((probs.argmax(-1) == labels).mean()),
            "ece": expected_calibration_error(probs, labels), "nll": float(nll)}


def landmark_metrics(pred: np.ndarray, target: np.ndarray) -> dict:
    """NME: mean point-to-point error divided by the inter-ocular distance (points 0 and 1 of the ground truth)."""
    p = pred.reshape(len(pred), -1, 2).astype(np.float64)
    t = target.reshape(len(target), -1, 2).astype(np.float64)
    norm = np.linalg.norm(t[:, 0] - t[:, 1], axis=-1).clip(1e-6)
    err = np.linalg.norm(p - t, axis=-1).mean(-1)
    return {"nme": float((err / norm).mean()), "mse": float(((p - t) ** 2).mean())}


__all__ = ["expected_calibration_error", "classification_metrics", "landmark_metrics"]
