"""Model compute from the ONNX graph, and ONNX Runtime's own float32 matmul rate as the ceiling."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, shape_inference


def graph_gflops(model_path: Path) -> dict:
    """GFLOPs of one forward pass (2 x multiply-accumulates of Conv, ConvTranspose, MatMul and Gemm; the
    rest, pooling, resize, activations and decoding, is under 1% for convolutional detectors)."""
    model = shape_inference.infer_shapes(onnx.load(str(model_path)))
    graph = model.graph
    shapes = {}
    for value in [*graph.value_info, *graph.input, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = [d.dim_value for d in dims]
    weights = {init.name: list(init.dims) for init in graph.initializer}
    for node in graph.node:  # weights behind a DequantizeLinear or Cast keep their shape
        if node.op_type in ("DequantizeLinear", "Cast", "Identity") and node.input[0] in weights:
            weights[node.output[0]] = weights[node.input[0]]
    total, per_op = 0.0, {}
    for node in graph.node:
        flops = 0.0
        if node.op_type in ("Conv", "ConvTranspose") and node.input[1] in weights:
            w = weights[node.input[1]]
            # each output (Conv) or input (ConvTranspose) element meets prod(w[1:]) weights
            grid = shapes.get(node.output[0]) if node.op_type == "Conv" else shapes.get(node.input[0])
            if grid and all(grid):
                flops = 2.0 * float(np.prod(grid)) * float(np.prod(w[1:]))
        elif node.op_type in ("MatMul", "Gemm"):
            a, out = shapes.get(node.input[0]), shapes.get(node.output[0])
            if a and out and all(a) and all(out):
                flops = 2.0 * float(np.prod(out)) * a[-1]
        total += flops
        per_op[node.op_type] = per_op.get(node.op_type, 0.0) + flops
    batch = shapes[graph.input[0].name][0] or 1
    return {
        "gflops_per_tile": total / batch / 1e9,
        "by_op": {k: round(v / batch / 1e9, 3) for k, v in per_op.items() if v},
    }


def matmul_gflops_per_s(threads: int, n: int = 2048, repeats: int = 20) -> float:
    """ONNX Runtime's float32 MatMul of two n x n matrices: the practical ceiling of this CPU."""
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [n, n])
    c = helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "matmul", [a, b], [c])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {"a": rng.random((n, n), np.float32), "b": rng.random((n, n), np.float32)}
    sess.run(None, feeds)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sess.run(None, feeds)
        times.append(time.perf_counter() - start)
    return 2.0 * n**3 / float(np.median(times)) / 1e9


def bare_ms_per_tile(model_path: Path, tiles: np.ndarray, threads: int) -> float:
    """Median ONNX Runtime time per tile, batch 1, over pre-read tiles (no I/O)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    sess.run(None, {name: tiles[:1]})
    times = []
    for tile in tiles:
        start = time.perf_counter()
        sess.run(None, {name: tile[None]})
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1000
