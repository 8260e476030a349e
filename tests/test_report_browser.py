"""The report's explorer in a real headless browser (Debian's chromium through playwright).

The report stage runs in-process on the small inputs of ``tests/test_report.py`` plus a
60-image table with generated images (a few of them already corrected by the corrections file
in force, :data:`IN_FORCE`); the page is then opened from ``file://`` at a 1,280 px viewport.
Skips when playwright or chromium is not installed (``.ci/run`` installs both).

:func:`download_corrections` (the page's corrections as CSV text) and
:func:`check_corrections_csv` (the corrections file contract) serve the last test, which runs the
whole loop on the end-to-end repository's own report: select, act, download, then `dvc repro`
with the downloaded file as the corrections file, and the index read back.
"""
import csv
import io
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clusterlens.config.base import parse_stage
from clusterlens.core.io import write_json, write_table
from stages import report as stage
from tests.conftest import e2e_copy, make_image, sh
from tests.test_report import JSONS, PARAMS, TABLES

N_IMAGES, N_TSNE = 60, 50
BLURRY = [3, 9, 21]
CLASSES = ["apple", "berry", "cherry"]
# The corrections file in force when the report was built: an image excluded (so no longer in
# the table), one kept (its note needs CSV quoting), two relabelled (rows 8 and 13 of the table)
IN_FORCE = pd.DataFrame({
    "path": ["apple/099.png", "berry/010.png", "cherry/008.png", "berry/013.png"],
    "action": ["exclude", "keep", "relabel", "relabel"], "class": ["", "", "berry", "apple"],
    "note": ["blurred scan", 'fine, "really"\nchecked twice', "earlier review", ""]})
ISSUES = {4: "cherry", 11: "apple"}  # suspected label issues -> suggested class
DUPLICATES = [20, 23]  # one near-duplicate group; 23 has more pixels


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
    issue = np.isin(np.arange(N_IMAGES), list(ISSUES))
    xy = np.c_[labels * 4.0, code * 2.0] + rng.normal(0, 0.6, (N_IMAGES, 2))
    tsne = np.where((np.arange(N_IMAGES) < N_TSNE)[:, None], xy[:, ::-1], np.nan)
    majority = {0: "apple", 1: "berry", 2: "cherry", 3: "apple", -1: ""}
    given = [CLASSES[c] for c in code]  # the folder's class
    paths = [f"{g}/{i:03d}.png" for i, g in enumerate(given)]
    fixes = IN_FORCE.set_index("path")
    cls = [fixes.loc[p, "class"] if p in fixes.index and fixes.loc[p, "action"] == "relabel"
           else g for p, g in zip(paths, given)]
    dup = np.where(np.isin(np.arange(N_IMAGES), DUPLICATES), 0, -1)
    return pd.DataFrame({
        "path": paths, "class": cls, "given_class": given,
        "correction": [fixes.loc[p, "action"] if p in fixes.index else "" for p in paths],
        "width": np.where(np.arange(N_IMAGES) == DUPLICATES[1], 80, 40),
        "height": np.where(np.arange(N_IMAGES) == DUPLICATES[1], 64, 32), "cluster": labels,
        "cluster_majority_class": [majority[c] for c in labels],
        "agrees": [majority[c] == CLASSES[k] for c, k in zip(labels, code)],
        "centre_distance": np.where(labels >= 0, rng.random(N_IMAGES), np.nan),
        "pca_x": xy[:, 0], "pca_y": xy[:, 1], "tsne_x": tsne[:, 0], "tsne_y": tsne[:, 1],
        "label_quality": 0.5, "suggested_class": [ISSUES.get(i, c) for i, c in enumerate(cls)],
        "suggested_probability": 0.5,
        "is_label_issue": issue, "label_issue_rank": np.where(issue, issue.cumsum(), 0),
        "duplicate_group": dup, "outlier_score": rng.random(N_IMAGES),
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
    a, b = DUPLICATES
    write_table("data/near_duplicates.csv", pd.DataFrame({
        "row_a": [a], "row_b": [b], "path_a": [table["path"][a]], "path_b": [table["path"][b]],
        "class_a": [table["class"][a]], "class_b": [table["class"][b]], "kind": ["resized"],
        "score": [0.98], "similarity": [0.98], "coverage": [1.0], "label_conflict": [False],
        "group": [0]}))
    given = dict(zip(table["path"], table["given_class"]))
    write_table("data/corrections_applied.csv", IN_FORCE.assign(
        split="", given_class=[given.get(p, p.split("/")[0]) for p in IN_FORCE["path"]],
        status="applied"))
    for i, (path, cls) in enumerate(zip(table["path"], table["given_class"])):
        Path("data/fruit", path).parent.mkdir(parents=True, exist_ok=True)
        make_image(CLASSES.index(cls), np.random.default_rng(i)).save(Path("data/fruit", path))
    report = {"thumbnails": N_IMAGES, "thumbnail_px": 32, "max_points": 1000}
    stage.run(parse_stage({**PARAMS, "report": report}, stage.Params))
    return Path("report/report.html").resolve()


def _shown(page, div: str) -> dict:
    """Names and point count of the visible traces of one map, and the trace types drawn."""
    return page.evaluate(f"""() => {{const d = document.getElementById('{div}');
        const v = d.data.filter(t => t.visible === true);
        return {{names: v.map(t => t.name), points: v.reduce((a, t) => a + t.x.length, 0),
                 types: [...new Set(d._fullData.map(t => t.type))]}};}}""")


def _colour_by(page, div: str, label: str, first: str) -> None:
    """Choose a colouring for the map shown and wait for its traces (the first named
    ``first``)."""
    page.select_option("#cl-colour-select", label=label)
    page.wait_for_function(f"document.getElementById('{div}').data[0].name === {first!r}")


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
            page.wait_for_function("window.CL_READY === true")
            page.screenshot(path=str(shots / "top.png"))
            # the page, tables included, fits a 1,280 px window
            assert page.evaluate("document.documentElement.scrollWidth") <= 1280
            assert page.locator("nav.toc a").count() == 10  # explorer + sections 1-8 and 4b

            # the t-SNE map: its sample's points, coloured by class (one WebGL trace per class)
            shown = _shown(page, "cl-map-0")
            assert shown == {"names": CLASSES, "points": N_TSNE, "types": ["scattergl"]}
            page.evaluate("document.getElementById('cl-map-0').scrollIntoView({block: 'start'})")
            page.screenshot(path=str(shots / "map_by_class.png"))

            # hovering over a point shows its thumbnail, path, class and cluster
            table = _images_table()
            spot = _map_xy(page, "cl-map-0", table.tsne_x[3], table.tsne_y[3])
            page.mouse.move(*spot)
            card = page.locator("#cl-card")
            card.wait_for(state="visible")
            row = int(card.get_attribute("data-row"))
            text = card.inner_text()
            assert table["path"][row] in text and f"class: {table['class'][row]}" in text
            assert "cluster: " + ("noise" if table["cluster"][row] < 0
                                  else str(table["cluster"][row])) in text
            assert card.locator("img").get_attribute("src").startswith("data:image/webp;base64,")
            page.screenshot(path=str(shots / "hover.png"))

            # the colour switch: by cluster, each cluster named after its matched class
            _colour_by(page, "cl-map-0", "cluster", "c0 = apple")
            shown = _shown(page, "cl-map-0")
            assert shown["points"] == N_TSNE and shown["types"] == ["scattergl"]
            assert shown["names"][:3] == ["c0 = apple", "c1 = berry", "c2 = cherry"]
            assert shown["names"][3] == "c3 ~ apple" and shown["names"][-1] == "noise"
            _colour_by(page, "cl-map-0", "label issue", "no suspected issue")
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
            _colour_by(page, "cl-map-0", "blurry", "not blurry")
            assert _shown(page, "cl-map-0")["names"] == ["not blurry", "blurry"]
            page.evaluate("document.getElementById('cl-map-0').scrollIntoView({block: 'start'})")
            _colour_by(page, "cl-map-0", "class", CLASSES[0])
            # by class again: click the point hovered above
            page.mouse.click(*_map_xy(page, "cl-map-0", table.tsne_x[row], table.tsne_y[row]))
            cluster = table["cluster"][row]
            assert page.input_value("#cl-gallery-select") == ("noise" if cluster < 0
                                                              else f"c{cluster}")

            # the map switch: PCA-2D, every image
            page.select_option("#cl-map-select", "cl-map-1")
            page.wait_for_function("(document.getElementById('cl-map-1').data || []).length")
            assert page.locator("#cl-map-0").is_hidden()
            assert _shown(page, "cl-map-1") == {"names": CLASSES, "points": N_IMAGES,
                                                "types": ["scattergl"]}
            page.screenshot(path=str(shots / "pca.png"), full_page=True)
            assert page.evaluate("document.documentElement.scrollWidth") <= 1280
        finally:
            browser.close()
    assert errors == []
    assert len(list(shots.glob("*.png"))) == 6


# --------------------------------------------------------------------------- corrections
def download_corrections(page) -> str:
    """Click the page's "download corrections.csv" link; the downloaded file's text."""
    with page.expect_download() as info:
        page.click("#cl-fix-download")
    download = info.value
    assert download.suggested_filename == "corrections.csv"
    return Path(download.path()).read_text(encoding="utf-8")


def check_corrections_csv(text: str, paths) -> list[list[str]]:
    """Check ``text`` against the corrections file contract and return its rows (header left
    out): header ``path,action,class,note``; an action of relabel, exclude or keep; each path
    once, and one of ``paths``; a class for relabel only; rows sorted by path; minimal CSV
    quoting and ``\\n`` line ends (the text is what Python's csv module writes back)."""
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows and rows[0] == ["path", "action", "class", "note"], rows[:1]
    body, paths = rows[1:], set(paths)
    for path, action, cls, _note in body:
        assert action in ("relabel", "exclude", "keep"), (path, action)
        assert path in paths, path
        assert bool(cls) == (action == "relabel"), (path, action, cls)
    names = [r[0] for r in body]
    assert len(set(names)) == len(names), "a path appears twice"
    assert names == sorted(names)
    out = io.StringIO(newline="")
    csv.writer(out, lineterminator="\n").writerows(rows)
    assert text == out.getvalue()
    return body


@pytest.fixture
def browser_page(report_page):
    """The report opened in headless chromium at 1,280 x 900: (page, errors logged)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    chromium = _chromium()
    if chromium is None:
        pytest.skip("no chromium (apt-get install chromium)")
    errors = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(report_page.as_uri())
            page.wait_for_function("window.CL_READY === true")
            yield page, errors
        finally:
            browser.close()


def _map_xy(page, div: str, x: float, y: float) -> tuple[float, float]:
    """Where data point (x, y) of a map is on the screen (the map scrolled into view)."""
    return tuple(page.evaluate("""([div, x, y]) => {const d = document.getElementById(div),
        f = d._fullLayout, r = d.querySelector('.nsewdrag').getBoundingClientRect();
        return [r.left + f.xaxis.l2p(x), r.top + f.yaxis.l2p(y)];}""", [div, x, y]))


def _selected(page) -> list[str]:
    return page.locator("#cl-sel-strip input.cl-pick").evaluate_all(
        "bs => bs.map(b => b.dataset.path)")


def test_corrections_made_in_the_page_download_as_a_valid_file(browser_page, tmp_path):
    page, errors = browser_page
    table = _images_table()
    in_table = page.locator("div.tw input.cl-pick")  # the audit tables of section 8
    # the corrections in force are listed
    assert page.inner_text("#cl-fix-count") == "4 corrections, 0 changed here"
    assert check_corrections_csv(download_corrections(page), IN_FORCE["path"]) == \
        sorted(IN_FORCE.to_numpy().tolist())

    # a box drawn on the t-SNE map with plotly's box-select tool selects the points inside
    page.evaluate("document.getElementById('cl-map-0').scrollIntoView({block: 'start'})")
    page.hover("#cl-map-0 .nsewdrag")
    page.click("#cl-map-0 .modebar-btn[data-val='select']")
    (x0, x1), (y0, y1) = (1.0, 1.5), (3.2, 3.9)
    inside = table[table.tsne_x.between(x0, x1) & table.tsne_y.between(y0, y1)]["path"]
    assert inside.tolist() == ["berry/004.png", "berry/013.png"]  # an issue and a relabelled one
    start, end = _map_xy(page, "cl-map-0", x0, y1), _map_xy(page, "cl-map-0", x1, y0)
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(*end, steps=8)
    page.mouse.up()
    page.wait_for_function("document.getElementById('cl-sel-count').textContent === 'selected: 2'")
    assert _selected(page) == inside.tolist()
    # a gallery thumbnail and an image of the audit tables (the label issues) add to it, and
    # every checkbox of an image shows whether it is selected
    page.select_option("#cl-gallery-select", "c2")
    page.check("#cl-gallery input.cl-pick[data-path='cherry/020.png']")
    page.check("div.tw input.cl-pick[data-path='cherry/011.png']")
    assert page.is_checked("#cl-gallery input.cl-pick[data-path='cherry/011.png']")
    assert page.inner_text("#cl-sel-count") == "selected: 4"
    assert page.is_visible("#cl-sel-badge")
    page.screenshot(path=str(tmp_path / "selection.png"))
    # accept the suggestions: the issues take their suggested class; of the near-duplicate
    # group (20, 23), 23 has more pixels and stays; 13 has no suggestion
    page.click("#cl-fix-accept")
    assert page.inner_text("#cl-fix-msg") == (
        "accepted: 2 images relabelled to the suggested class; near-duplicate group 0: kept "
        "cherry/023.png, excluded 1; no suggestion for 1 image")
    assert page.inner_text("#cl-sel-count") == "selected: 0" and not _selected(page)
    assert not in_table.evaluate_all("bs => bs.filter(b => b.checked).length")

    # relabel: cherry/008.png (berry in force) to apple, with a note; berry/013.png back to
    # its folder's class, which drops its row
    page.check("#cl-gallery input.cl-pick[data-path='cherry/008.png']")
    page.select_option("#cl-fix-class", "apple")
    page.fill("#cl-fix-note", "second look")
    page.click("#cl-fix-relabel")
    assert page.input_value("#cl-fix-note") == ""  # a note goes on one action's rows
    page.select_option("#cl-gallery-select", "c1")
    page.check("#cl-gallery input.cl-pick[data-path='berry/013.png']")
    page.select_option("#cl-fix-class", "berry")
    page.click("#cl-fix-relabel")
    # exclude a point clicked on the map (a click selects it, still in box-select mode); its
    # note needs CSV quoting
    page.evaluate("document.getElementById('cl-map-0').scrollIntoView({block: 'start'})")
    row = int(table.index[table.path == "apple/030.png"][0])
    page.mouse.click(*_map_xy(page, "cl-map-0", table.tsne_x[row], table.tsne_y[row]))
    assert _selected(page) == ["apple/030.png"]
    assert page.input_value("#cl-gallery-select") == "c0"  # and opens its cluster
    page.fill("#cl-fix-note", 'odd, "crop"')
    page.click("#cl-fix-exclude")
    # keep a blurry image, ticked in its gallery
    page.select_option("#cl-gallery-select", "issue-blurry")
    page.check("#cl-gallery input.cl-pick[data-path='apple/003.png']")
    page.fill("#cl-fix-note", "sharp enough")
    page.click("#cl-fix-keep")
    assert page.inner_text("#cl-fix-msg") == "kept: 1 image"
    # undo the accepted relabel of cherry/011.png; clear a selection without acting on it
    page.check("div.tw input.cl-pick[data-path='cherry/011.png']")
    page.click("#cl-fix-undo")
    assert page.inner_text("#cl-fix-msg") == "undone: 1 row removed"
    page.check("div.tw input.cl-pick[data-path='apple/000.png']")
    page.click("#cl-sel-clear")
    assert page.inner_text("#cl-sel-count") == "selected: 0"
    assert not page.is_checked("div.tw input.cl-pick[data-path='apple/000.png']")
    page.locator("#corrections").scroll_into_view_if_needed()
    page.screenshot(path=str(tmp_path / "corrections.png"))

    text = download_corrections(page)
    rows = check_corrections_csv(text, set(table["path"]) | set(IN_FORCE["path"]))
    assert rows == [
        ["apple/003.png", "keep", "", "sharp enough"],
        ["apple/030.png", "exclude", "", 'odd, "crop"'],
        ["apple/099.png", "exclude", "", "blurred scan"],               # in force, kept
        ["berry/004.png", "relabel", "cherry", ""],                     # accepted suggestion
        ["berry/010.png", "keep", "", 'fine, "really"\nchecked twice'],  # in force, kept
        ["cherry/008.png", "relabel", "apple", "second look"],          # replaced
        ["cherry/020.png", "exclude", "", ""]]                          # duplicate of 023
    assert 'apple/030.png,exclude,,"odd, ""crop"""\n' in text
    assert page.inner_text("#cl-fix-count") == "7 corrections, 6 changed here"
    assert page.locator("#cl-fix-table tbody tr td:first-child").all_inner_texts() == \
        [r[0] for r in rows]
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    assert errors == []


# --------------------------------------------------------------------------- the whole loop
@pytest.mark.slow
def test_corrections_downloaded_from_the_report_feed_dvc_repro(e2e_base, tmp_path):
    """The end-to-end repository's own report (21 generated images: each class's images are
    near-copies of each other, so every class is one duplicate group): tick images in the
    near-duplicate gallery, accept the suggestion for one group, relabel one image, keep one,
    download the file, save it as the project's corrections file, run `dvc repro index`, and
    read the corrections back from the index."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    chromium = _chromium()
    if chromium is None:
        pytest.skip("no chromium (apt-get install chromium)")
    repo = e2e_copy(e2e_base, tmp_path / "e2e").repo
    before = pd.read_parquet(repo / "data/index.parquet")
    images = pd.read_parquet(repo / "data/images.parquet")
    given = dict(zip(before["path"], before["class"]))
    cherries = sorted(images.loc[images["class"] == "cherry", "path"])
    assert images.loc[images["class"] == "cherry", "duplicate_group"].nunique() == 1
    box = "#cl-gallery input.cl-pick[data-path='{}']"
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto((repo / "report/report.html").as_uri())
            page.wait_for_function("window.CL_READY === true")
            page.select_option("#cl-gallery-select", "issue-near_duplicate")
            page.check(box.format(cherries[2]))  # one image stands for its group
            page.click("#cl-fix-accept")
            assert f"kept {cherries[0]}, excluded {len(cherries) - 1}" in \
                page.inner_text("#cl-fix-msg")  # equal sizes: the first path stays
            page.check(box.format("apple/001.jpg"))
            page.select_option("#cl-fix-class", "berry")
            page.fill("#cl-fix-note", "looks like a berry")
            page.click("#cl-fix-relabel")
            page.check(box.format("berry/002.jpg"))
            page.click("#cl-fix-keep")
            text = download_corrections(page)
            assert errors == []
        finally:
            browser.close()
    rows = check_corrections_csv(text, given)
    assert rows == sorted([["apple/001.jpg", "relabel", "berry", "looks like a berry"],
                           ["berry/002.jpg", "keep", "", ""]]
                          + [[p, "exclude", "", ""] for p in cherries[1:]])
    (repo / "corrections.csv").write_text(text, encoding="utf-8")
    sh(repo, "dvc", "repro", "index")
    index = pd.read_parquet(repo / "data/index.parquet").set_index("path")
    assert index.loc["apple/001.jpg", ["class", "given_class", "correction", "correction_note"]
                     ].tolist() == ["berry", "apple", "relabel", "looks like a berry"]
    assert index.loc["berry/002.jpg", "correction"] == "keep"
    assert len(index) == len(before) - (len(cherries) - 1) and cherries[0] in index.index
    rejected = pd.read_csv(repo / "data/rejected.csv", keep_default_na=False)
    assert sorted(rejected.loc[rejected.reason == "excluded", "path"]) == cherries[1:]
    applied = pd.read_csv(repo / "data/corrections_applied.csv", keep_default_na=False)
    assert (applied["status"] == "applied").all() and len(applied) == len(rows)
    assert "extract" in sh(repo, "dvc", "status")  # the rest of the pipeline follows the index


# --------------------------------------------------------------------------- 10^5 images
def test_explorer_of_1e5_images_draws_with_webgl_in_a_page_of_at_most_25_mb(tmp_path):
    """The explorer's page for 10^5 generated images (``benchmarks/bench_report.py``: 100
    classes, 120 clusters, audit flags, 5,000 thumbnails of ~1 KB), built in-process: at most
    25 MB, every image held; it draws WebGL points, switches colourings, and a flagged image
    is reachable from the map and from its gallery. The size and the open time are printed
    (the time is not asserted: the machine's load sets it)."""
    import time

    from PIL import Image

    from benchmarks.bench_report import TSNE_SAMPLE, build_page, synthetic_groups, synthetic_table

    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    chromium = _chromium()
    if chromium is None:
        pytest.skip("no chromium (apt-get install chromium)")
    n, k = 100_000, 100
    table = synthetic_table(n, k)
    # a blurry image, the most severe, alone in a corner of the PCA map
    target = int(np.flatnonzero(table["is_blurry"])[0])
    table.loc[target, ["pca_x", "pca_y"]] = table[["pca_x", "pca_y"]].max().to_numpy() + 8
    table.loc[target, "blurry_score"] = 2.0
    built = build_page(table, synthetic_groups(k), tmp_path / "explorer.html")
    assert built["points"] == n and built["bytes"] <= 25_000_000
    errors = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("pageerror", lambda e: errors.append(str(e)))
            start = time.perf_counter()
            page.goto((tmp_path / "explorer.html").as_uri(), timeout=120_000)
            page.wait_for_function("window.CL_READY === true", timeout=120_000, polling=20)
            page.evaluate("() => new Promise(r => requestAnimationFrame(() => "
                          "requestAnimationFrame(r)))")
            print(f"\n10^5 images: page {built['bytes'] / 1e6:.1f} MB, built in "
                  f"{built['seconds']:.1f} s, opened in {time.perf_counter() - start:.1f} s")
            assert page.evaluate("CL_COLUMNS.path.length") == n
            # the t-SNE sample, one WebGL trace per class, drawn on the canvas
            shown = _shown(page, "cl-map-0")
            assert shown["types"] == ["scattergl"] and shown["points"] == TSNE_SAMPLE
            assert len(shown["names"]) == k
            page.evaluate("document.getElementById('cl-map-0').scrollIntoView({block: 'start'})")
            shot = Image.open(io.BytesIO(page.locator("#cl-map-0 .nsewdrag").screenshot()))
            painted = np.asarray(shot.convert("L")) < 200
            assert painted.mean() > 0.02, painted.mean()
            # more categories than the legend holds: one trace coloured point by point
            _colour_by(page, "cl-map-0", "cluster", "cluster (121 colours)")
            shown = _shown(page, "cl-map-0")
            assert shown["names"] == ["cluster (121 colours)"] and shown["points"] == TSNE_SAMPLE
            _colour_by(page, "cl-map-0", "label issue", "no suspected issue")
            in_tsne = table["tsne_x"].notna()
            assert page.evaluate("document.getElementById('cl-map-0').data[1].x.length") == \
                int((table["is_label_issue"] & in_tsne).sum())
            # the flagged image: on the PCA map (every image), coloured, hovered and clicked
            page.select_option("#cl-map-select", "cl-map-1")
            page.wait_for_function("(document.getElementById('cl-map-1').data || []).length")
            _colour_by(page, "cl-map-1", "blurry", "not blurry")
            assert _shown(page, "cl-map-1")["points"] == n
            page.evaluate("document.getElementById('cl-map-1').scrollIntoView({block: 'start'})")
            spot = _map_xy(page, "cl-map-1", table["pca_x"][target], table["pca_y"][target])
            page.mouse.move(*spot)
            page.locator("#cl-card").wait_for(state="visible")
            assert table["path"][target] in page.inner_text("#cl-card")
            page.mouse.click(*spot)
            assert _selected(page) == [table["path"][target]]
            # ... and first in its gallery, most severe first, 200 at a time
            page.select_option("#cl-gallery-select", "issue-blurry")
            blurry = int(table["is_blurry"].sum())
            assert page.locator("#cl-gallery input.cl-pick").first.get_attribute("data-path") \
                == table["path"][target]
            assert page.inner_text("#cl-gallery-note") == (
                f"showing 200 of {blurry} images (most severe first; at most 200 shown)")
            page.click("#cl-gallery-more")
            assert page.locator("#cl-gallery figure").count() == 400
        finally:
            browser.close()
    assert errors == []
