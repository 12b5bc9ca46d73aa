"""Field runtime: score imagery with an exported ONNX model. numpy, onnxruntime and GDAL only; never torch."""
