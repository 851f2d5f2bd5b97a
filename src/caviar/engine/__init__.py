"""The population engine: many networks trained as one vectorized computation.

``network`` holds the math of one forward and backward pass over P members; ``population``
holds the members and drives training. The hyperparameter vocabulary is ``caviar.hyperparams``.
"""

from .network import Categorical, InputLayout, Scaled, Structure
from .population import Population, resolve_device

__all__ = ["Categorical", "InputLayout", "Population", "Scaled", "Structure", "resolve_device"]
