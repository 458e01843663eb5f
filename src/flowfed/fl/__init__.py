"""Federated-learning math: aggregation strategies, secure aggregation, differential privacy.

Framework-free (numpy; ``cryptography`` for secure aggregation, ``dp-accounting`` for the
privacy accountant). See docs/federated.md.

>>> import numpy as np
>>> from flowfed.fl import Update, make_strategy
>>> ups = [Update("a", [np.array([1.0])], 3), Update("b", [np.array([5.0])], 1)]
>>> make_strategy("fedavg").aggregate(ups)
[array([2.])]
"""

from flowfed.fl.privacy import (
    PrivacyAccountant,
    add_gaussian_noise,
    clip_update,
    global_norm,
    private_mean_update,
    secure_rng,
)
from flowfed.fl.robust import ClippedMean, Krum, MultiKrum, QFedAvg
from flowfed.fl.secagg import FixedPoint, MaskedUpdate, SecAggClient, SecAggError, SecAggServer
from flowfed.fl.strategies import (
    STRATEGIES,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedProx,
    FedYogi,
    Median,
    Strategy,
    TrimmedMean,
    fedavg,
    fedprox_term,
    make_strategy,
    median,
    trimmed_mean,
)
from flowfed.fl.types import AggregationError, Update, Weights

__all__ = [
    "STRATEGIES",
    "AggregationError",
    "ClippedMean",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedProx",
    "FedYogi",
    "FixedPoint",
    "Krum",
    "MaskedUpdate",
    "Median",
    "MultiKrum",
    "PrivacyAccountant",
    "QFedAvg",
    "SecAggClient",
    "SecAggError",
    "SecAggServer",
    "Strategy",
    "TrimmedMean",
    "Update",
    "Weights",
    "add_gaussian_noise",
    "clip_update",
    "fedavg",
    "fedprox_term",
    "global_norm",
    "make_strategy",
    "median",
    "private_mean_update",
    "secure_rng",
    "trimmed_mean",
]
