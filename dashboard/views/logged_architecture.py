"""The architecture diagram's row for a layer of a model logged from the user's own loop.

The built-in nets' rows are worked out from their config (views/run_detail_view.architecture_rows);
a logged model says each layer's output shape and activation itself (training/own_loop/layer_capture.py).
"""
import numpy as np

NO_ACTIVATION = "none"


def logged_row(layer, last: bool) -> dict:
    """name, output shape, units, parameter count and a short detail line, as architecture_rows gives them."""
    params = int(np.prod(layer.weight_shape)) + layer.units
    act = layer.activation if layer.activation and layer.activation != NO_ACTIVATION else "no activation"
    if layer.kind == "conv":
        k = "×".join(map(str, layer.weight_shape[2:]))
        detail = f"conv {k}, {act}"
    else:
        detail = f"dense {layer.weight_shape[1]}→{layer.units}<br>{act}"
    if last and act == "no activation":
        detail = detail.replace("no activation", "class scores")
    return {"name": layer.name, "shape": "×".join(map(str, layer.out_shape)), "units": int(np.prod(layer.out_shape)),
            "params": params, "detail": detail}
