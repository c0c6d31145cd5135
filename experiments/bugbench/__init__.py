"""HiGen's real-bug benchmark: known bugs of ONNX Runtime, OpenVINO and TVM, each pinned to the PyPI
release it shows on and the release that fixed it, and a replay-based credit function deciding
whether a fuzzer's saved case exposes one of them. See README.md in this folder."""
