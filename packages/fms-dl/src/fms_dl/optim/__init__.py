"""`fms_dl.optim`: optimisers, learning-rate schedulers and gradient clipping."""

from fms_dl.nn.utils import clip_grad_norm_
from fms_dl.optim import lr_scheduler
from fms_dl.optim.adagrad import Adagrad
from fms_dl.optim.adam import Adam, AdamW
from fms_dl.optim.optimizer import Optimizer, load_optimizer, save_optimizer
from fms_dl.optim.rmsprop import RMSprop
from fms_dl.optim.sgd import SGD

__all__ = [
    "SGD",
    "Adagrad",
    "Adam",
    "AdamW",
    "Optimizer",
    "RMSprop",
    "clip_grad_norm_",
    "load_optimizer",
    "lr_scheduler",
    "save_optimizer",
]
