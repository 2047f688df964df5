"""Pipeline: chain transformers and a final estimator into one estimator.

`Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression())])` fits each transformer
on the output of the previous one and the final step on the last output; its parameters are
addressed as `step__param`, so a grid search can tune any step.
"""

from __future__ import annotations

import copy
import sys
from typing import Any, Self

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fms_ml._validation import check_is_fitted
from fms_ml.base import BaseEstimator, available_if

__all__ = ["Pipeline", "make_pipeline"]


class Pipeline(BaseEstimator):
    """A sequence of `(name, transformer)` steps ending in any estimator.

    Args:
        steps: list of `(name, estimator)`; all but the last need `fit` and `transform`.
            The last may be `"passthrough"` or `None`.
    """

    def __init__(self, steps: list[tuple[str, Any]]) -> None:
        self.steps = steps

    # -- parameters: the steps are nested estimators ---------------------------------------------
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """`steps`, and with `deep` each step by name and its parameters as `name__param`."""
        out: dict[str, Any] = {"steps": self.steps}
        if not deep:
            return out
        for name, est in self.steps:
            out[name] = est
            if hasattr(est, "get_params"):
                out.update((f"{name}__{k}", v) for k, v in est.get_params(deep=True).items())
        return out

    def set_params(self, **params: Any) -> Self:
        """Set `steps`, replace a step by name, or set `name__param` on a step."""
        if "steps" in params:
            self.steps = params.pop("steps")  # checked by fit, as every parameter is
        if not params:
            return self
        self._validate_steps()
        names = [n for n, _ in self.steps]
        for key in [k for k in params if k in names]:
            i = names.index(key)
            self.steps[i] = (key, params.pop(key))
        nested: dict[str, dict[str, Any]] = {}
        for key, value in params.items():
            name, sep, sub = key.partition("__")
            if not sep or name not in names:
                raise ValueError(f"Invalid parameter {key!r} for Pipeline; steps are {names}.")
            nested.setdefault(name, {})[sub] = value
        for name, sub_params in nested.items():
            self.steps[names.index(name)][1].set_params(**sub_params)
        return self

    @property
    def named_steps(self) -> dict[str, Any]:
        """The steps as a dict, by name."""
        return dict(self.steps)

    @property
    def _final(self) -> Any:
        return self.steps[-1][1]

    @property
    def n_features_in_(self) -> int:
        """Number of input features: the first step's (after `fit`)."""
        first = self.steps[0][1]
        n: int = first.n_features_in_  # AttributeError (NotFittedError) until fitted
        return n

    @property
    def classes_(self) -> NDArray[Any]:
        """Classes of the final classifier."""
        return np.asarray(self._final.classes_)

    @property
    def _estimator_type(self) -> str | None:  # type: ignore[override]
        return getattr(self.steps[-1][1], "_estimator_type", None)

    def _validate_steps(self) -> None:
        if not isinstance(self.steps, list) or not self.steps:
            raise ValueError(
                f"steps must be a non-empty list of (name, estimator); got {self.steps!r}."
            )
        names = [n for n, _ in self.steps]
        if len(set(names)) != len(names):
            raise ValueError(f"step names must be unique; got {names}.")
        for name, est in self.steps[:-1]:
            if not (hasattr(est, "fit") and hasattr(est, "transform")):
                raise TypeError(
                    f"Pipeline step {name!r} ({type(est).__name__}) must implement fit and "
                    f"transform; only the last step may be a plain estimator."
                )

    def __sklearn_is_fitted__(self) -> bool:
        """Fitted when the final step is (a final `"passthrough"`: when the one before it is)."""
        steps = [e for _, e in self.steps if e not in (None, "passthrough")]
        if not steps:
            return True
        try:
            check_is_fitted(steps[-1])
        except ValueError:
            return False
        return True

    def __sklearn_tags__(self) -> Any:
        """The final step's tags (its type, what it accepts), as scikit-learn's Pipeline reports.

        A pipeline is a transformer exactly when its final step is; its input tags are its first
        step's (what the pipeline accepts), the rest its final step's.
        """
        final = self._final
        if final in (None, "passthrough") or not hasattr(final, "__sklearn_tags__"):
            tags = super().__sklearn_tags__()
            sku = sys.modules["sklearn.utils"]
            tags.transformer_tags = sku.TransformerTags()
            return tags
        tags = copy.deepcopy(final.__sklearn_tags__())
        first = self.steps[0][1]
        if hasattr(first, "__sklearn_tags__"):
            tags.input_tags = copy.deepcopy(first.__sklearn_tags__().input_tags)
        return tags

    def _final_has(name: str) -> available_if:  # type: ignore[misc]  # a decorator factory in the body
        def check(self: Pipeline) -> bool:
            final = self._final
            return bool(
                (final in (None, "passthrough") and name == "transform") or hasattr(final, name)
            )

        return available_if(check, f"the final step of this Pipeline has no {name}")

    # -- fitting and prediction -------------------------------------------------------------------
    def _transform_all(self, X: ArrayLike) -> Any:
        Xt: Any = X
        for _, est in self.steps[:-1]:
            Xt = est.transform(Xt)
        return Xt

    def fit(self, X: ArrayLike, y: ArrayLike | None = None) -> Pipeline:
        """Fit each transformer on the previous output, then the final estimator."""
        self._validate_steps()
        Xt: Any = X
        for _, est in self.steps[:-1]:
            Xt = (
                est.fit_transform(Xt, y)
                if hasattr(est, "fit_transform")
                else est.fit(Xt, y).transform(Xt)
            )
        if self._final not in (None, "passthrough"):
            self._final.fit(Xt, y)
        return self

    @_final_has("predict")
    def predict(self, X: ArrayLike) -> NDArray[Any]:
        """Transform through every step and `predict` with the last."""
        return np.asarray(self._final.predict(self._transform_all(X)))

    @_final_has("predict_proba")
    def predict_proba(self, X: ArrayLike) -> NDArray[np.float64]:
        """Transform, then the final step's `predict_proba`."""
        return np.asarray(self._final.predict_proba(self._transform_all(X)))

    @_final_has("decision_function")
    def decision_function(self, X: ArrayLike) -> NDArray[np.float64]:
        """Transform, then the final step's `decision_function`."""
        return np.asarray(self._final.decision_function(self._transform_all(X)))

    @_final_has("transform")
    def transform(self, X: ArrayLike) -> Any:
        """Transform through every step, including the last."""
        Xt = self._transform_all(X)
        return Xt if self._final in (None, "passthrough") else self._final.transform(Xt)

    @_final_has("fit_transform")
    def fit_transform(self, X: ArrayLike, y: ArrayLike | None = None) -> Any:
        """Fit, then transform `X`."""
        return self.fit(X, y).transform(X)

    @_final_has("score")
    def score(self, X: ArrayLike, y: ArrayLike) -> float:
        """Transform, then the final step's `score`."""
        return float(self._final.score(self._transform_all(X), y))

    del _final_has


def make_pipeline(*steps: Any) -> Pipeline:
    """Build a [`Pipeline`][fms_ml.pipeline.Pipeline], naming each step by its lowercased class."""
    names: list[str] = []
    for est in steps:
        base = type(est).__name__.lower()
        name, i = base, 1
        while name in names:
            i += 1
            name = f"{base}-{i}"
        names.append(name)
    return Pipeline(list(zip(names, steps, strict=True)))
