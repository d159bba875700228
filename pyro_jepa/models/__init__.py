"""The Pyro programs (Var-JEPA, Var-T-JEPA) and the deterministic baselines (T-JEPA)."""

from .base import SSLMethod
from .t_jepa import TJEPA
from .scores import POSTERIOR_AGGREGATES, ROW_SCORES, aggregate_std
from .tabular import MaskedPredictor, MaskedTabular, TabularJEPAConfig, TokenEncoder
from .var_jepa import TERMS, LossWeights, MLPVarJEPA, MLPVarJEPAConfig, VarJEPA, elbo_terms, standard_normal, weighted_loss
from .var_t_jepa import VarTJEPA
from .image_baselines import SimSiam, SimSiamConfig, VICReg, VICRegConfig
from .image_ssl import ImageSSL, ImageSSLConfig
from .vje import VJE, VJEConfig

__all__ = [
    "SSLMethod",
    "TJEPA",
    "MaskedPredictor",
    "MaskedTabular",
    "POSTERIOR_AGGREGATES",
    "ROW_SCORES",
    "aggregate_std",
    "TabularJEPAConfig",
    "TokenEncoder",
    "TERMS",
    "LossWeights",
    "MLPVarJEPA",
    "MLPVarJEPAConfig",
    "VarJEPA",
    "elbo_terms",
    "standard_normal",
    "weighted_loss",
    "VarTJEPA",
    "ImageSSL",
    "ImageSSLConfig",
    "SimSiam",
    "SimSiamConfig",
    "VICReg",
    "VICRegConfig",
    "VJE",
    "VJEConfig",
]
