"""`summary` stage: unsupervised and supervised scores side by side."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clusterlens.analysis import summary
from clusterlens.config.base import parse_stage
from clusterlens.core.errors import DataError
from clusterlens.core.io import save_npy, write_json
from clusterlens.report.figures.style import matplotlib_setup
from clusterlens.report.figures.summary import plot_gap
from stages import macro_purity
from stages import summary as stage
from stages import upper_bound as ub
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
CLUSTERING_GRID = {
    "selected": {"method": "agglomerative", "point": "ward_k12", "metric": "nmi", "value": 0.7,
                 "noise_fraction": 0.0},
    "best": {"kmeans": {"point": "k8", "nmi": 0.66}, "agglomerative": {"point": "ward_k12"}},
    "kmeans": {"k4": {"k": 4, "n_clusters": 4, "nmi": 0.5},
               "k8": {"k": 8, "n_clusters": 8, "nmi": 0.66, "purity": 0.6}},
    "agglomerative": {"ward_k12": {"n_clusters": 12, "noise_fraction": 0.0, "nmi": 0.7,
                                   "purity": 0.6, "hungarian_accuracy": 0.55, "ari": 0.4}},
}
OTHERS = {"index": {"images": 240, "classes": 12, "rejected": 3, "per_class_min": 20},
          "reduce": {"variance_retained": 0.81, "variance_at_2": 0.2},
          "label_issues": {"issues": 7, "issue_fraction": 0.029},
          "neighbours": {"images_in_groups": 6, "duplicate_groups": 3}}


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


def test_headline_is_flat_short_and_picks_the_numbers_a_run_is_judged_by():
    head = summary.build_headline(clustering=CLUSTERING_GRID, upper=UPPER, **OTHERS)
    assert list(head) == list(summary.HEADLINE_KEYS) and len(head) <= 28  # 12 of them audit counts
    assert all(not isinstance(v, (dict, list)) for v in head.values())
    assert head["model"] == "agglomerative/ward_k12" and head["clusters"] == 12
    assert (head["nmi"], head["ari"], head["purity"], head["accuracy"]) == (0.7, 0.4, 0.6, 0.55)
    assert head["kmeans_k"] == 8 and head["kmeans_nmi"] == 0.66  # the best K-Means, not K=4
    assert head["upper_bound"] == 0.9 and head["gap"] == pytest.approx(0.35)
    assert (head["images"], head["classes"], head["rejected"]) == (240, 12, 3)
    assert head["variance_kept"] == 0.81 and head["noise"] == 0.0
    assert head["label_issues"] == 7 and head["near_duplicates"] == 6


def test_headline_without_a_kmeans_grid_or_an_upper_bound_has_nulls():
    clustering = {k: v for k, v in CLUSTERING_GRID.items() if k != "kmeans"}
    clustering["best"] = {"agglomerative": {"point": "ward_k12"}}
    head = summary.build_headline(clustering=clustering, upper={}, **OTHERS)
    assert head["kmeans_k"] is None and head["kmeans_nmi"] is None
    assert head["upper_bound"] is None and head["gap"] is None and head["nmi"] == 0.7


def test_gap_plot_draws_missing_scores_as_gaps(tmp_path):
    matplotlib_setup()
    plot_gap(summary.build_summary(CLUSTERING, UPPER, PURITY), tmp_path / "gap.png")
    assert (tmp_path / "gap.png").stat().st_size > 1000


def test_missing_input_names_the_file(in_tmp_cwd):
    with pytest.raises(DataError, match="metrics/clustering.json"):
        stage.run(parse_stage({}, stage.Params))


def test_the_whole_chain_on_generated_data(data):  # noqa: F811
    raw, pca, y, names = data
    fam = pd.read_csv("data/macro/class_groups.csv")["g4"].to_numpy()[y]  # K-Means = families
    save_npy("data/clusters/kmeans/k4.npy", fam.astype(np.int64))
    macro_purity.run(parse_stage(PARAMS, macro_purity.Params))
    ub.run(parse_stage(PARAMS, ub.Params))
    write_json("metrics/clustering.json", CLUSTERING)
    for name, metrics in OTHERS.items():
        write_json(stage.IN_HEADLINE[name], metrics)
    out = stage.run(parse_stage(PARAMS, stage.Params))
    assert out["g4"]["kmeans_best_purity"] == pytest.approx(1.0)
    up = json.load(open(ub.OUT_METRICS))
    assert out["fine"]["supervised_test_accuracy"] == up["best"]["test_accuracy"]
    assert out["g4"]["supervised_test_accuracy"] == up["macro"]["g4"]["test_accuracy"]
    assert json.load(open(stage.OUT_METRICS)) == out
    assert Path(stage.OUT_PNG).is_file()
    head = json.load(open(stage.OUT_HEADLINE))
    assert head["upper_bound"] == up["best"]["test_accuracy"] and head["images"] == 240
    assert head["model"] == "agglomerative/ward_k12" and head["label_issues"] == 7


def test_a_missing_headline_input_names_the_file(in_tmp_cwd):
    write_json("metrics/clustering.json", CLUSTERING)
    write_json("metrics/upper_bound.json", UPPER)
    write_json("metrics/macro_purity.json", PURITY)
    write_json("metrics/index.json", OTHERS["index"])
    with pytest.raises(DataError, match="metrics/reduce.json"):
        stage.run(parse_stage({}, stage.Params))
