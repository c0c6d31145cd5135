"""Coverage: collectors (per test, the features hit), the manager (union, new-feature counts, CSV,
gcovr totals), the plot command. See docs/coverage.md."""
