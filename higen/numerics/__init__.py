"""Numerics: edge-value inputs, per-operator NaN/Inf/overflow/underflow counts and their report,
and localisation of a finding to its first diverging node and culprit optimization.
See docs/numerics.md. Importing this package is cheap (the generator worker imports ``edge``)."""
