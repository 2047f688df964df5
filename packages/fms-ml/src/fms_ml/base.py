"""The estimator contract shared by every model: parameters, cloning, scoring, labels.

The scikit-learn contract, written out:

* `__init__` stores each hyper-parameter under its own name, untouched;
* [`get_params`][fms_ml.base.BaseEstimator.get_params] reads them back by introspecting the
  signature of `__init__`, and [`set_params`][fms_ml.base.BaseEstimator.set_params] writes them
  (nested as `step__param` for meta-estimators);
* [`clone`][fms_ml.base.clone] builds an unfitted copy with the same parameters (scikit-learn's own
  `sklearn.base.clone` works on our estimators too, because it only uses `get_params`);
* `fit` validates, learns attributes whose names end in `_`, and returns `self`;
* the column names of a DataFrame passed to `fit` are kept as `feature_names_in_`, and a
  DataFrame whose columns differ (in names or order) at predict time is an error, not a silent
  misreading of the columns (see [`BaseEstimator`][fms_ml.base.BaseEstimator]).
"""

from __future__ import annotations

import copy
import functools
import inspect
import sys
import warnings
from collections.abc import Callable
from typing import Any, ClassVar, Self

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fms_ml._validation import (
    check_array,
    check_classification_targets,
    check_finite_result,
    check_is_fitted,
    check_n_features,
)

__all__ = [
    "BaseEstimator",
    "ClassifierMixin",
    "ClusterMixin",
    "LabelEncoder",
    "RegressorMixin",
    "TransformerMixin",
    "available_if",
    "clone",
]


_FIT_METHODS = ("fit", "partial_fit")
# outputs that are never legitimately infinite (log-probabilities and densities may be -inf)
_FINITE_OUTPUTS = frozenset({"predict", "predict_proba", "decision_function", "transform"})
_PREDICT_METHODS = (
    "predict",
    "predict_proba",
    "predict_log_proba",
    "decision_function",
    "transform",
    "score_samples",
)


def _feature_names(X: Any) -> NDArray[Any] | None:
    """The column names of a DataFrame-like `X` (duck-typed: `columns` and `to_numpy`).

    Only all-string names count (scikit-learn's rule): integer column labels, as a DataFrame built
    from a bare array has, carry no meaning to check.
    """
    columns = getattr(X, "columns", None)
    if columns is None or not hasattr(X, "to_numpy"):
        return None
    names = np.asarray(list(columns), dtype=object)
    if names.size == 0 or not all(isinstance(n, str) for n in names):
        return None
    return names


def _wrap_fit(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def fit(self: Any, X: Any = None, *args: Any, **kwargs: Any) -> Any:
        names = _feature_names(X)
        out = method(self, X, *args, **kwargs)
        if names is not None:
            self.feature_names_in_ = names
        elif "feature_names_in_" in vars(self):
            del self.feature_names_in_  # refitted on data without names
        y = args[0] if args else kwargs.get("y")
        for key, value in vars(self).items():
            if key.endswith("_") and not key.startswith("_"):
                if "log" in key:  # a log-probability is -inf where the probability is 0
                    value = np.where(np.isneginf(value), 0.0, value) if _is_float(value) else None
                check_finite_result(value, f"the learned {key}", {"X": X, "y": y}, owner=self)
        return out

    return fit


def _is_float(value: Any) -> bool:
    return isinstance(value, float | np.floating) or (
        isinstance(value, np.ndarray) and value.dtype.kind == "f"
    )


def _wrap_predict(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def predict(self: Any, X: Any = None, *args: Any, **kwargs: Any) -> Any:
        check_is_fitted(self)
        _check_feature_names(self, X)
        if len(getattr(X, "shape", ())) == 2:  # arrays and DataFrames; lists are checked later
            check_n_features(self, X)
        out = method(self, X, *args, **kwargs)
        if method.__name__ in _FINITE_OUTPUTS:
            check_finite_result(out, f"the output of {method.__name__}", {"X": X}, owner=self)
        return out

    return predict


def _check_feature_names(estimator: Any, X: Any) -> None:
    """Raise if the columns of `X` are not those `estimator` was fitted on, in the same order."""
    fitted = getattr(estimator, "feature_names_in_", None)
    names = _feature_names(X)
    name = type(estimator).__name__
    if fitted is None and names is not None:
        warnings.warn(
            f"X has feature names, but {name} was fitted without feature names.",
            UserWarning,
            stacklevel=3,
        )
    elif fitted is not None and names is None:
        warnings.warn(
            f"X does not have valid feature names, but {name} was fitted with feature names.",
            UserWarning,
            stacklevel=3,
        )
    elif fitted is not None and names is not None and not np.array_equal(fitted, names):
        missing = [n for n in fitted.tolist() if n not in set(names.tolist())]
        unseen = [n for n in names.tolist() if n not in set(fitted.tolist())]
        detail = (
            f"missing {missing}, unseen {unseen}"
            if missing or unseen
            else f"same columns in another order: got {names.tolist()}"
        )
        raise ValueError(
            f"The feature names should match those that were passed during fit, in the same "
            f"order: {name} was fitted on {fitted.tolist()}; {detail}. Reorder the columns as "
            f"at fit (X[est.feature_names_in_])."
        )


class available_if:
    """Advertise a method only where `check(self)` is true (scikit-learn's `available_if`).

    A method that cannot work for some parameters (`predict_proba` of a hinge-loss classifier)
    should not exist for them: `hasattr(est, "predict_proba")` is how scikit-learn and users ask
    whether probabilities are available. Reading the attribute when `check` fails raises
    `AttributeError` naming the reason.

    Args:
        check: `check(self) -> bool`; it may itself raise `AttributeError` with a reason.
        reason: the message when `check` returns false.
    """

    def __init__(self, check: Callable[[Any], bool], reason: str) -> None:
        self.check = check
        self.reason = reason

    def __call__(self, method: Callable[..., Any]) -> Any:
        return _AvailableIf(method, self.check, self.reason)


class _AvailableIf:
    def __init__(self, method: Callable[..., Any], check: Callable[[Any], bool], reason: str):
        self.method = method
        self.check = check
        self.reason = reason
        functools.update_wrapper(self, method)  # type: ignore[arg-type]

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        if not self.check(obj):
            raise AttributeError(self.reason.format(self=obj))
        return functools.partial(self.method, obj)


class BaseEstimator:
    r"""Base class: parameter introspection, `repr`, and scikit-learn interoperability.

    Subclasses declare every hyper-parameter as an explicit keyword in `__init__` and store it as
    an attribute of the same name; nothing else happens in `__init__`.

    Every subclass's `fit` and `partial_fit` record the column names of a DataFrame `X` as
    `feature_names_in_`, and its prediction methods (`predict`, `predict_proba`,
    `predict_log_proba`, `decision_function`, `transform`, `score_samples`) first check, in one
    place for all estimators: that the estimator is fitted (`NotFittedError`), that a DataFrame
    has the fitted columns in the fitted order (a `ValueError` naming the difference; a warning
    when one side has names and the other not), and that `X` has `n_features_in_` columns. The
    wrapping is done once per class, by `__init_subclass__`.

    The same wrappers refuse overflow: learned state (attributes ending in `_`) or the output of
    `predict`, `predict_proba`, `decision_function` or `transform` that is not finite although
    the input is raises a `ValueError` naming the input's largest magnitude (a learned attribute
    named for a logarithm, such as `class_log_prior_`, may hold $-\infty$: the log of a zero
    probability)
    (`fms_ml._validation.check_finite_result`), where the NaN would
    otherwise pass silently into every prediction.
    """

    _estimator_type: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in _FIT_METHODS + _PREDICT_METHODS:
            attr = cls.__dict__.get(name)
            method = attr.method if isinstance(attr, _AvailableIf) else attr
            if not inspect.isfunction(method) or getattr(method, "__fms_checked__", False):
                continue
            wrapped = (_wrap_fit if name in _FIT_METHODS else _wrap_predict)(method)
            wrapped.__fms_checked__ = True  # type: ignore[attr-defined]
            if isinstance(attr, _AvailableIf):
                attr.method = wrapped
            else:
                setattr(cls, name, wrapped)

    @classmethod
    def _get_param_names(cls) -> list[str]:
        init = cls.__init__
        if init is object.__init__:
            return []
        sig = inspect.signature(init)
        names = []
        for p in sig.parameters.values():
            if p.name == "self":
                continue
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise TypeError(
                    f"{cls.__name__}.__init__ must list its parameters explicitly; "
                    f"*args/**kwargs ({p.name}) are not allowed."
                )
            names.append(p.name)
        return sorted(names)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Return the hyper-parameters as a dict.

        Args:
            deep: also return the parameters of nested estimators as `name__param`.
        """
        out: dict[str, Any] = {}
        for name in self._get_param_names():
            value = getattr(self, name)
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                out.update((f"{name}__{k}", v) for k, v in value.get_params().items())
            out[name] = value
        return out

    def set_params(self, **params: Any) -> Self:
        """Set hyper-parameters; nested ones as `name__param`. Returns `self`."""
        if not params:
            return self
        valid = self.get_params(deep=True)
        nested: dict[str, dict[str, Any]] = {}
        for key, value in params.items():
            name, sep, sub = key.partition("__")
            if name not in valid:
                raise ValueError(
                    f"Invalid parameter {name!r} for estimator {type(self).__name__}; valid "
                    f"parameters are {sorted(self._get_param_names())}."
                )
            if sep:
                nested.setdefault(name, {})[sub] = value
            else:
                setattr(self, name, value)
                valid[name] = value
        for name, sub_params in nested.items():
            valid[name].set_params(**sub_params)
        return self

    def __repr__(self) -> str:
        defaults = {
            p.name: p.default
            for p in inspect.signature(type(self).__init__).parameters.values()
            if p.name != "self"
        }
        changed = []
        for k, v in self.get_params(deep=False).items():
            d = defaults.get(k, inspect.Parameter.empty)
            same = False
            try:
                same = bool(v is d or (type(v) is type(d) and v == d))
            except (TypeError, ValueError):
                same = False
            if not same:
                changed.append(f"{k}={v!r}")
        return f"{type(self).__name__}({', '.join(changed)})"

    def __sklearn_tags__(self) -> Any:
        """Describe this estimator to scikit-learn (only called by scikit-learn itself).

        fms_ml never imports scikit-learn; when scikit-learn asks for tags it is already loaded,
        so its `Tags` classes are taken from `sys.modules`.
        """
        sku = sys.modules.get("sklearn.utils")
        if sku is None:
            raise AttributeError("__sklearn_tags__ is only meaningful once sklearn is imported.")
        tags = sku.Tags(estimator_type=self._estimator_type, target_tags=sku.TargetTags(False))
        if self._estimator_type == "classifier":
            tags.classifier_tags = sku.ClassifierTags()
            tags.target_tags.required = True
        elif self._estimator_type == "regressor":
            tags.regressor_tags = sku.RegressorTags()
            tags.target_tags.required = True
        if isinstance(self, TransformerMixin):
            tags.transformer_tags = sku.TransformerTags()
        for key, value in self._tag_overrides.items():
            group, _, field = key.partition(".")
            setattr(getattr(tags, group), field, value)
        return tags

    _tag_overrides: ClassVar[dict[str, bool]] = {}
    """Tags that differ from what the mixins imply, as `"group.field": value`, e.g.
    `"input_tags.positive_only"` (counts only), `"target_tags.multi_output"` (a 2-d `y`),
    `"classifier_tags.poor_score"` (scikit-learn's own estimator of the kind is not expected to
    fit its checks' data well)."""

    # -- helpers for subclasses ------------------------------------------------------------------
    def _validate_predict_input(self, X: ArrayLike) -> NDArray[np.float64]:
        """Check that the estimator is fitted and `X` has the fitted number of features."""
        check_is_fitted(self, ["n_features_in_"])
        Xa = check_array(X, "X")
        check_n_features(self, Xa)
        return Xa


def clone(estimator: Any) -> Any:
    """Return an unfitted copy of `estimator` with deep-copied parameters.

    Lists and tuples of estimators are cloned element-wise. Equivalent to `sklearn.base.clone`.
    """
    if isinstance(estimator, list | tuple):
        return type(estimator)(clone(e) for e in estimator)
    if not hasattr(estimator, "get_params") or isinstance(estimator, type):
        return copy.deepcopy(estimator)
    params = estimator.get_params(deep=False)
    new_params = {
        k: clone(v) if hasattr(v, "get_params") else copy.deepcopy(v) for k, v in params.items()
    }
    return type(estimator)(**new_params)


class LabelEncoder:
    """Map arbitrary labels (strings, ints, bools...) to `0..n_classes-1` and back.

    `classes_` is the sorted array of distinct labels, as `numpy.unique` returns it, which is the
    order scikit-learn uses for `predict_proba` columns.
    """

    classes_: NDArray[Any]

    def fit(self, y: ArrayLike) -> LabelEncoder:
        """Learn the sorted distinct labels of `y`."""
        self.classes_ = np.unique(np.asarray(y))
        return self

    def fit_transform(self, y: ArrayLike) -> NDArray[np.intp]:
        """Learn the labels and return `y` encoded as integers."""
        self.classes_, codes = np.unique(np.asarray(y), return_inverse=True)
        return codes.astype(np.intp).ravel()

    def transform(self, y: ArrayLike) -> NDArray[np.intp]:
        """Encode `y`; labels unseen at fit raise `ValueError`."""
        ya = np.asarray(y)
        idx = np.searchsorted(self.classes_, ya)
        idx = np.clip(idx, 0, len(self.classes_) - 1)
        bad = self.classes_[idx] != ya
        if np.any(bad):
            raise ValueError(
                f"y contains labels unseen at fit: {np.unique(ya[bad])[:5].tolist()}; "
                f"known labels are {self.classes_.tolist()}."
            )
        return idx.astype(np.intp)

    def inverse_transform(self, codes: ArrayLike) -> NDArray[Any]:
        """Map integer codes back to the original labels."""
        return self.classes_[np.asarray(codes, dtype=np.intp)]


class ClassifierMixin:
    """Mixin for classifiers: `score` is accuracy; label encoding helper."""

    _estimator_type: ClassVar[str | None] = "classifier"
    classes_: NDArray[Any]

    def _encode_labels(self, y: NDArray[Any]) -> NDArray[np.intp]:
        """Check `y` holds >= 2 discrete classes, set `classes_`, return integer codes."""
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        return codes.astype(np.intp).ravel()

    def score(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None) -> float:
        """Mean accuracy of `self.predict(X)` against `y` (weighted by `sample_weight` if given)."""
        from fms_ml.metrics import accuracy_score

        return accuracy_score(y, self.predict(X), sample_weight=sample_weight)  # type: ignore[attr-defined]


class RegressorMixin:
    """Mixin for regressors: `score` is the coefficient of determination $R^2$."""

    _estimator_type: ClassVar[str | None] = "regressor"

    def score(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None) -> float:
        r"""$R^2 = 1 - \sum_i (y_i - \hat y_i)^2 / \sum_i (y_i - \bar y)^2$ on `(X, y)` (weighted by `sample_weight` if given)."""
        from fms_ml.metrics import r2_score

        return r2_score(y, self.predict(X), sample_weight=sample_weight)  # type: ignore[attr-defined]


class TransformerMixin:
    """Mixin for transformers: `fit_transform` = `fit` then `transform`."""

    def fit_transform(self, X: ArrayLike, y: ArrayLike | None = None) -> NDArray[np.float64]:
        """Fit to `X` and return it transformed."""
        return self.fit(X, y).transform(X)  # type: ignore[attr-defined, no-any-return]


class ClusterMixin:
    """Mixin for clusterers: `fit_predict` returns `labels_`."""

    _estimator_type: ClassVar[str | None] = "clusterer"
    labels_: NDArray[np.intp]

    def fit_predict(self, X: ArrayLike, y: ArrayLike | None = None) -> NDArray[np.intp]:
        """Fit to `X` and return the cluster label of each sample."""
        self.fit(X)  # type: ignore[attr-defined]
        return self.labels_
