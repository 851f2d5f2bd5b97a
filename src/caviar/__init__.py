"""caviar: train and tune populations of regularized neural networks on tabular data.

The lecture notes it follows contrast babysitting one model (the panda) with training many at
once (the caviar); caviar trains a whole population of networks, each with its own
hyperparameters, as one vectorized computation.
"""

__version__ = "0.1.0"

from .engine import Population  # noqa: E402
from .estimators import CaviarClassifier, CaviarRegressor  # noqa: E402
from .io import load_model, save_model  # noqa: E402
from .model import CaviarModel, fit_model  # noqa: E402

__all__ = ["CaviarClassifier", "CaviarModel", "CaviarRegressor", "Population", "__version__",
           "fit_model", "load_model", "save_model"]
