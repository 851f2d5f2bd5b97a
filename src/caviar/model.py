"""A fitted model: the table preprocessor plus trained networks, from table to predictions.

A model holds one network (``caviar train``, the estimators) or several (``caviar tune``
keeps the networks with the best validation scores): their predictions are averaged,
class probabilities for classifiers and values for regression.

Example:
    >>> from caviar.datasets import load_dataset
    >>> from caviar.model import fit_model
    >>> df = load_dataset("default")
    >>> model = fit_model(df, "default", {"epochs": 3, "hidden_layer_sizes": [16]})
    >>> model.predict_frame(df.head(2)).columns.tolist()
    ['prediction', 'proba_No', 'proba_Yes']
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from . import io
from .data import PreparedTable, TablePreprocessor, as_tensors, prepare, read_table, row_weights
from .engine import Population
from .metrics import Metric, ValidationScorer
from .training import train_network


class CaviarModel:
    """Preprocessing and one or more networks, fitted together; saved as a directory by
    ``save``. ``networks[0]`` is the best (``network``); predictions average them all."""

    def __init__(self, preprocessor: TablePreprocessor,
                 network: Population | Sequence[Population],
                 info: Mapping[str, Any] | None = None):
        networks = [network] if isinstance(network, Population) else list(network)
        if not networks:
            raise ValueError("a CaviarModel needs at least one network")
        if any(n.size != 1 for n in networks):
            raise ValueError("each network of a CaviarModel is one member: use "
                             "Population.export_member")
        if len({(n.structure.task, n.structure.n_inputs, n.n_classes) for n in networks}) > 1:
            raise ValueError("the networks of a CaviarModel must share the task, inputs "
                             "and classes")
        self.preprocessor = preprocessor
        self.networks = networks
        self.info = dict(info or {})

    @property
    def network(self) -> Population:
        """The first (best) network."""
        return self.networks[0]

    @property
    def task(self) -> str:
        return self.network.structure.task

    @property
    def target(self) -> str:
        return self.preprocessor.target

    @property
    def classes(self) -> list | None:
        return None if self.task == "regression" else list(self.preprocessor.classes_)

    @property
    def hyperparameters(self) -> dict[str, Any]:
        return dict(self.network.hyperparameters[0])

    def _outputs(self, data: pd.DataFrame | str | Path, warn_unseen: bool = True) -> np.ndarray:
        """``warn_unseen``: warn of categories unseen in training (predicting does; scoring
        held-out rows, which a search does on its own test split, does not)."""
        return self.outputs(self.preprocessor.transform(read_table(data),
                                                        warn_unseen=warn_unseen))

    def outputs(self, X: np.ndarray) -> np.ndarray:
        """The averaged outputs for rows the preprocessor has made already (its ``transform``):
        class probabilities, or standardized values (``preprocessor.predicted_values`` gives
        the predictions in the target's units)."""
        # the mean of the networks' probabilities (or standardized values)
        return self.network_outputs(X).mean(0)

    def network_outputs(self, X: np.ndarray) -> np.ndarray:
        """Each network's outputs ``(networks, rows, outputs)`` for rows the preprocessor has
        made already: ``[0]`` is the best network's, their mean :meth:`outputs`."""
        Xt, _ = as_tensors(X)  # on the CPU: each network moves it to its own device
        with torch.no_grad():
            return torch.stack([n.predict(Xt)[0].cpu() for n in self.networks]).numpy()

    def predict_proba(self, data: pd.DataFrame | str | Path) -> np.ndarray:
        """Class probabilities ``(rows, classes)``, columns in the order of ``classes``."""
        if self.task == "regression":
            raise ValueError("predict_proba is for classifiers; this model is a regressor")
        return self._outputs(data)

    def predict(self, data: pd.DataFrame | str | Path) -> np.ndarray:
        """Labels (the user's own) for classifiers, values in the target's units otherwise."""
        out = self._outputs(data)
        if self.task == "regression":
            return self.preprocessor.predicted_values(out)
        return self.preprocessor.decode_target(out.argmax(axis=1))

    def predict_frame(self, data: pd.DataFrame | str | Path) -> pd.DataFrame:
        """One row per input row, in input order: ``prediction`` and, for classifiers, one
        ``proba_<label>`` column per class."""
        out = self._outputs(data)
        if self.task == "regression":
            return pd.DataFrame({"prediction": self.preprocessor.predicted_values(out)})
        frame = pd.DataFrame({"prediction": self.preprocessor.decode_target(out.argmax(axis=1))})
        for j, label in enumerate(self.classes):
            frame[f"proba_{label}"] = out[:, j]
        return frame

    def scores(self, data: pd.DataFrame | str | Path, weight: str | None = None,
               outputs: np.ndarray | None = None) -> dict[str, float]:
        """Held-out scores on a table that has the target column: accuracy and log_loss for
        classifiers, rmse, mae and r2 (in the target's units) for regression. ``weight``: a
        column of ``data`` holding row weights; the scores are then weighted means over the
        rows, as a search weights its validation score (``--weight``). ``outputs``: this
        model's outputs for ``data``'s rows, when they are at hand (all of them have a
        target)."""
        df = read_table(data)
        df = df[df[self.target].notna()]
        weights = row_weights(df, weight).numpy() if weight else None
        if outputs is None:
            known = weight in self.preprocessor.roles_.features  # a feature: the model reads it
            inputs = df.drop(columns=weight) if weight and not known else df
            outputs = self._outputs(inputs, warn_unseen=False)
        return self._scores(df, outputs, weights)

    def _scores(self, df: pd.DataFrame, outputs: np.ndarray,
                weights: np.ndarray | None = None) -> dict[str, float]:
        """:meth:`scores` of rows whose targets are all known, from their ``outputs`` and
        their ``weights`` (None: unweighted; a search also scores them by its own metric, from
        the same outputs)."""
        from sklearn import metrics

        if self.task == "regression":
            truth = self.preprocessor.target_values(df[self.target])
            pred = self.preprocessor.predicted_values(outputs)
            return {"rmse": float(np.sqrt(metrics.mean_squared_error(truth, pred,
                                                                     sample_weight=weights))),
                    "mae": float(metrics.mean_absolute_error(truth, pred, sample_weight=weights)),
                    "r2": float(metrics.r2_score(truth, pred, sample_weight=weights))}
        proba = outputs
        index = self.preprocessor.encode_target(df[self.target])
        return {"accuracy": float(metrics.accuracy_score(index, proba.argmax(axis=1),
                                                         sample_weight=weights)),
                "log_loss": float(metrics.log_loss(index, proba, sample_weight=weights,
                                                   labels=list(range(proba.shape[1]))))}

    def test_scores(self, prepared: PreparedTable, metric: Metric | None = None,
                    outputs: np.ndarray | None = None
                    ) -> tuple[dict[str, float], dict[str, float]]:
        """The scores of this model on ``prepared``'s test rows and of a constant prediction
        (``PreparedTable.constant_outputs``) on the same rows, both weighted as the
        validation score is (``prepared.w_test``, under ``--weight``), with ``metric``'s
        score too where it is not one of :meth:`scores`'. ``outputs``: this model's outputs
        for the test rows, when they are at hand."""
        test = prepared.test  # its targets are all known (prepare drops rows without one)
        weights = None if prepared.w_test is None else prepared.w_test.numpy()
        if outputs is None:
            outputs = self.outputs(prepared.test_inputs)
        outputs = (outputs, prepared.constant_outputs(len(test)))
        scores = tuple(self._scores(test, out, weights) for out in outputs)
        if metric is not None:
            scorer = ValidationScorer(metric, prepared.preprocessor.encode_target(
                test[self.target]), prepared.task, prepared.target_std, prepared.target_mean,
                weights)
            for score, out in zip(scores, outputs):
                score.setdefault(metric.name, scorer(out))
        return scores

    def confusion_matrix(self, data: pd.DataFrame | str | Path,
                         outputs: np.ndarray | None = None) -> dict[str, Any]:
        """Rows: true class, columns: predicted class, labels in ``classes`` order.
        ``outputs``: the model's outputs for ``data``'s rows, when they are at hand (all of
        them have a class)."""
        from sklearn.metrics import confusion_matrix

        df = read_table(data)
        df = df[df[self.target].notna()]
        truth = self.preprocessor.encode_target(df[self.target])
        if outputs is None:
            outputs = self._outputs(df, warn_unseen=False)
        pred = outputs.argmax(axis=1)
        matrix = confusion_matrix(truth, pred, labels=list(range(len(self.classes))))
        return {"labels": [str(c) for c in self.classes], "matrix": matrix.tolist()}

    def save(self, path: str | Path) -> Path:
        """Write the model as a directory that loads without executing code (``caviar.io``)."""
        return io.save_model(self, path)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> CaviarModel:
        return load_model(path, device)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> CaviarModel:
    """Load a model directory written by ``CaviarModel.save`` (or ``caviar tune``), its
    networks on ``device`` ("cpu", "cuda" or "auto"), wherever it was saved from."""
    preprocessor, networks, info = io.load_model_files(path, device)
    return CaviarModel(preprocessor, networks, info)


def fit_model(train: pd.DataFrame | str | Path, target: str,
              hyperparameters: Mapping[str, Any] | None = None,
              validation: pd.DataFrame | None = None, task: str | None = None,
              categorical: Sequence[str] = (), drop: Sequence[str] = (), seed: int = 0,
              patience: int | None = None,
              on_epoch: Callable[[dict[str, Any]], None] | None = None,
              device: str | torch.device = "cpu") -> CaviarModel:
    """Fit the preprocessor on ``train`` only, then train one network on ``device`` (early
    stopping on ``validation`` when it is given with ``patience``)."""
    prepared = prepare(read_table(train), target, task=task, categorical=categorical,
                       drop=drop, seed=seed, val_size=0, test_size=0, validation=validation)
    network = train_network(prepared.X_train, prepared.y_train, prepared.task,
                            hyperparameters or {}, n_classes=prepared.n_classes,
                            X_val=prepared.X_val, y_val=prepared.y_val, seed=seed,
                            patience=patience, on_epoch=on_epoch, device=device,
                            inputs=prepared.inputs)
    return CaviarModel(prepared.preprocessor, network,
                       {"target": target, "rows": len(prepared.train)})
