"""Pseudo-label makers: weak annotations -> dense soft labels with a trust weight."""

from .label import PseudoLabel

__all__ = ["PseudoLabel"]
