"""fms_dl: a numpy autograd engine and deep-learning library, proven equal to PyTorch.

The names mirror PyTorch so that the two can be read side by side: `fms_dl.Tensor`,
`fms_dl.no_grad`, `fms_dl.nn`, `fms_dl.nn.functional`, `fms_dl.optim`, `fms_dl.data` and
`fms_dl.gradcheck`. The core imports numpy alone; the torch training toolkit lives in
`fms_dl.torch` (the `torch` extra).
"""

from importlib.metadata import PackageNotFoundError, version

from fms_dl import autograd, data, nn, optim, serialization
from fms_dl.autograd import GradcheckError, gradcheck
from fms_dl.engine import (
    AutogradError,
    InplaceModificationError,
    ShapeError,
    Tensor,
    arange,
    cat,
    enable_grad,
    float32,
    float64,
    int64,
    is_grad_enabled,
    manual_seed,
    matmul,
    no_grad,
    ones,
    rand,
    randn,
    stack,
    tensor,
    where,
    zeros,
)
from fms_dl.serialization import SafetensorsError, load_file, save_file

try:
    __version__ = version("fms-dl")
except PackageNotFoundError:  # pragma: no cover - running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "AutogradError",
    "GradcheckError",
    "InplaceModificationError",
    "SafetensorsError",
    "ShapeError",
    "Tensor",
    "__version__",
    "arange",
    "autograd",
    "cat",
    "data",
    "enable_grad",
    "float32",
    "float64",
    "gradcheck",
    "int64",
    "is_grad_enabled",
    "load_file",
    "manual_seed",
    "matmul",
    "nn",
    "no_grad",
    "ones",
    "optim",
    "rand",
    "randn",
    "save_file",
    "serialization",
    "stack",
    "tensor",
    "where",
    "zeros",
]
