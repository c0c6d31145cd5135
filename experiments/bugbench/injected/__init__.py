"""The injected tier: defects planted into ONNX Runtime for bugbench runs only (see defects.py)."""
