"""Doors to the ecosystem: Keras models and notebooks in; ONNX, Keras and
TorchScript out; runs and studies logged to MLflow and TensorBoard.

Each backend is an optional extra, imported only inside the functions that use it.
"""
