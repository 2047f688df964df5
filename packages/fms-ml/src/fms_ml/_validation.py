r"""Input checking shared by every estimator.

scikit-learn's lesson: validation lives in one place, so every estimator rejects bad input the same
way, with a message that names the argument, what was received and what was expected. Each helper
here raises a `ValueError` (or `TypeError` for a wrong type) and never
silently repairs the data.

Two checks guard against inputs that are valid numbers yet too big for the arithmetic:

* `check_allocation` refuses, before allocating, an array
  larger than the machine's memory (a `MemoryError` naming the array, its shape and the setting
  that sizes it), where numpy would otherwise try, swap, or be killed;
* `check_finite_result` turns a non-finite result from
  finite input (an overflow: values near $10^{300}$ square to infinity, and
  $\infty - \infty$ is NaN) into a `ValueError` instead of silent NaN.
"""

from __future__ import annotations

import functools
import numbers
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "ConvergenceWarning",
    "DataConversionWarning",
    "NotFittedError",
    "check_X_y",
    "check_allocation",
    "check_array",
    "check_classification_targets",
    "check_consistent_length",
    "check_finite_result",
    "check_is_fitted",
    "check_n_features",
    "check_random_state",
    "check_sample_weight",
    "column_or_1d",
    "compute_class_weight",
    "not_fitted_error",
    "warn_not_converged",
]

FloatArray = NDArray[np.float64]


class NotFittedError(ValueError, AttributeError):
    """Raised when an estimator is used before `fit`.

    It subclasses `ValueError` and `AttributeError`, as scikit-learn's `NotFittedError` does, so
    `hasattr(est, "classes_")`-style probes and `except ValueError` both behave as they do with
    scikit-learn. The instances fms_ml raises are made by
    `fms_ml._validation.not_fitted_error`, which also makes them instances of
    scikit-learn's class when scikit-learn is loaded.
    """


class ConvergenceWarning(UserWarning):
    """An iterative solver stopped at `max_iter` before meeting its tolerance `tol`."""


class DataConversionWarning(UserWarning):
    """The input was converted to the shape or type expected (e.g. a column-vector `y`)."""


_SKLEARN_TWINS: dict[tuple[type, type], type] = {}


def _sklearn_twin(ours: type, module: str, name: str) -> type:
    """`ours`, or a subclass of both `ours` and scikit-learn's `module.name` if that is loaded.

    fms_ml imports nothing from scikit-learn, yet `except sklearn.exceptions.NotFittedError`,
    `warnings.filterwarnings("ignore", category=sklearn.exceptions.ConvergenceWarning)` and
    scikit-learn's own estimator checks (which test `issubclass`) should treat our errors and
    warnings as theirs. A class cannot gain a base after it is made, so when scikit-learn is
    already loaded (`module` is in `sys.modules`, which is the case whenever scikit-learn code
    can be catching or filtering), we raise or warn with a subclass of both, made once and
    cached; otherwise with ours alone. Either way catching or filtering fms_ml's class works.
    """
    sk = sys.modules.get(module)
    theirs = getattr(sk, name, None) if sk is not None else None
    if not isinstance(theirs, type) or issubclass(ours, theirs):
        return ours
    twin = _SKLEARN_TWINS.get((ours, theirs))
    if twin is None:
        twin = type(ours.__name__, (ours, theirs), {"__module__": __name__})
        _SKLEARN_TWINS[(ours, theirs)] = twin
    return twin


def not_fitted_error(message: str) -> NotFittedError:
    """The `NotFittedError` to raise, with `message` (scikit-learn's too, when it is loaded)."""
    error: NotFittedError = _sklearn_twin(NotFittedError, "sklearn.exceptions", "NotFittedError")(
        message
    )
    return error


def warn_not_converged(estimator: Any, max_iter: int, detail: str = "") -> None:
    """Warn `ConvergenceWarning` that `estimator`'s solver stopped at `max_iter` iterations."""
    warnings.warn(
        f"{type(estimator).__name__} did not converge: its solver stopped at max_iter="
        f"{max_iter} iterations before meeting tol{detail}. Increase max_iter, scale the "
        f"features, or loosen tol.",
        _sklearn_twin(ConvergenceWarning, "sklearn.exceptions", "ConvergenceWarning"),
        stacklevel=3,
    )


def _is_sparse(X: Any) -> bool:
    """A scipy.sparse matrix or array, found by duck typing (fms_ml imports no scipy)."""
    return hasattr(X, "tocsr") or (hasattr(X, "format") and hasattr(X, "nnz"))


def _describe(x: Any) -> str:
    shape = getattr(x, "shape", None)
    if shape is not None:
        return f"array of shape {tuple(shape)} and dtype {getattr(x, 'dtype', '?')}"
    return f"{type(x).__name__}"


def check_array(
    X: ArrayLike,
    name: str = "X",
    *,
    ensure_2d: bool = True,
    allow_nd: bool = False,
    dtype: Any = np.float64,
    ensure_finite: bool = True,
    ensure_min_samples: int = 1,
    ensure_min_features: int = 1,
) -> NDArray[Any]:
    """Convert `X` to a numpy array and check it.

    Args:
        X: array-like input.
        name: the argument's name, used in error messages.
        ensure_2d: require exactly two dimensions `(n_samples, n_features)`; otherwise one.
        allow_nd: with `ensure_2d`, accept more than two dimensions.
        dtype: target dtype; `None` keeps the input's dtype (used for labels).
        ensure_finite: reject NaN and infinity (numeric dtypes only).
        ensure_min_samples: smallest number of rows accepted.
        ensure_min_features: smallest number of columns accepted (2-d only).

    Returns:
        The validated array (a copy only when a conversion was needed).

    Raises:
        TypeError: `X` cannot be converted to the dtype.
        ValueError: wrong number of dimensions, empty, too few samples/features, or non-finite.
    """
    if X is None:
        raise ValueError(f"{name} is None; expected an array-like of numbers.")
    if _is_sparse(X):
        # `np.asarray` would wrap it as a 0-d object array and fail later, obscurely.
        raise TypeError(
            f"{name} is a sparse matrix ({type(X).__name__}); sparse input is not supported, "
            f"call {name}.toarray() to pass a dense array."
        )
    try:
        raw = np.asarray(X)  # converted once; the cast to `dtype` below starts from this array
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} could not be converted to an array: {exc}.") from exc
    if raw.dtype.kind == "c":
        # Casting to float would drop the imaginary part with only a warning.
        raise ValueError(
            f"Complex data not supported: {name} is complex ({_describe(raw)}); expected "
            f"real numbers."
        )
    holds_strings = dtype is not None and (
        raw.dtype.kind in "US"
        or (raw.dtype == object and any(isinstance(v, str | bytes) for v in raw.flat))
    )
    if holds_strings:
        # numpy parses "1.5" as 1.5; scikit-learn refuses strings where numbers are expected.
        raise ValueError(
            f"{name} holds strings ({_describe(raw)}); expected numbers. Convert numeric "
            f"strings explicitly (e.g. {name}.astype(float)) or encode categories first."
        )
    try:
        arr = raw if dtype is None else np.asarray(raw, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{name} could not be converted to {np.dtype(dtype).name if dtype else 'an array'}: "
            f"{exc}; got {_describe(X)}."
        ) from exc
    if ensure_2d:
        if arr.ndim < 2:
            raise ValueError(
                f"{name} must be 2-d of shape (n_samples, n_features); got {arr.ndim}-d array "
                f"of shape {arr.shape}. Reshape your data with {name}.reshape(-1, 1) for one "
                f"feature or {name}.reshape(1, -1) for one sample."
            )
        if arr.ndim > 2 and not allow_nd:
            raise ValueError(
                f"{name} must be 2-d of shape (n_samples, n_features); got {arr.ndim}-d array "
                f"of shape {arr.shape}."
            )
    elif arr.ndim != 1:
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr.ravel()
        else:
            raise ValueError(f"{name} must be 1-d of shape (n_samples,); got shape {arr.shape}.")
    n_samples = arr.shape[0]
    if n_samples < ensure_min_samples:
        raise ValueError(
            f"{name} is empty or too small: found {n_samples} sample(s) (shape={arr.shape}) "
            f"while a minimum of {ensure_min_samples} is required."
        )
    if ensure_2d and arr.shape[1] < ensure_min_features:
        raise ValueError(
            f"{name} is empty or too narrow: found {arr.shape[1]} feature(s) "
            f"(shape={arr.shape}) while a minimum of {ensure_min_features} is required."
        )
    if ensure_finite and arr.dtype.kind in "fc" and not np.isfinite(arr).all():
        n_nan = int(np.isnan(arr).sum())
        n_inf = int(np.isinf(arr).sum())
        raise ValueError(
            f"{name} contains non-finite values ({n_nan} NaN, {n_inf} inf); expected only finite "
            f"numbers. Impute or drop them first."
        )
    return arr


def column_or_1d(y: ArrayLike, name: str = "y", *, warn: bool = False) -> NDArray[Any]:
    """Return `y` as a 1-d array; accepts shape `(n,)` or `(n, 1)`.

    With `warn`, a column vector `(n, 1)` raises a `DataConversionWarning` (as scikit-learn does
    for targets: a 2-d `y` often means a multi-output fit was intended).
    """
    if _is_sparse(y):
        raise TypeError(f"{name} is a sparse matrix; sparse input is not supported.")
    y = np.asarray(y)  # once: numpy functions are not dispatched on the raw array-like
    if warn and y.ndim == 2 and y.shape[1] == 1:
        warnings.warn(
            f"A column-vector {name} was passed when a 1d array was expected. Please change the "
            f"shape of {name} to (n_samples, ), for example using ravel().",
            _sklearn_twin(DataConversionWarning, "sklearn.exceptions", "DataConversionWarning"),
            stacklevel=3,
        )
    return check_array(y, name, ensure_2d=False, dtype=None, ensure_finite=False)


def check_consistent_length(**arrays: Any) -> None:
    """Raise if the named arrays do not all have the same number of samples."""
    lengths = {k: len(v) for k, v in arrays.items() if v is not None}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{k} has {n}" for k, n in lengths.items())
        raise ValueError(f"Inconsistent numbers of samples: {detail}; expected them equal.")


def check_X_y(
    X: ArrayLike,
    y: ArrayLike,
    *,
    y_numeric: bool = False,
    multi_output: bool = False,
    ensure_min_samples: int = 1,
) -> tuple[FloatArray, NDArray[Any]]:
    """Validate a design matrix `X` and its targets `y` together.

    Args:
        X: `(n_samples, n_features)` features.
        y: `(n_samples,)` targets (or `(n_samples, n_outputs)` with `multi_output`).
        y_numeric: convert `y` to float64 and require it finite (regression).
        multi_output: accept a 2-d `y`.
        ensure_min_samples: smallest number of rows accepted.

    Returns:
        `(X, y)` as arrays.
    """
    Xa = check_array(X, "X", ensure_min_samples=ensure_min_samples)
    if y is None:
        raise ValueError(
            "This estimator requires y to be passed, but the target y is None; expected "
            "targets y of shape (n_samples,)."
        )
    if multi_output:
        ya = np.asarray(y, dtype=np.float64 if y_numeric else None)
        if ya.ndim not in (1, 2):
            raise ValueError(f"y must be 1-d or 2-d; got shape {ya.shape}.")
        if ya.ndim == 2 and ya.shape[1] == 1:
            ya = ya.ravel()
    else:
        ya = column_or_1d(y, warn=True)
    if y_numeric:
        try:
            ya = ya.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"y must be numeric for a regressor; got dtype {ya.dtype}.") from exc
        if not np.isfinite(ya).all():
            raise ValueError(
                f"y contains non-finite values ({int(np.isnan(ya).sum())} NaN, "
                f"{int(np.isinf(ya).sum())} inf); expected only finite numbers."
            )
    elif ya.dtype.kind == "f" and not np.isfinite(ya).all():
        raise ValueError("y contains NaN or inf; expected finite labels.")
    check_consistent_length(X=Xa, y=ya)
    return Xa, ya


def check_classification_targets(y: NDArray[Any]) -> None:
    """Raise unless `y` holds discrete labels with at least two classes."""
    if y.dtype.kind == "f" and not np.all(np.mod(y, 1) == 0):
        raise ValueError(
            "Unknown label type: y holds continuous values (e.g. "
            f"{y[np.mod(y, 1) != 0][:3].tolist()}); a classifier needs discrete labels."
        )
    n_classes = len(np.unique(y))
    if n_classes < 2:
        raise ValueError(
            f"y has a single class ({np.unique(y).tolist()}): 1 class where a classifier needs "
            f"at least 2 classes."
        )


def check_is_fitted(estimator: Any, attributes: Sequence[str] | None = None) -> None:
    """Raise `NotFittedError` unless `estimator` was fitted.

    Without `attributes`, an estimator's own `__sklearn_is_fitted__()` answers if it has one
    (meta-estimators such as a pipeline, whose fitted state lives in their steps); otherwise any
    public attribute ending in `_` counts as fitted state.
    """
    if attributes is None and hasattr(estimator, "__sklearn_is_fitted__"):
        fitted = bool(estimator.__sklearn_is_fitted__())
    elif attributes is None:
        fitted = any(
            k.endswith("_") and not k.startswith("__") and not k.startswith("_")
            for k in vars(estimator)
        )
    else:
        fitted = all(hasattr(estimator, a) for a in attributes)
    if not fitted:
        raise not_fitted_error(
            f"This {type(estimator).__name__} instance is not fitted yet; call fit(X, y) before "
            f"using it."
        )


def check_n_features(estimator: Any, X: NDArray[Any]) -> None:
    """Raise if `X` has a different number of columns from the data `estimator` was fitted on."""
    expected = getattr(estimator, "n_features_in_", None)
    if expected is not None and X.shape[1] != expected:
        raise ValueError(
            f"X has {X.shape[1]} features, but {type(estimator).__name__} is expecting "
            f"{expected} features as input (it was fitted on X of shape (n_samples, {expected}))."
        )


def check_random_state(seed: Any) -> np.random.Generator:
    """Turn `seed` (None, int, or a Generator) into a `numpy.random.Generator`."""
    if seed is None or isinstance(seed, numbers.Integral):
        return np.random.default_rng(None if seed is None else int(seed))
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, np.random.RandomState):
        return np.random.default_rng(int(seed.randint(0, 2**31 - 1)))
    raise TypeError(
        f"random_state must be None, an int or a numpy Generator; got {type(seed).__name__}."
    )


def check_sample_weight(sample_weight: ArrayLike | None, n_samples: int) -> FloatArray:
    """Return sample weights as a float array of length `n_samples` (ones when None).

    A weight $w_i$ makes sample $i$ count $w_i$ times in the fitted loss or the metric, so the
    weights must be a 1-d array of finite, non-negative numbers, one per sample, not all zero
    (scikit-learn's `_check_sample_weight` conditions).

    Raises:
        ValueError: not 1-d, wrong length, non-finite, negative, or all zero.
    """
    if sample_weight is None:
        return np.ones(n_samples)
    if isinstance(sample_weight, numbers.Real):
        return np.full(n_samples, float(sample_weight))  # one weight for every sample
    # Convert an array-like (a list, a pandas Series, any object with __array__) once, first:
    # numpy functions such as np.ndim must not be dispatched on the raw object.
    sample_weight = np.asarray(sample_weight)
    if np.ndim(sample_weight) != 1:
        raise ValueError(
            f"sample_weight must be 1-d of shape ({n_samples},); got shape "
            f"{np.shape(sample_weight)}."
        )
    w = check_array(sample_weight, "sample_weight", ensure_2d=False, ensure_min_samples=0)
    if w.shape[0] != n_samples:
        raise ValueError(
            f"sample_weight has {w.shape[0]} entries; expected {n_samples} (one per sample)."
        )
    if (w < 0).any():
        raise ValueError(
            f"sample_weight has {int((w < 0).sum())} negative entries (smallest {w.min()}); "
            f"expected non-negative weights."
        )
    if not (w > 0).any():
        raise ValueError(
            "sample_weight is all zero; expected at least one positive weight (a fit or a "
            "metric on no samples is undefined)."
        )
    return w.astype(np.float64)


def compute_class_weight(
    class_weight: Any,
    classes: NDArray[Any],
    codes: NDArray[np.intp],
    sample_weight: FloatArray | None = None,
) -> FloatArray:
    r"""One weight per class, `(n_classes,)`, in `classes` order (scikit-learn's semantics).

    * `None`: all ones.
    * `"balanced"`: $w_k = \frac{n}{K\, n_k}$ with $n_k$ the number of samples of class $k$
      (the sum of their `sample_weight` when given, and $n$ the total weight), so that every
      class carries the same total weight $n / K$ (King and Zeng, 2001).
    * a dict `{label: weight}`: the given weights, 1 for labels it omits.

    Args:
        class_weight: `None`, `"balanced"` or a dict.
        classes: the sorted class labels (`classes_`).
        codes: `(n_samples,)` index of each sample's class in `classes`.
        sample_weight: `(n_samples,)` weights for the balanced counts, or None.

    Raises:
        ValueError: an unknown preset, dict keys that are not labels, non-finite or negative
            weights, or (balanced) a class whose samples weigh nothing in total.
    """
    K = classes.size
    if class_weight is None:
        return np.ones(K)
    if isinstance(class_weight, str):
        if class_weight != "balanced":
            raise ValueError(
                f"class_weight must be None, 'balanced' or a dict {{label: weight}}; got "
                f"{class_weight!r}."
            )
        counts = np.bincount(codes, weights=sample_weight, minlength=K).astype(np.float64)
        if (counts <= 0).any():
            empty = classes[counts <= 0].tolist()
            raise ValueError(
                f"class_weight='balanced' needs every class to have positive total weight; "
                f"classes {empty} have none."
            )
        return np.asarray(counts.sum() / (K * counts))
    if isinstance(class_weight, dict):
        labels = set(classes.tolist())
        unknown = [k for k in class_weight if k not in labels]
        if unknown:
            raise ValueError(
                f"class_weight has keys {unknown} that are not class labels; the classes are "
                f"{classes.tolist()}."
            )
        w = np.array([float(class_weight.get(c, 1.0)) for c in classes.tolist()])
        if not np.isfinite(w).all() or (w < 0).any():
            raise ValueError(f"class_weight values must be finite and >= 0; got {class_weight}.")
        return w
    raise ValueError(
        f"class_weight must be None, 'balanced' or a dict {{label: weight}}; got "
        f"{type(class_weight).__name__}."
    )


@functools.cache
def _memory_bytes() -> int | None:
    """This machine's physical memory in bytes, or `None` where the OS does not report it."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows) or no such name
        return None


def check_allocation(
    shape: Sequence[int], what: str, hint: str, *, itemsize: int = 8, owner: Any = None
) -> None:
    """Refuse, before allocating it, an array larger than this machine's physical memory.

    The size is computed with Python integers, so a shape whose product overflows int64 is still
    measured correctly. numpy would try such an allocation and fail late (or, with memory
    overcommit, succeed and get the process killed while filling it).

    Args:
        shape: the array's shape.
        what: what the array is, for the message (e.g. `"the Gram matrix X^T X"`).
        hint: what the user can change (e.g. `"lower degree or use interaction_only=True"`).
        itemsize: bytes per element (8 for float64).
        owner: the estimator allocating it, named in the message.

    Raises:
        MemoryError: the array would need more bytes than the machine has.
    """
    need = itemsize
    for n in shape:
        need *= int(n)
    have = _memory_bytes()
    if have is None or need <= have:
        return
    who = f"{type(owner).__name__}: " if owner is not None else ""
    dims = " x ".join(str(int(n)) for n in shape)
    raise MemoryError(
        f"{who}{what} would need {_bytes(need)} ({dims} values of {itemsize} bytes), more than "
        f"this machine's {_bytes(have)} of memory; {hint}."
    )


def _bytes(n: int) -> str:
    """`n` bytes in the largest binary unit that keeps the number at least 1 (e.g. `3.5 GiB`)."""
    units = ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    k = 0
    while k + 1 < len(units) and n >= 1024 ** (k + 1):
        k += 1
    return f"{n / 1024**k:,.3g} {units[k]}" if k else f"{n} bytes"


def _largest_magnitude(x: Any) -> float | None:
    """The largest |value| of `x`: `None` if `x` is not numeric (labels), NaN if not all finite."""
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if a.size == 0:
        return 0.0
    return float(np.abs(a).max()) if np.isfinite(a).all() else float("nan")


def check_finite_result(result: Any, what: str, inputs: dict[str, Any], owner: Any = None) -> None:
    r"""Raise if `result` holds NaN or infinity although every input is finite: an overflow.

    Float64 holds magnitudes up to about $1.8 \times 10^{308}$, so a square overflows from about
    $1.3 \times 10^{154}$ and a sum of many large terms earlier; $\infty - \infty$ then gives NaN
    and the NaN spreads through every later step. A non-finite result of finite input is always
    such an overflow (or a divergent solver), never an answer, so it is an error that says how
    large the input was. Where an input is not all finite (or not numeric) the check stays silent:
    the NaN may then be the input's own.

    Args:
        result: an array, a float, or anything else (ignored).
        what: what `result` is, for the message (e.g. `"the learned coef_"`).
        inputs: the inputs the result was computed from, by name (`None` and non-numeric values,
            such as string labels, are skipped).
        owner: the estimator, named in the message.

    Raises:
        ValueError: `result` is not all finite while every input is.
    """
    if isinstance(result, np.ndarray):
        if result.dtype.kind not in "fc" or np.isfinite(result).all():
            return
        bad = int(result.size - np.isfinite(result).sum())
        count = f"{bad} of {result.size} values are inf or NaN"
    elif isinstance(result, float | np.floating):
        if np.isfinite(result):
            return
        count = f"it is {float(result)}"
    else:
        return
    sizes = {}
    for name, x in inputs.items():
        m = None if x is None else _largest_magnitude(x)
        if m is None:
            continue  # absent, or labels: not arithmetic input
        if not np.isfinite(m):
            return  # the input itself holds NaN or inf
        sizes[name] = m
    who = f"{type(owner).__name__}: " if owner is not None else ""
    largest = ", ".join(f"largest |{k}| = {v:.3g}" for k, v in sizes.items())
    if any(v > 1e150 for v in sizes.values()):
        cause = (
            "the arithmetic overflowed float64 (squares of values above about 1.3e154 are "
            "infinite). Rescale the data, e.g. divide it by its largest magnitude, first."
        )
    else:
        cause = (
            "values this size do not overflow by themselves, so the computation diverged. "
            "Standardise the features (StandardScaler) or lower the step size."
        )
    raise ValueError(
        f"{who}{what} is not finite ({count}) although the input is ({largest}): {cause}"
    )
