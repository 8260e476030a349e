"""The report's explorer page at 10^4, 10^5 and 10^6 images: its size and its open time.

    python -m benchmarks.bench_report                        # N = 10^4, 10^5, 10^6, 3 runs each
    python -m benchmarks.bench_report --sizes 10000 --runs 1

Data (:func:`synthetic_table`): a seeded per-image table like ``data/images.parquet``:
``--classes`` (N / 1,000, at least 10) classes with ImageNet-like paths (``n00000042/
n00000042_17.JPEG``), 20% more clusters than classes (2% noise), PCA-2D and a t-SNE of a
20,000-image sample around per-class centres, 2% suspected label issues, 1% near-duplicates in
pairs, 0.5% leaks, 1% blurry and 0.5% dark images, an outlier rank, a train/val split, and two
macro cuts. Thumbnails: ``report.thumbnails`` (5,000) rows (:func:`explorer.thumbnail_rows`),
each a ~1 KB WebP (the mean at 64 px of the real 9,145-photo Caltech-101 folder is 1.0 KB).

:func:`build_page` writes the page as the report stage does (the explorer at the default
``report.max_points``, 200,000, inside :func:`document.render_html`); :func:`open_seconds`
opens it from ``file://`` in headless chromium (playwright, 1,280 x 900) and times the load
until the explorer has drawn its first map (``window.CL_READY``, then two animation frames).
Reported per N: page MB, images in the page, build seconds (Python), open seconds (median of
``--runs``, each in a fresh browser page) and, timed between them, the open seconds of a page
of plotly.js alone (:func:`baseline_page`), the floor every explorer page pays; both as wall
time and as the renderer process's CPU time (``*_cpu_s``, :func:`open_seconds`). Writes
benchmarks/results/report.json.
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.bench_grid import fmt_table

PROJECT = Path(__file__).resolve().parents[1]
RESULTS = PROJECT / "benchmarks" / "results" / "report.json"
TSNE_SAMPLE = 20_000
THUMBNAILS, MAX_POINTS = 5000, 200_000  # the defaults of report.thumbnails, report.max_points


def synthetic_table(n: int, classes: int, seed: int = 0) -> pd.DataFrame:
    """A seeded per-image table with every column the explorer reads (see the module)."""
    rng = np.random.default_rng(seed)
    names = np.array([f"n{c:08d}" for c in range(classes)], dtype=object)
    y = rng.integers(classes, size=n)
    extra = max(classes // 5, 1)
    cluster = np.where(rng.random(n) < 0.2, classes + y % extra, y)
    cluster[rng.random(n) < 0.02] = -1
    centres, tsne_centres = rng.normal(0, 10, (classes, 2)), rng.normal(0, 30, (classes, 2))
    pca = centres[y] + rng.normal(0, 1.5, (n, 2))
    tsne = np.full((n, 2), np.nan)
    sample = np.sort(rng.choice(n, size=min(n, TSNE_SAMPLE), replace=False))
    tsne[sample] = tsne_centres[y[sample]] + rng.normal(0, 2, (len(sample), 2))
    issue = rng.random(n) < 0.02
    dup = np.full(n, -1)
    pairs = rng.choice(n, size=2 * (n // 200), replace=False)
    dup[pairs] = np.arange(len(pairs)) // 2

    def flag(share):
        return rng.random(n) < share

    leak, blurry, dark = flag(0.005), flag(0.01), flag(0.005)
    return pd.DataFrame({
        "path": [f"{names[c]}/{names[c]}_{i}.JPEG" for i, c in enumerate(y)],
        "class": names[y], "split": np.where(rng.random(n) < 0.8, "train", "val"),
        "cluster": cluster, "cluster_majority_class": np.where(cluster >= 0,
                                                               names[cluster % classes], ""),
        "centre_distance": np.where(cluster >= 0, rng.random(n), np.nan),
        "pca_x": pca[:, 0], "pca_y": pca[:, 1], "tsne_x": tsne[:, 0], "tsne_y": tsne[:, 1],
        "is_label_issue": issue, "suggested_class": np.where(issue, names[(y + 1) % classes],
                                                              names[y]),
        "label_issue_rank": np.where(issue, np.cumsum(issue), 0),
        "duplicate_group": dup, "is_near_duplicate": dup >= 0,
        "near_duplicate_score": np.where(dup >= 0, rng.random(n), 0.0),
        "is_leak": leak, "leak_score": np.where(leak, rng.random(n), 0.0),
        "is_blurry": blurry, "blurry_score": np.where(blurry, rng.random(n), 0.0),
        "is_dark": dark, "dark_score": np.where(dark, rng.random(n), 0.0),
        "outlier_rank": rng.permutation(n) + 1,
        "width": rng.integers(200, 800, n), "height": rng.integers(200, 800, n)})


def synthetic_groups(classes: int) -> dict:
    """``data/macro/groups.json`` with cuts of 5 and 10 groups of consecutive classes."""
    names = [f"n{c:08d}" for c in range(classes)]
    return {"cuts": {f"g{k}": {"groups": {str(g): names[g::k] for g in range(k)}}
                     for k in (5, 10)}}


def thumbnail_uri(seed: int = 0) -> str:
    """A ~1 KB WebP data URI (a smooth random 64 x 48 image)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((64, 48), Image.BICUBIC)
    img = Image.fromarray(np.clip(np.asarray(img, np.int16) + rng.integers(-12, 12, (48, 64, 3)),
                                  0, 255).astype(np.uint8))
    buf = io.BytesIO()
    img.save(buf, "WEBP", quality=70, method=4)
    return "data:image/webp;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def build_page(table: pd.DataFrame, groups: dict, out: Path, *, max_points: int = MAX_POINTS,
               thumbs: int = THUMBNAILS, seed: int = 0) -> dict:
    """Write the explorer's page for ``table`` to ``out`` as the report stage does (thumbnails
    made up, :func:`thumbnail_uri`); returns ``{"bytes", "points", "seconds"}``."""
    from clusterlens.report import document, explorer

    t0 = time.perf_counter()
    table = table.reset_index(drop=True)
    maps = explorer.maps_from_table(table)
    first, rows = explorer.explorer_rows(table, maps, thumbs, max_points, seed)
    fragment = explorer.explorer_html(table, maps, explorer.macro_cuts(groups),
                                      dict.fromkeys(first, thumbnail_uri(seed)), rows=rows)
    doc = document.Doc()
    doc.h(1, "clusterlens report")
    doc.raw(fragment, "")
    page = document.render_html(doc, "clusterlens report")
    out.write_text(page, encoding="utf-8")
    return {"bytes": out.stat().st_size, "points": int(len(rows)),
            "seconds": time.perf_counter() - t0}


def chromium() -> str | None:
    """Debian's chromium (``$CHROMIUM`` first), or None."""
    import os
    import shutil

    for path in (os.environ.get("CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium"):
        if path and Path(path).is_file():
            return path
    return None


def open_seconds(browser, path: Path) -> tuple[float, float]:
    """Seconds from navigating a fresh page to ``path`` until its first map has drawn: the
    wall-clock time, and the CPU time of the page's renderer process (chromium's
    ``ProcessTime`` metric; less sensitive to the machine's load, but it leaves out the GPU
    process, which rasterises WebGL in software here)."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        cdp = page.context.new_cdp_session(page)
        cdp.send("Performance.enable")
        t0 = time.perf_counter()
        page.goto(path.resolve().as_uri(), timeout=300_000)
        page.wait_for_function("window.CL_READY === true", timeout=300_000, polling=20)
        page.evaluate("() => new Promise(r => requestAnimationFrame(() => "
                      "requestAnimationFrame(r)))")
        wall = time.perf_counter() - t0
        metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
        return wall, float(metrics.get("ProcessTime", float("nan")))
    finally:
        page.close()


def baseline_page(out: Path) -> Path:
    """A page of plotly.js alone drawing two WebGL points: what opening any explorer costs
    before its data (timed beside each page, as the machine's load varies)."""
    from plotly.offline import get_plotlyjs

    out.write_text("<!DOCTYPE html><html><body><div id=a></div><script>" + get_plotlyjs() +
                   "</script><script>Plotly.newPlot('a', [{type: 'scattergl', x: [1, 2], "
                   "y: [1, 2]}]).then(() => { window.CL_READY = true; });</script></body></html>",
                   encoding="utf-8")
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--classes", type=int, nargs="+", default=None,
                    help="classes per size (default N / 1,000, at least 10)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright

    classes = args.classes or [max(10, n // 1000) for n in args.sizes]
    rows, baseline = [], baseline_page(Path("/tmp/bench_report_plotly.html"))
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), headless=True)
        try:
            for n, k in zip(args.sizes, classes):
                path = Path(f"/tmp/bench_report_{n}.html")
                built = build_page(synthetic_table(n, k), synthetic_groups(k), path)
                times, base = [], []
                for _ in range(args.runs):  # interleaved, so both see the same load
                    times.append(open_seconds(browser, path))
                    base.append(open_seconds(browser, baseline))
                cpu = [c for _, c in times]
                times, base_cpu, base = [t for t, _ in times], [c for _, c in base], \
                    [t for t, _ in base]
                rows.append({"images": n, "classes": k, "points": built["points"],
                             "page_mb": round(built["bytes"] / 1e6, 2),
                             "build_s": round(built["seconds"], 2),
                             "open_s": round(statistics.median(times), 2),
                             "plotly_s": round(statistics.median(base), 2),
                             "open_cpu_s": round(statistics.median(cpu), 2),
                             "plotly_cpu_s": round(statistics.median(base_cpu), 2),
                             "open_runs_s": [round(t, 2) for t in times],
                             "plotly_runs_s": [round(t, 2) for t in base]})
                print(rows[-1], flush=True)
                path.unlink()
        finally:
            browser.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"runs": args.runs, "rows": rows}, indent=2) + "\n")
    cols = ["images", "classes", "points", "page_mb", "build_s", "open_s", "plotly_s",
            "open_cpu_s", "plotly_cpu_s"]
    print(fmt_table([[r[c] for c in cols] for r in rows], cols))


if __name__ == "__main__":
    main()
