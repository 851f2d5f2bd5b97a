"""The population engine: many networks trained as one vectorized computation.

``network`` holds the math of one forward and backward pass over P members; ``population``
holds the members and drives training. The hyperparameter vocabulary is ``caviar.hyperparams``.
"""

from .network import Structure
from .population import Population, resolve_device

__all__ = ["Population", "Structure", "resolve_device"]
