"""clusterlens: how a folder of labelled images groups by itself.

The library behind the DVC stages in ``stages/``: pure functions by domain (images, backbones
and features, the feature store, reduction, clustering, metrics, macro-categories, the
supervised bound, plots, the report). It never reads ``params.yaml`` and never knows the
pipeline's file paths. This file holds no code, so that no stage depends on it.
"""
