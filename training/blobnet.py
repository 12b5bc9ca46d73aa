"""A reference detector in the ordnance ONNX contract that finds bright blobs deterministically.

It has no weights: it exists to test and benchmark the field runtime (tiling, seam merge, georeferencing,
writers) where a trained model's behaviour would blur what is measured.
"""

from __future__ import annotations

import numpy as np


def blob_model_bytes(tile_px: int, *, batch: int = 1, k: int = 64, radius_px: float = 4.0, card=None) -> bytes:
    """A deterministic ONNX detector in the ordnance contract that finds bright blobs.

    uint8 (N, 3, S, S) -> grey -> 3x3 mean -> local maxima (5x5 max-pool) -> top-k. Each peak becomes a
    box of side 2 * radius_px centred on the peak pixel's centre; score = grey level / 255; label 0.
    """
    import onnx
    from onnx import TensorProto, helper
    from ordnance.inference.card import CARD_KEY, ModelCard

    card = card or ModelCard(
        class_names=("ap_mine",),
        tile_size_px=tile_px,
        gsd_m=0.01,
        overlap_px=64,
        batch_size=batch,
        max_detections=k,
        model_name="blobnet",
    )
    s = tile_px

    def const(name, value, dtype=TensorProto.INT64):
        array = np.asarray(value)
        return helper.make_node(
            "Constant", [], [name], value=helper.make_tensor(name, dtype, array.shape, array.ravel().tolist())
        )

    nodes = [
        helper.make_node("Cast", ["images"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["x", "axis1"], ["grey"], keepdims=1),
        helper.make_node(
            "AveragePool", ["grey"], ["smooth"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1
        ),
        helper.make_node("MaxPool", ["smooth"], ["localmax"], kernel_shape=[5, 5], pads=[2, 2, 2, 2]),
        helper.make_node("Equal", ["smooth", "localmax"], ["is_peak"]),
        helper.make_node("Cast", ["is_peak"], ["peak_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["peak_f", "smooth"], ["peaks"]),
        helper.make_node("Reshape", ["peaks", "flat_shape"], ["flat"]),
        helper.make_node("TopK", ["flat", "k"], ["values", "index"], axis=1, sorted=1),
        helper.make_node("Div", ["values", "c255"], ["scores"]),
        helper.make_node("Div", ["index", "side"], ["row"]),
        helper.make_node("Mod", ["index", "side"], ["col"]),
        helper.make_node("Cast", ["row"], ["row_f"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["col"], ["col_f"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["col_f", "lo"], ["x0"]),
        helper.make_node("Add", ["row_f", "lo"], ["y0"]),
        helper.make_node("Add", ["col_f", "hi"], ["x1"]),
        helper.make_node("Add", ["row_f", "hi"], ["y1"]),
        *[helper.make_node("Unsqueeze", [v, "axis2"], [v + "_u"]) for v in ("x0", "y0", "x1", "y1")],
        helper.make_node("Concat", ["x0_u", "y0_u", "x1_u", "y1_u"], ["boxes"], axis=2),
        helper.make_node("Mul", ["index", "zero"], ["labels"]),
        const("axis1", [1]),
        const("axis2", [2]),
        const("flat_shape", [batch, s * s]),
        const("k", [k]),
        const("side", np.array(s)),
        const("zero", np.array(0)),
        const("c255", np.array(255.0, np.float32), TensorProto.FLOAT),
        const("lo", np.array(0.5 - radius_px, np.float32), TensorProto.FLOAT),
        const("hi", np.array(0.5 + radius_px, np.float32), TensorProto.FLOAT),
    ]
    nodes = [n for n in nodes if n.op_type == "Constant"] + [n for n in nodes if n.op_type != "Constant"]
    graph = helper.make_graph(
        nodes,
        "blobnet",
        [helper.make_tensor_value_info("images", TensorProto.UINT8, [batch, 3, s, s])],
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [batch, k, 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, k]),
            helper.make_tensor_value_info("labels", TensorProto.INT64, [batch, k]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    helper.set_model_props(model, {CARD_KEY: card.to_json()})
    onnx.checker.check_model(model)
    return model.SerializeToString()
