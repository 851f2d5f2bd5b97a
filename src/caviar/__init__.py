"""caviar: train and tune populations of regularized neural networks on tabular data.

The lecture notes it follows contrast babysitting one model (the panda) with training many at
once (the caviar); caviar trains a whole population of networks, each with its own
hyperparameters, as one vectorized computation.

The public names load on first use (PEP 562), so ``import caviar`` and ``caviar --help`` do not
pay for importing torch and Optuna.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "Population": "caviar.engine",
    "CaviarClassifier": "caviar.estimators",
    "CaviarRegressor": "caviar.estimators",
    "export_onnx": "caviar.export",
    "permutation_importance": "caviar.explain",
    "load_model": "caviar.model",
    "save_model": "caviar.io",
    "CaviarModel": "caviar.model",
    "fit_model": "caviar.model",
    "tune": "caviar.search.tune",
}

__all__ = ["CaviarClassifier", "CaviarModel", "CaviarRegressor", "Population", "__version__",
           "export_onnx", "fit_model", "load_model", "permutation_importance", "save_model",
           "tune"]

if TYPE_CHECKING:
    from caviar.engine import Population
    from caviar.estimators import CaviarClassifier, CaviarRegressor
    from caviar.explain import permutation_importance
    from caviar.export import export_onnx
    from caviar.io import save_model
    from caviar.model import CaviarModel, fit_model, load_model
    from caviar.search.tune import tune


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'caviar' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return __all__
