"""Matplotlib figures, one module per domain, kept apart from the computations they draw."""
