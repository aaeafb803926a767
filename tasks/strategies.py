"""Query strategy names, without the strategies.

Why its own module: the campaign config validates ``[query] strategy`` against these names,
and loading a config (``labelloop status``, ``init``, a config error) must not import
scikit-learn. The implementations are in :mod:`tasks.query`, which re-exports this tuple.
"""

STRATEGIES: tuple[str, ...] = (
    "least-confidence",
    "margin",
    "entropy",
    "qbc",
    "qbc-kl",
    "coreset",
    "cluster-margin",
    "density",
    "random",
)
"""Strategy names the CLI and the campaign config accept."""
