"""The population engine: many networks trained as one vectorized computation."""

from ..hyperparams import DEFAULTS, resolve, structure_key
from .population import Population, Structure

__all__ = ["DEFAULTS", "Population", "Structure", "resolve", "structure_key"]
