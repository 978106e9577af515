"""``dlrun ensemble``: average the test predictions of trained models (the book's 7.3.3).

Members are the fold models of one K-fold run, or the final models of several runs trained on
the same data. Each member's inputs are prepared as in its own training (its recipe's source
and test split, its preprocessing refitted on its own training rows), its test predictions are
averaged (plain or weighted), and the recipe's loss and metrics are computed on the average
next to each member's. Importing this package stays light (TensorFlow loads when it runs).
"""

from __future__ import annotations


def ensemble(*args, **kwargs):
    """See :func:`dlrun.ensembling.core.ensemble`."""
    from dlrun.ensembling.core import ensemble as run

    return run(*args, **kwargs)


__all__ = ["ensemble"]
