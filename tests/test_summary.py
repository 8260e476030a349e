"""`summary` stage: unsupervised and supervised scores side by side."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clusterlens import summary
from clusterlens.errors import DataError
from clusterlens.io import save_npy, write_json
from clusterlens.plotting import matplotlib_setup
from clusterlens.plots.summary import plot_gap
from stages import macro_purity, summary as stage, upper_bound as ub
from tests.test_upper_bound import PARAMS, data  # noqa: F401  (fixture)

CLUSTERING = {
    "selected": {"method": "agglomerative", "point": "ward_k12", "metric": "nmi", "value": 0.7},
    "agglomerative": {"ward_k12": {"nmi": 0.7, "purity": 0.6, "hungarian_accuracy": 0.55,
                                   "ari": 0.4}},
}
UPPER = {"split": {"classes": 12}, "best": {"config": "lr_C1", "test_accuracy": 0.9,
                                            "macro_f1": 0.88},
         "macro": {"g4": {"test_accuracy": 0.97}}}
PURITY = {"targets": {"g4": 4, "g2": 2, "fine": 12},
          "best": {"g4": {"k": 4, "purity": 0.95}, "g2": {"k": 2, "purity": 0.99},
                   "fine": {"k": 12, "purity": 0.65}}}


def test_build_summary_is_shallow_and_puts_scores_side_by_side():
    out = summary.build_summary(CLUSTERING, UPPER, PURITY)
    fine = out["fine"]
    assert fine["unsupervised_model"] == "agglomerative/ward_k12"
    assert fine["unsupervised_hungarian_accuracy"] == 0.55 and fine["unsupervised_ari"] == 0.4
    assert fine["supervised_test_accuracy"] == 0.9
    assert fine["gap_vs_hungarian_accuracy"] == pytest.approx(0.35)
    assert fine["kmeans_best_purity"] == 0.65 and fine["kmeans_best_k"] == 12
    assert out["g4"] == {"groups": 4, "kmeans_best_purity": 0.95, "kmeans_best_k": 4,
                         "supervised_test_accuracy": 0.97, "gap": pytest.approx(0.02),
                         "random_baseline": 0.25}
    assert out["g2"]["supervised_test_accuracy"] is None and out["g2"]["gap"] is None
    for section in out.values():  # two levels at most: `dvc metrics show` stays readable
        assert all(not isinstance(v, (dict, list)) for v in section.values())


def test_gap_plot_draws_missing_scores_as_gaps(tmp_path):
    matplotlib_setup()
    plot_gap(summary.build_summary(CLUSTERING, UPPER, PURITY), tmp_path / "gap.png")
    assert (tmp_path / "gap.png").stat().st_size > 1000


def test_missing_input_names_the_file(in_tmp_cwd):
    with pytest.raises(DataError, match="metrics/clustering.json"):
        stage.run({})


def test_the_whole_chain_on_generated_data(data):  # noqa: F811
    raw, pca, y, names = data
    fam = pd.read_csv("data/macro/class_groups.csv")["g4"].to_numpy()[y]  # K-Means = families
    save_npy("data/clusters/kmeans/k4.npy", fam.astype(np.int64))
    macro_purity.run(PARAMS)
    ub.run(PARAMS)
    write_json("metrics/clustering.json", CLUSTERING)
    out = stage.run(PARAMS)
    assert out["g4"]["kmeans_best_purity"] == pytest.approx(1.0)
    up = json.load(open(ub.OUT_METRICS))
    assert out["fine"]["supervised_test_accuracy"] == up["best"]["test_accuracy"]
    assert out["g4"]["supervised_test_accuracy"] == up["macro"]["g4"]["test_accuracy"]
    assert json.load(open(stage.OUT_METRICS)) == out
    assert Path(stage.OUT_PNG).is_file()
