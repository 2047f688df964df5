"""`fms_dl.nn`: modules, layers, losses and initialisers built on `fms_dl.Tensor`."""

from fms_dl.nn import functional, init, utils
from fms_dl.nn.activation import GELU, LogSoftmax, ReLU, Sigmoid, SiLU, Softmax, Tanh
from fms_dl.nn.conv import AvgPool2d, Conv2d, MaxPool2d
from fms_dl.nn.dropout import Dropout
from fms_dl.nn.embedding import Embedding
from fms_dl.nn.linear import Flatten, Identity, Linear
from fms_dl.nn.loss import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss, NLLLoss
from fms_dl.nn.module import (
    IncompatibleKeys,
    Module,
    ModuleList,
    Parameter,
    Sequential,
    StateDictError,
    load_model,
    save_model,
)
from fms_dl.nn.normalization import BatchNorm1d, BatchNorm2d, LayerNorm
from fms_dl.nn.rnn import GRU, LSTM, RNN

__all__ = [
    "GELU",
    "GRU",
    "LSTM",
    "RNN",
    "AvgPool2d",
    "BCEWithLogitsLoss",
    "BatchNorm1d",
    "BatchNorm2d",
    "Conv2d",
    "CrossEntropyLoss",
    "Dropout",
    "Embedding",
    "Flatten",
    "Identity",
    "IncompatibleKeys",
    "LayerNorm",
    "Linear",
    "LogSoftmax",
    "MSELoss",
    "MaxPool2d",
    "Module",
    "ModuleList",
    "NLLLoss",
    "Parameter",
    "ReLU",
    "Sequential",
    "SiLU",
    "Sigmoid",
    "Softmax",
    "StateDictError",
    "Tanh",
    "functional",
    "init",
    "load_model",
    "save_model",
    "utils",
]
