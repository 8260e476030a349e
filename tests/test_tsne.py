"""t-SNE: seeded, sampled, and its params checked."""
import numpy as np
import pytest

from clusterlens.clustering import tsne
from clusterlens.config.base import parse_section, parse_stage
from clusterlens.config.tsne import TSNEParams
from clusterlens.core.errors import ParamError
from clusterlens.core.io import save_npy
from stages import tsne as tsne_stage


def test_tsne_is_seeded_and_samples(in_tmp_cwd):
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(c, 0.3, (30, 6)) for c in (0, 5)]).astype(np.float32)
    save_npy("data/pca.npy", X)
    params = {"seed": 3, "tsne": {"sample": 40, "perplexity": 30, "max_iter": 250}}
    assert tsne_stage.run(parse_stage(params, tsne_stage.Params)) == {"points": 40}
    a = np.load("data/tsne.npz")
    assert a["rows"].shape == (40,) and np.all(np.diff(a["rows"]) > 0)
    assert a["embedding"].shape == (40, 2)
    first = a["embedding"].copy()
    tsne_stage.run(parse_stage(params, tsne_stage.Params))
    np.testing.assert_array_equal(np.load("data/tsne.npz")["embedding"], first)
    np.testing.assert_array_equal(tsne.sample_rows(10, 40, 0), np.arange(10))
    np.testing.assert_array_equal(
        np.load("data/tsne.npz")["embedding"], tsne.embed(X[tsne.sample_rows(60, 40, 3)], 30.0, 3,
                                                          250))
    with pytest.raises(ParamError, match="tsne.perplexity"):
        tsne_stage.run(parse_stage({**params, "tsne": {**params["tsne"], "perplexity": -1}}, tsne_stage.Params))
    save_npy("data/pca.npy", X[:3])
    with pytest.raises(ParamError, match="tsne.sample.*at least 4 points"):
        tsne_stage.run(parse_stage(params, tsne_stage.Params))
    with pytest.raises(ValueError, match="at least 4 points"):
        tsne.embed(X[:3], 30.0, 0)


@pytest.mark.parametrize("override, key", [
    ({"sample": 3}, "tsne.sample"), ({"perplexity": 0}, "tsne.perplexity"),
    ({"perplexity": True}, "tsne.perplexity"), ({"max_iter": 100}, "tsne.max_iter"),
    ({"samples": 10}, "tsne.samples"),
])
def test_tsne_section_is_validated(override, key):
    section = {"sample": 40, "perplexity": 30, "max_iter": 250, **override}
    with pytest.raises(ParamError) as err:
        parse_section({"tsne": section}, "tsne", TSNEParams)
    assert err.value.key == key
