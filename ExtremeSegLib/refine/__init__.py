"""Refiners used between training rounds: the dense CRF and Monte Carlo dropout uncertainty."""

from .crf import dense_crf
from .uncertainty import LogitSamples, mc_dropout_relabel, welch_t_test

__all__ = ["LogitSamples", "dense_crf", "mc_dropout_relabel", "welch_t_test"]
