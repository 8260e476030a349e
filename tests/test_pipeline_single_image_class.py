"""End to end: a class folder holding one image, through every stage, in a copy of the shared
repository (tests/conftest.py). A file of its own so that pytest-xdist can run it beside the
other end-to-end files."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests.conftest import E2E_IMAGES, e2e_copy, ran_all, sh

pytestmark = pytest.mark.slow


def test_a_single_image_class_runs_through_summary_and_report(e2e_base, tmp_path):
    """A class folder holding one image: every stage runs; the supervised bound and the label
    issues leave that class out and name it; the summary and the report are written."""
    from tests.conftest import make_image

    copy = e2e_copy(e2e_base, tmp_path / "copy")
    (copy.photos / "lonely").mkdir()
    make_image(4, np.random.default_rng(9), (48, 36)).save(copy.photos / "lonely" / "000.jpg")
    out = sh(copy.repo, "dvc", "repro")
    assert {"upper_bound", "label_issues", "summary", "report"} <= set(ran_all(out))
    read = lambda rel: json.loads((copy.repo / rel).read_text())  # noqa: E731
    upper, issues = read("metrics/upper_bound.json"), read("metrics/label_issues.json")
    assert upper["excluded_classes"] == [
        {"class": "lonely", "images": 1, "reason": "fewer than 2 images: a stratified split "
                                                   "needs 2"}]
    assert (upper["split"]["classes"], upper["split"]["images"]) == (3, E2E_IMAGES)
    assert [e["class"] for e in issues["excluded_classes"]] == ["lonely"]
    assert (issues["images"], issues["scored_images"]) == (E2E_IMAGES + 1, E2E_IMAGES)
    assert read("metrics/summary.json")["fine"]["supervised_test_accuracy"] is not None
    table = pd.read_parquet(copy.repo / "data/label_issues.parquet")
    assert table.loc[table["class"] == "lonely", "label_quality"].isna().all()
    assert (copy.repo / "report/report.md").is_file()
    assert (copy.repo / "report/report.html").is_file()
