"""Gymnasium environments for the hierarchy and the action decoder.

``decoder`` (action -> GenConfig), ``state`` (run-level memory shared by both levels), ``low``
(``CompilerFuzzEnv``: one step = one test) and ``high`` (``HighLevelEnv``: one step = one big
epoch, choosing the free dimensions). Import the submodules; this package imports nothing heavy.
"""
