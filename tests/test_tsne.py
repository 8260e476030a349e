"""t-SNE: seeded, sampled, and its params checked."""
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.cluster.hierarchy import fcluster

from clusterlens import clustering as cluster, selection as clustering, composition, tsne
from clusterlens.common import DataError, ParamError, save_npy, write_table
from tests.conftest import make_tree



def test_tsne_is_seeded_and_samples(in_tmp_cwd):
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(c, 0.3, (30, 6)) for c in (0, 5)]).astype(np.float32)
    save_npy("data/pca.npy", X)
    params = {"seed": 3, "tsne": {"sample": 40, "perplexity": 30, "max_iter": 250}}
    assert tsne.run(params) == {"points": 40}
    a = np.load("data/tsne.npz")
    assert a["rows"].shape == (40,) and np.all(np.diff(a["rows"]) > 0)
    assert a["embedding"].shape == (40, 2)
    first = a["embedding"].copy()
    tsne.run(params)
    np.testing.assert_array_equal(np.load("data/tsne.npz")["embedding"], first)
    np.testing.assert_array_equal(tsne.sample_rows(10, 40, 0), np.arange(10))
    with pytest.raises(ParamError, match="tsne.perplexity"):
        tsne.run({**params, "tsne": {**params["tsne"], "perplexity": -1}})
