"""The report's explorer in a real headless browser (Debian's chromium through playwright).

The report stage runs in-process on the small inputs of ``tests/test_report.py`` plus a
60-image table with generated images; the page is then opened from ``file://`` at a 1,280 px
viewport. Skips when playwright or chromium is not installed (``.ci/run`` installs both).
"""
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clusterlens.config.base import parse_stage
from clusterlens.core.io import write_json, write_table
from stages import report as stage
from tests.conftest import make_image
from tests.test_report import JSONS, PARAMS, TABLES

N_IMAGES, N_TSNE = 60, 50
BLURRY = [3, 9, 21]
CLASSES = ["apple", "berry", "cherry"]


def _chromium() -> str | None:
    for path in (os.environ.get("CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium"):
        if path and Path(path).is_file():
            return path
    return None


def _images_table() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    code = np.arange(N_IMAGES) % 3
    labels = code.copy()
    labels[::7] = 3  # a fourth cluster, mostly apples and berries
    labels[5] = -1
    issue = np.zeros(N_IMAGES, bool)
    issue[[4, 11]] = True
    xy = np.c_[labels * 4.0, code * 2.0] + rng.normal(0, 0.6, (N_IMAGES, 2))
    tsne = np.where((np.arange(N_IMAGES) < N_TSNE)[:, None], xy[:, ::-1], np.nan)
    majority = {0: "apple", 1: "berry", 2: "cherry", 3: "apple", -1: ""}
    return pd.DataFrame({
        "path": [f"{CLASSES[c]}/{i:03d}.png" for i, c in enumerate(code)],
        "class": [CLASSES[c] for c in code], "cluster": labels,
        "cluster_majority_class": [majority[c] for c in labels],
        "agrees": [majority[c] == CLASSES[k] for c, k in zip(labels, code)],
        "centre_distance": np.where(labels >= 0, rng.random(N_IMAGES), np.nan),
        "pca_x": xy[:, 0], "pca_y": xy[:, 1], "tsne_x": tsne[:, 0], "tsne_y": tsne[:, 1],
        "label_quality": 0.5, "suggested_class": "cherry", "suggested_probability": 0.5,
        "is_label_issue": issue, "label_issue_rank": np.where(issue, issue.cumsum(), 0),
        "duplicate_group": -1, "outlier_score": rng.random(N_IMAGES),
        "outlier_rank": np.arange(1, N_IMAGES + 1),
        # the audit's flags: three blurry images, the most severe last
        "is_blurry": np.isin(np.arange(N_IMAGES), BLURRY), "blurry_score":
            np.where(np.isin(np.arange(N_IMAGES), BLURRY), np.arange(N_IMAGES) / N_IMAGES, 0.1),
        "is_dark": False, "dark_score": 0.0})


@pytest.fixture
def report_page(in_tmp_cwd) -> Path:
    for path, obj in JSONS.items():
        write_json(path, obj)
    for path, df in TABLES.items():
        write_table(path, df)
    table = _images_table()
    write_table("data/images.parquet", table)
    for i, (path, cls) in enumerate(zip(table["path"], table["class"])):
        Path("data/fruit", path).parent.mkdir(parents=True, exist_ok=True)
        make_image(CLASSES.index(cls), np.random.default_rng(i)).save(Path("data/fruit", path))
    stage.run(parse_stage({**PARAMS, "report": {"thumbnails": N_IMAGES, "thumbnail_px": 32}}, stage.Params))
    return Path("report/report.html").resolve()


def _shown(page, div: str) -> dict:
    """Names and point count of the visible traces, and the markers drawn, of one map."""
    return page.evaluate(f"""() => {{const d = document.getElementById('{div}');
        const v = d.data.filter(t => t.visible === true);
        return {{names: v.map(t => t.name), points: v.reduce((a, t) => a + t.x.length, 0),
                 drawn: d.querySelectorAll('.scatterlayer .point').length}};}}""")


def test_explorer_works_in_a_headless_browser(report_page, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    chromium = _chromium()
    if chromium is None:
        pytest.skip("no chromium (apt-get install chromium)")
    shots = tmp_path / "screenshots"
    shots.mkdir()
    errors = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(report_page.as_uri())
            page.wait_for_selector("#cl-map-0 .scatterlayer .point")
            page.screenshot(path=str(shots / "top.png"))
            # the page, tables included, fits a 1,280 px window
            assert page.evaluate("document.documentElement.scrollWidth") <= 1280
            assert page.locator("nav.toc a").count() == 10  # explorer + sections 1-8 and 4b

            # the t-SNE map: its sample's points, coloured by class (one trace per class)
            shown = _shown(page, "cl-map-0")
            assert shown == {"names": CLASSES, "points": N_TSNE, "drawn": N_TSNE}
            page.locator("#cl-map-0").scroll_into_view_if_needed()
            page.screenshot(path=str(shots / "map_by_class.png"))

            # hovering over a point shows its thumbnail, path, class and cluster
            point = page.locator("#cl-map-0 .scatterlayer .point").nth(3)  # by class
            box = point.bounding_box()
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            card = page.locator("#cl-card")
            card.wait_for(state="visible")
            row = int(card.get_attribute("data-row"))
            text = card.inner_text()
            table = _images_table()
            assert table["path"][row] in text and f"class: {table['class'][row]}" in text
            assert "cluster: " + ("noise" if table["cluster"][row] < 0
                                  else str(table["cluster"][row])) in text
            assert card.locator("img").get_attribute("src").startswith("data:image/webp;base64,")
            page.screenshot(path=str(shots / "hover.png"))

            # the colour switch: by cluster, each cluster named after its matched class
            page.locator("#cl-map-0 .updatemenu-button", has_text="cluster").click()
            page.wait_for_timeout(200)
            shown = _shown(page, "cl-map-0")
            assert shown["points"] == N_TSNE and shown["drawn"] == N_TSNE
            assert shown["names"][:3] == ["c0 = apple", "c1 = berry", "c2 = cherry"]
            assert shown["names"][3] == "c3 ~ apple" and shown["names"][-1] == "noise"
            page.locator("#cl-map-0 .updatemenu-button", has_text="label issue").click()
            page.wait_for_timeout(200)
            assert _shown(page, "cl-map-0")["names"] == ["no suspected issue",
                                                         "suspected label issue"]
            page.screenshot(path=str(shots / "map_by_label_issue.png"))

            # the gallery: pick a cluster and see its members; clicking a point opens its own
            page.mouse.move(5, 5)
            page.select_option("#cl-gallery-select", "c3")
            n3 = int((table["cluster"] == 3).sum())
            assert page.locator("#cl-gallery img").count() == n3
            assert page.inner_text("#cl-gallery-note") == f"showing {n3} of {n3} images"
            page.locator("#cl-gallery").scroll_into_view_if_needed()
            page.screenshot(path=str(shots / "gallery.png"))
            page.select_option("#cl-gallery-select", "issues")
            assert page.locator("#cl-gallery img").count() == 2
            # an image-quality flag: its gallery filter, most severe first, and its colouring
            page.select_option("#cl-gallery-select", "issue-blurry")
            shown = [page.locator("#cl-gallery img").nth(i).get_attribute("title")
                     for i in range(page.locator("#cl-gallery img").count())]
            assert shown == [table["path"][i] for i in BLURRY[::-1]], shown
            assert not page.locator("#cl-gallery-select option[value='issue-dark']").count()
            page.locator("#cl-map-0").scroll_into_view_if_needed()
            page.locator("#cl-map-0 .updatemenu-button", has_text="blurry").click()
            page.wait_for_timeout(200)
            assert _shown(page, "cl-map-0")["names"] == ["not blurry", "blurry"]
            page.locator("#cl-map-0").scroll_into_view_if_needed()
            page.locator("#cl-map-0 .updatemenu-button", has_text="class").click()
            page.wait_for_timeout(200)
            box = point.bounding_box()  # by class again: the point hovered above
            page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            cluster = table["cluster"][row]
            assert page.input_value("#cl-gallery-select") == ("noise" if cluster < 0
                                                              else f"c{cluster}")

            # the map switch: PCA-2D, every image
            page.select_option("#cl-map-select", "cl-map-1")
            page.wait_for_timeout(300)
            assert page.locator("#cl-map-0").is_hidden()
            assert _shown(page, "cl-map-1") == {"names": CLASSES, "points": N_IMAGES,
                                                "drawn": N_IMAGES}
            page.screenshot(path=str(shots / "pca.png"), full_page=True)
            assert page.evaluate("document.documentElement.scrollWidth") <= 1280
        finally:
            browser.close()
    assert errors == []
    assert len(list(shots.glob("*.png"))) == 6
