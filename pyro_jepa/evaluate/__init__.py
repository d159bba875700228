"""Evaluation of learned representations: downstream predictors, selective scoring, collapse diagnostics."""

from pyro_jepa.evaluate.diagnostics import (
    collapse_report,
    effective_rank,
    linear_probe_accuracy,
    mean_cosine_similarity,
    per_dimension_std,
)
from pyro_jepa.evaluate.downstream import (
    PREDICTORS,
    DownstreamConfig,
    NetworkPredictor,
    as_feature_matrix,
    evaluate_embeddings,
    train_mlp,
    train_network,
    train_xgboost,
)
from pyro_jepa.evaluate.metrics import classification_metrics, roc_auc, spearman, standardize
from pyro_jepa.evaluate.ambiguity import ambiguity_scores, feature_predictability, supervised_ceiling
from pyro_jepa.evaluate.selective import (
    CombinedAbstention,
    RiskControlledAbstention,
    abstention_study,
    aurc,
    confidence_scores,
    error_auroc,
    most_uncertain_first,
    random_abstention,
    risk_coverage,
    selective_metrics,
    selective_report,
)
from pyro_jepa.evaluate.networks import NETWORKS

__all__ = [
    "PREDICTORS",
    "DownstreamConfig",
    "NetworkPredictor",
    "as_feature_matrix",
    "ambiguity_scores",
    "feature_predictability",
    "supervised_ceiling",
    "CombinedAbstention",
    "RiskControlledAbstention",
    "abstention_study",
    "confidence_scores",
    "error_auroc",
    "random_abstention",
    "selective_report",
    "aurc",
    "classification_metrics",
    "most_uncertain_first",
    "risk_coverage",
    "roc_auc",
    "selective_metrics",
    "spearman",
    "standardize",
    "collapse_report",
    "effective_rank",
    "evaluate_embeddings",
    "linear_probe_accuracy",
    "mean_cosine_similarity",
    "per_dimension_std",
    "train_mlp",
    "train_network",
    "NETWORKS",
    "train_xgboost",
]
