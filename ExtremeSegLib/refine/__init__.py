"""Refiners used between training rounds: the random walker, the dense CRF and Monte Carlo dropout uncertainty."""

from .crf import dense_crf
from .random_walker import random_walker_regularisation
from .uncertainty import LogitSamples, mc_dropout_relabel, welch_t_test

__all__ = ["LogitSamples", "dense_crf", "mc_dropout_relabel", "random_walker_regularisation", "welch_t_test"]
