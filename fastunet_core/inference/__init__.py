"""Running a model over a raster: engines (PyTorch, ONNX Runtime), tile source, predict, batches."""
