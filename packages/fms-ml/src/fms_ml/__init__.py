"""fms_ml: classical machine learning from first principles in numpy, proven equal to scikit-learn.

Subpackages mirror scikit-learn's layout (`fms_ml.linear_model`, `fms_ml.tree`, ...); every
estimator follows the scikit-learn contract (see [`fms_ml.base`][fms_ml.base]) and drops into
scikit-learn pipelines. [`fms_ml.experiment`][fms_ml.experiment] is the experiment-design toolkit
every later layer of fms reports through.
"""

from importlib.metadata import PackageNotFoundError, version

from fms_ml._validation import NotFittedError

try:
    __version__ = version("fms-ml")
except PackageNotFoundError:  # pragma: no cover - running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["NotFittedError", "__version__"]
