"""Reduction, the clustering methods and their grid, metrics, selection, trees, large-N routes."""
