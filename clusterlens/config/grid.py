"""Which params key holds each clustering method's grid, and the model that checks its values."""
from __future__ import annotations

from clusterlens.config.agglomerative import AgglomerativeParams
from clusterlens.config.base import Section
from clusterlens.config.dbscan import DBSCANParams
from clusterlens.config.gmm import GMMParams
from clusterlens.config.hdbscan import HDBSCANParams
from clusterlens.config.kmeans import KMeansParams
from clusterlens.config.nmf import NMFParams

# method -> (section, key, section model): a grid stage's one value is typed and checked by
# the model, as a one-value grid (:func:`clusterlens.config.base.grid_value`)
GRID_KEYS: dict[str, tuple[str, str, type[Section]]] = {
    "kmeans": ("kmeans", "k", KMeansParams), "gmm": ("gmm", "k", GMMParams),
    "nmf": ("nmf", "k", NMFParams), "dbscan": ("dbscan", "eps_percentile", DBSCANParams),
    "hdbscan": ("hdbscan", "min_cluster_size", HDBSCANParams),
    "agglomerative": ("agglomerative", "linkage", AgglomerativeParams)}
