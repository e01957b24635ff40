"""What a model graph may hold: the allowlists of module types, functions and tensor methods, and how an
argument is written as JSON and read back.

A run from the user's own loop logs its model as data (training.own_loop.model_graph writes it,
training.nets.graph_model rebuilds it): torch.fx's graph of the model, where every module is one of
MODULES with its constructor settings, every function one of FUNCTIONS by qualified name, and every
tensor method one of METHODS.  Reading it back imports, evaluates and unpickles nothing from the file:
a name is looked up in these tables, and one that is not there refuses the whole model.  Both sides use
this module, so what can be written is exactly what can be read.
"""
import builtins
import inspect
import math
import operator

import torch
import torch.nn.functional as F
from torch import nn

# Module type -> (class, the settings its constructor takes, read back from the module's attributes of the
# same name).  "bias" is a flag: whether the module has a bias parameter.  Containers (Sequential, ModuleList)
# never appear: tracing flattens them into their members.
_FLAGS = ("bias",)
_BATCH_NORM = tuple(inspect.signature(nn.BatchNorm2d).parameters)[:5]  # num_features, eps, momentum, affine, tracking
MODULES = {
    "Linear": (nn.Linear, ("in_features", "out_features", "bias")),
    "Conv2d": (nn.Conv2d, ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
                           "groups", "bias", "padding_mode")),
    "LayerNorm": (nn.LayerNorm, ("normalized_shape", "eps", "elementwise_affine", "bias")),
    "BatchNorm1d": (nn.BatchNorm1d, _BATCH_NORM), "BatchNorm2d": (nn.BatchNorm2d, _BATCH_NORM),
    "ReLU": (nn.ReLU, ()), "GELU": (nn.GELU, ("approximate",)), "Tanh": (nn.Tanh, ()),
    "Sigmoid": (nn.Sigmoid, ()), "SiLU": (nn.SiLU, ()), "ReLU6": (nn.ReLU6, ()), "Mish": (nn.Mish, ()),
    "LeakyReLU": (nn.LeakyReLU, ("negative_slope",)), "ELU": (nn.ELU, ("alpha",)),
    "Softplus": (nn.Softplus, ("beta", "threshold")),
    "Dropout": (nn.Dropout, ("p",)), "Dropout1d": (nn.Dropout1d, ("p",)), "Dropout2d": (nn.Dropout2d, ("p",)),
    "AlphaDropout": (nn.AlphaDropout, ("p",)), "Identity": (nn.Identity, ()),
    "Flatten": (nn.Flatten, ("start_dim", "end_dim")),
    "MaxPool2d": (nn.MaxPool2d, ("kernel_size", "stride", "padding", "dilation", "ceil_mode")),
    "AvgPool2d": (nn.AvgPool2d, ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad")),
    "AdaptiveAvgPool2d": (nn.AdaptiveAvgPool2d, ("output_size",)),
    "AdaptiveMaxPool2d": (nn.AdaptiveMaxPool2d, ("output_size",)),
    "Softmax": (nn.Softmax, ("dim",)), "LogSoftmax": (nn.LogSoftmax, ("dim",)),
}
_TYPE_NAMES = {cls: name for name, (cls, _) in MODULES.items()}

_TORCH = ("relu", "tanh", "sigmoid", "flatten", "cat", "stack", "add", "sub", "mul", "div", "matmul", "neg",
          "exp", "abs", "sqrt", "clamp", "softmax", "log_softmax", "mean", "sum", "amax", "transpose",
          "reshape", "squeeze", "unsqueeze", "permute", "relu_", "tanh_", "sigmoid_")
_FUNCTIONAL = ("relu", "relu_", "gelu", "tanh", "sigmoid", "silu", "elu", "leaky_relu", "relu6", "softplus",
               "mish", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d", "log_softmax",
               "softmax", "dropout", "dropout1d", "dropout2d", "layer_norm", "linear", "conv2d", "pad")
_OPERATOR = ("add", "sub", "mul", "truediv", "floordiv", "neg", "getitem", "matmul", "pow", "iadd", "imul")
# Qualified name -> the function itself: a name read from a file is only ever a key into this table.
FUNCTIONS = ({f"torch.{n}": getattr(torch, n) for n in _TORCH}
             | {f"torch.nn.functional.{n}": getattr(F, n) for n in _FUNCTIONAL}
             | {f"operator.{n}": getattr(operator, n) for n in _OPERATOR}
             | {"builtins.getattr": builtins.getattr})
_FUNCTION_NAMES = {id(fn): name for name, fn in FUNCTIONS.items()}
# getattr reads only these attributes of a tensor (x.shape[0] traces as getattr(x, "shape")).
ATTRIBUTES = frozenset({"shape", "ndim", "dtype"})
METHODS = frozenset({"view", "reshape", "flatten", "relu", "sigmoid", "tanh", "size", "mean", "sum", "amax",
                     "permute", "transpose", "contiguous", "squeeze", "unsqueeze", "softmax", "log_softmax",
                     "add", "sub", "mul", "div", "neg", "float", "clamp", "relu_", "sigmoid_", "tanh_", "exp",
                     "abs", "sqrt", "pow", "matmul", "dim"})
DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "int64": torch.int64}


class GraphFormatError(ValueError):
    """A graph that holds something outside the allowlists, or is not what this format writes; one line."""


def module_type(module: nn.Module) -> str:
    """The allowlisted type name of a module; GraphFormatError naming it if there is none."""
    name = _TYPE_NAMES.get(type(module))
    if name is None:
        raise GraphFormatError(f"module type {type(module).__name__} is not one the model graph can describe")
    return name


def module_settings(module: nn.Module) -> dict:
    """The constructor settings of an allowlisted module, as JSON values."""
    _, keys = MODULES[module_type(module)]
    return {k: (getattr(module, k) is not None if k in _FLAGS else encode(getattr(module, k))) for k in keys}


def function_name(fn) -> str:
    if (name := _FUNCTION_NAMES.get(id(fn))) is None:
        raise GraphFormatError(f"function {getattr(fn, '__module__', '?')}.{getattr(fn, '__name__', fn)} is not one "
                               f"the model graph can describe")
    return name


def encode(value, node_type=None):
    """An argument as JSON: numbers, strings, None and bools as they are; a node, tuple, list, slice, dtype,
    or non-finite float as a one-key object.  `node_type` is torch.fx.Node (None: no nodes expected)."""
    if node_type is not None and isinstance(value, node_type):
        return {"node": value.name}
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"float": repr(value)}
    if isinstance(value, (tuple, list, torch.Size)):
        return {"tuple" if not isinstance(value, list) else "list": [encode(v, node_type) for v in value]}
    if isinstance(value, slice):
        return {"slice": [encode(v, node_type) for v in (value.start, value.stop, value.step)]}
    if isinstance(value, torch.dtype) and (name := str(value).removeprefix("torch.")) in DTYPES:
        return {"dtype": name}
    raise GraphFormatError(f"argument {type(value).__name__} {str(value)[:40]!r} is not one the model graph can hold")


class Ref:
    """A read-back reference to an earlier node's value."""
    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name


def decode(value, known: set, depth: int = 0):
    """encode's inverse; a node may only refer to one defined before it (`known`).  GraphFormatError otherwise."""
    if depth > 8:
        raise GraphFormatError("an argument is nested more than 8 deep")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        raise GraphFormatError("a bare JSON list: tuples and lists are written as {\"tuple\": [...]}")
    if not isinstance(value, dict) or len(value) != 1:
        raise GraphFormatError(f"argument {str(value)[:60]!r} is not one the model graph writes")
    (kind, inner), = value.items()
    if kind == "node":
        if inner not in known:
            raise GraphFormatError(f"an argument refers to node {str(inner)[:40]!r}, which no earlier node defines")
        return Ref(inner)
    if kind in ("tuple", "list", "slice") and isinstance(inner, list):
        items = [decode(v, known, depth + 1) for v in inner]
        if kind == "slice":
            if len(items) != 3:
                raise GraphFormatError("a slice has three parts")
            return slice(*items)
        return tuple(items) if kind == "tuple" else items
    if kind == "dtype" and inner in DTYPES:
        return DTYPES[inner]
    if kind == "float" and inner in ("inf", "-inf", "nan"):
        return float(inner)
    raise GraphFormatError(f"argument {str(value)[:60]!r} is not one the model graph writes")
