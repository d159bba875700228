"""Frozen-feature probes for image SSL: weighted k-NN, linear probe, and the feature-space anomaly /
OOD baselines (k-NN distance, Mahalanobis distance) with their AUROC."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.covariance import LedoitWolf
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from .downstream import as_feature_matrix

CHUNK = 1024


def _unit(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return F.normalize(torch.as_tensor(as_feature_matrix(x), dtype=torch.float32), dim=1)


def knn_accuracy(
    x_train: np.ndarray | torch.Tensor,
    y_train: np.ndarray | torch.Tensor,
    x_test: np.ndarray | torch.Tensor,
    y_test: np.ndarray | torch.Tensor,
    k: int = 200,
    temperature: float = 0.1,
) -> float:
    """Accuracy of the cosine k-NN classifier with votes weighted by ``exp(sim / T)`` (Wu et al., 2018;
    the protocol of the SimSiam/VICReg CIFAR code bases)."""
    train, test = _unit(x_train), _unit(x_test)
    y_train = torch.as_tensor(np.asarray(y_train), dtype=torch.long)
    y_test = torch.as_tensor(np.asarray(y_test), dtype=torch.long)
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    k = min(k, len(train))
    correct = 0
    for start in range(0, len(test), CHUNK):
        sim, idx = (test[start : start + CHUNK] @ train.T).topk(k, dim=1)
        votes = torch.zeros(len(sim), n_classes).scatter_add_(1, y_train[idx], (sim / temperature).exp())
        correct += int((votes.argmax(1) == y_test[start : start + CHUNK]).sum())
    return correct / len(test)


def linear_probe(
    x_train: np.ndarray | torch.Tensor,
    y_train: np.ndarray,
    x_test: np.ndarray | torch.Tensor,
    y_test: np.ndarray,
    c: float = 1.0,
    max_iter: int = 1000,
) -> float:
    """Test accuracy of multinomial logistic regression on train-standardized frozen features."""
    scaler = StandardScaler().fit(as_feature_matrix(x_train))
    clf = LogisticRegression(C=c, max_iter=max_iter).fit(scaler.transform(as_feature_matrix(x_train)), np.asarray(y_train))
    return float((clf.predict(scaler.transform(as_feature_matrix(x_test))) == np.asarray(y_test)).mean())


def knn_distance_score(x_train: np.ndarray | torch.Tensor, x_test: np.ndarray | torch.Tensor, k: int = 5) -> np.ndarray:
    """Anomaly score ``(N_test,)``: mean cosine distance to the ``k`` nearest (normal) training features."""
    train, test = _unit(x_train), _unit(x_test)
    k = min(k, len(train))
    scores = [(1 - (test[s : s + CHUNK] @ train.T).topk(k, dim=1).values).mean(1) for s in range(0, len(test), CHUNK)]
    return torch.cat(scores).numpy()


def mahalanobis_score(x_train: np.ndarray | torch.Tensor, x_test: np.ndarray | torch.Tensor) -> np.ndarray:
    """Anomaly score ``(N_test,)``: squared Mahalanobis distance of the L2-normalized test features to a
    Gaussian fitted on the L2-normalized (normal) training features, with Ledoit-Wolf shrinkage
    (the one-cluster form of SSD, Sehwag et al., ICLR 2021)."""
    train, test = _unit(x_train).double().numpy(), _unit(x_test).double().numpy()
    fit = LedoitWolf().fit(train)
    return fit.mahalanobis(test)


def anomaly_auroc(scores: np.ndarray | torch.Tensor, anomalous: np.ndarray | torch.Tensor) -> float:
    """AUROC of ``scores`` (higher = more anomalous) for the boolean labels ``anomalous``."""
    return float(roc_auc_score(np.asarray(anomalous, dtype=bool), np.asarray(scores, dtype=np.float64)))


def one_class_auroc(scores: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor, normal_class: int) -> float:
    """AUROC of ``scores`` (higher = more anomalous) for separating other classes from ``normal_class``."""
    return anomaly_auroc(scores, np.asarray(labels) != normal_class)
