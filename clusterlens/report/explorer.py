"""The report's explorer: interactive 2-D maps of the images and a gallery per cluster.

:func:`explorer_html` returns one HTML fragment (plotly.js inlined, so it works offline from a
``file://`` page) with

- one plotly figure per map (t-SNE, PCA-2D, UMAP when computed), drawn with WebGL
  (``scattergl``; SVG where the browser has no WebGL), a ``<select>`` to switch between them,
  and one to colour the points by class, by cluster (each cluster in the colour of its
  matched class, see :mod:`clusterlens.report.colours`), by split, by macro group (one
  choice per cut) or by each audit flag (suspected label issue, near-duplicate, ...). A
  colouring of at most :data:`LEGEND_MAX` categories draws one trace per category, so the
  legend names them (flagged images drawn last, on top); one of more categories draws one
  trace coloured point by point;
- a hover card: hovering over a point shows its thumbnail, path, class and cluster (plotly
  cannot put an image in its own hover label, so a few lines of JavaScript fill a ``<div>``);
- a gallery: pick a cluster, an audit flag or the outliers in a ``<select>``, or click a
  point, and see its images, nearest the cluster's centre (or most severe) first,
  :data:`GALLERY_MAX` at a time;
- corrections: select images (click points, box or lasso on a map, tick thumbnails in the
  gallery or images in the report's audit tables), act on them (accept the suggestion,
  relabel, exclude, keep, undo), and download the result as ``corrections.csv``
  (:data:`CORRECTION_COLUMNS`), built in the page from the corrections in force plus the new
  choices; no server is needed.

The page stores each image once: its path, class codes, cluster, audit flags and each map's
coordinates are columns of typed arrays (float32 coordinates, integer codes), packed into one
gzip-compressed, base64-encoded block (:func:`pack_columns`) that the page inflates with the
browser's ``DecompressionStream``. A colouring is a small table (a lookup from a column's
codes to its categories' names, colours and markers), and the page builds the traces of the
colouring asked for from the columns, so colourings cost no per-point bytes. Each thumbnail is
stored once, as a WebP data URI keyed by the image's position in the page.

Above ``max_points`` images the page holds a seeded sample (:func:`page_rows`) plus every image
an audit flag marks, the most outlying images, the thumbnailed ones and the t-SNE's sample
(:func:`explorer_rows`; when more than ``max_points`` are flagged, the most severe of each flag,
:func:`severest_rows`), so the flagged images stay on the maps and in their galleries. Above a
cap the thumbnails are a seeded sample too (:func:`thumbnail_rows`). Element ids are fixed
and nothing random or dated is written, so the same inputs give the same bytes.
"""
from __future__ import annotations

import base64
import gzip
import html
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from clusterlens.audit.issues import ISSUE_TYPES, flag_column, score_column
from clusterlens.clustering.metrics import NOISE
from clusterlens.core.sampling import sample_rows
from clusterlens.report.colours import MARKERS, NOISE_COLOUR, class_colours, cluster_styles, palette

ISSUE_COLOUR = "#d62728"
GALLERY_MAX = 200  # thumbnails shown at once in the gallery ("show more" adds as many)
LEGEND_MAX = 100  # a colouring with more categories is one trace, coloured point by point
TABLE_COLUMNS = ["path", "class", "cluster", "cluster_majority_class", "centre_distance",
                 "is_label_issue", "suggested_class"]
CORRECTION_COLUMNS = ["path", "action", "class", "note"]  # the corrections file's header


@dataclass(frozen=True)
class MapView:
    """One 2-D map: ``name`` (e.g. ``"t-SNE"``), ``rows`` (the image rows it shows, int) and
    ``xy`` (their coordinates, shape (len(rows), 2)); ``note`` says what was embedded."""

    name: str
    rows: np.ndarray
    xy: np.ndarray
    note: str = ""


# --------------------------------------------------------------------------- thumbnails
def thumbnail_rows(n: int, cap: int, seed: int, first=()) -> np.ndarray:
    """The image rows that get a thumbnail.

    Parameters
    ----------
    n : int
        Number of images.
    cap : int
        At most this many thumbnails; all images when ``n <= cap``.
    seed : int
        Seed of the uniform sample drawn above the cap.
    first : iterable of int, optional
        Rows always kept (e.g. suspected label issues, cluster representatives), in order of
        priority, before the sample fills up to ``cap``.

    Returns
    -------
    ndarray of int
        Sorted, distinct rows.
    """
    if n <= cap:
        return np.arange(n)
    keep = list(dict.fromkeys(int(r) for r in first))[:cap]
    free = np.ones(n, dtype=bool)
    free[keep] = False
    rest = np.flatnonzero(free)
    extra = np.random.default_rng(seed).choice(rest, size=cap - len(keep), replace=False)
    return np.sort(np.concatenate([np.asarray(keep, dtype=np.int64), extra]))


def thumbnail_uri(path: str | os.PathLike, px: int, quality: int = 70) -> str | None:
    """A WebP data URI of the image shrunk to at most ``px`` a side; None if it can't be read."""
    from clusterlens.data.images import load_rgb

    try:
        img = load_rgb(path)
    except (OSError, ValueError):
        return None
    img.thumbnail((px, px))
    buf = io.BytesIO()
    img.save(buf, "WEBP", quality=quality, method=4)
    return "data:image/webp;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def thumbnails(root: str | os.PathLike, paths, rows, px: int) -> dict[int, str]:
    """Row -> data URI for the given rows (paths relative to ``root``), decoded and encoded in
    a few threads (Pillow releases the GIL), in row order; unreadable files are left out."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    rows = [int(r) for r in rows]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        uris = list(tqdm(pool.map(lambda r: thumbnail_uri(Path(root) / str(paths[r]), px), rows),
                         total=len(rows), desc="thumbnails", unit="img", leave=False))
    return {r: uri for r, uri in zip(rows, uris) if uri is not None}


def priority_rows(table: pd.DataFrame, per_cluster: int = 12) -> list[int]:
    """Rows whose thumbnails matter most: the suspected label issues (most suspicious first),
    then each cluster's ``per_cluster`` members nearest its centre (largest cluster first),
    then the first :data:`GALLERY_MAX` images of each other flag's gallery and of the
    outliers' (most severe first)."""
    _, galleries = _gallery_options(table.reset_index(drop=True))
    first = list(galleries.get("issues", []))
    for key, rows in galleries.items():
        if key.startswith("c"):
            first.extend(rows[:per_cluster])
    for key, rows in galleries.items():
        if key.startswith("issue-") or key == "outliers":
            first.extend(rows[:GALLERY_MAX])
    return first


def flagged_rows(table: pd.DataFrame) -> np.ndarray:
    """The rows an audit flag marks (any of :func:`present_issues`), and the
    :data:`GALLERY_MAX` most outlying images when the table ranks outliers; sorted."""
    flag = np.zeros(len(table), dtype=bool)
    for issue in present_issues(table):
        flag |= table[flag_column(issue)].to_numpy(dtype=bool)
    if "outlier_rank" in table:
        rank = table["outlier_rank"].to_numpy(dtype=np.float64)
        flag[np.argsort(np.nan_to_num(rank, nan=np.inf), kind="stable")[:GALLERY_MAX]] = True
    return np.flatnonzero(flag)


def severest_rows(table: pd.DataFrame, cap: int) -> np.ndarray:
    """At most about ``cap`` of the flagged rows: ``cap`` shared equally among the issue types
    present (:func:`present_issues`), each taking its most severe images (its score column,
    highest first, ties and a missing score in row order), and the :data:`GALLERY_MAX` most
    outlying images; sorted."""
    issues = present_issues(table)
    share = max(cap // max(len(issues), 1), 1)
    held = np.zeros(len(table), dtype=bool)
    for issue in issues:
        rows = np.flatnonzero(table[flag_column(issue)].to_numpy(dtype=bool))
        if score_column(issue) in table:
            score = table[score_column(issue)].to_numpy(dtype=np.float64)[rows]
            rows = rows[np.argsort(-np.nan_to_num(score, nan=-np.inf), kind="stable")]
        held[rows[:share]] = True
    if "outlier_rank" in table:
        rank = table["outlier_rank"].to_numpy(dtype=np.float64)
        held[np.argsort(np.nan_to_num(rank, nan=np.inf), kind="stable")[:GALLERY_MAX]] = True
    return np.flatnonzero(held)


def page_rows(table: pd.DataFrame, cap: int, seed: int, keep=()) -> np.ndarray:
    """The image rows the explorer's page holds.

    Parameters
    ----------
    table : DataFrame
        One row per image (see :func:`explorer_html`).
    cap : int
        ``report.max_points``: every image when ``len(table) <= cap``.
    seed : int
        Seed of the sample drawn above the cap (:func:`clusterlens.core.sampling.sample_rows`).
    keep : iterable of int, optional
        Rows always held (e.g. the thumbnailed ones).

    Returns
    -------
    ndarray of int64
        Sorted, distinct rows: all of them, or every flagged image (:func:`flagged_rows`) and
        ``keep``, plus a seeded uniform sample of the others filling up to ``cap``. When the
        flagged images alone exceed ``cap``, the most severe of them (:func:`severest_rows`)
        and ``keep``, no sample.
    """
    n = len(table)
    if n <= cap:
        return np.arange(n, dtype=np.int64)
    held = np.zeros(n, dtype=bool)
    flagged = flagged_rows(table)
    held[flagged if len(flagged) <= cap else severest_rows(table, cap)] = True
    held[np.asarray(list(keep), dtype=np.int64)] = True
    rest = np.flatnonzero(~held)
    held[rest[sample_rows(len(rest), max(cap - int(held.sum()), 0), seed)]] = True
    return np.flatnonzero(held).astype(np.int64)


def explorer_rows(table: pd.DataFrame, maps: list[MapView], thumbnails_cap: int,
                  max_points: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows that get a thumbnail (:func:`thumbnail_rows`, :func:`priority_rows` first) and
    the rows the page holds (:func:`page_rows`, keeping the thumbnailed rows and every row of
    a sampled map, such as the t-SNE's, of at most ``max_points`` rows)."""
    n = len(table)
    first = thumbnail_rows(n, thumbnails_cap, seed, first=priority_rows(table))
    sampled = [m.rows for m in maps if len(m.rows) < n and len(m.rows) <= max_points]
    return first, page_rows(table, max_points, seed, keep=np.concatenate([first, *sampled]))


def maps_from_table(table: pd.DataFrame) -> list[MapView]:
    """The maps of the per-image table: the t-SNE and the UMAP (their rows with coordinates:
    the samples the ``tsne`` and ``umap`` stages embedded) when there are, and the PCA-2D view
    of every image."""
    out = []
    for name, cols in (("t-SNE", ["tsne_x", "tsne_y"]), ("UMAP", ["umap_x", "umap_y"])):
        if not set(cols) <= set(table.columns):
            continue
        xy = table[cols].to_numpy(dtype=np.float64)
        rows = np.flatnonzero(np.isfinite(xy).all(axis=1))
        if len(rows):
            note = "all" if len(rows) == len(table) else f"a seeded sample of {len(table):,}"
            out.append(MapView(name, rows, xy[rows], note))
    xy = table[["pca_x", "pca_y"]].to_numpy(dtype=np.float64)
    out.append(MapView("PCA-2D", np.arange(len(table)), xy, "first two principal components"))
    return out


def macro_cuts(groups: dict) -> dict[str, dict[str, str]]:
    """Class -> group name for each ``g`` cut (a requested number of groups) of the macro
    tree (``data/macro/groups.json``), leaving out cuts of one group."""
    out = {}
    for name, cut in groups.get("cuts", {}).items():
        if name.startswith("g") and len(cut.get("groups", {})) > 1:
            out[name] = {str(c): f"group {g}" for g, members in cut["groups"].items()
                         for c in members}
    return out


# --------------------------------------------------------------------------- colourings
def colourings(table: pd.DataFrame, macro: dict[str, dict[str, str]],
               class_order: list[str], cluster_names: dict | None = None) -> list[dict]:
    """The ways to colour the points, each a table of categories over one per-image column.

    Parameters
    ----------
    table : DataFrame
        The images (see :func:`explorer_html`).
    macro : dict
        Cut name (e.g. ``g5``) -> class -> group name.
    class_order : list of str
        The class codes of the page's ``cls`` column (every class and folder class, sorted).
    cluster_names : dict, optional
        Cluster -> name (from the captions); a non-empty name follows the cluster's legend
        entry: ``c3 = cat: tabby / tiger cat``.

    Returns
    -------
    list of dict
        In menu order: ``label`` (its name in the menu), ``source`` (the page column the codes come
        from: ``cls``, ``cluster``, ``split`` or ``flags``), ``lookup`` (code + ``shift`` ->
        category, -1 for none: the image is not drawn in that colouring; for ``flags``,
        ``[bit]``: the category is that bit), ``shift`` and ``cats`` (``[legend name, colour,
        plotly symbol]`` each).
    """
    classes = table["class"].astype(str).to_numpy(dtype=object)
    labels = table["cluster"].to_numpy()
    coloured = sorted(set(classes.tolist()))
    colours = class_colours(coloured)
    pos = {c: i for i, c in enumerate(coloured)}
    out = [{"label": "class", "source": "cls", "shift": 0,
            "lookup": [pos.get(c, -1) for c in class_order],
            "cats": [[c, colours[c], "circle"] for c in coloured]}]
    splits = table["split"].astype(str).to_numpy(dtype=object) if "split" in table else None
    if splits is not None and len(set(splits.tolist()) - {""}) >= 2:
        names = sorted(set(splits.tolist()) - {""})
        out.append({"label": "split", "source": "split", "shift": 0,
                    "lookup": list(range(len(names))),
                    "cats": [[s, c, "circle"] for s, c in zip(names, palette(len(names)))]})
    styles = cluster_styles(labels, classes, coloured)
    top = max([int(c) for c in styles] + [0])
    lookup = [-1] * (top + 2)  # cluster label + 1 -> category; noise (-1) at 0
    cats = []
    for c, s in styles.items():
        lookup[c + 1] = len(cats)
        named = (cluster_names or {}).get(c) or ""
        cats.append([s.name(c) + (f": {named}" if named else ""), s.colour, MARKERS[s.marker][1]])
    if (labels == NOISE).any():
        lookup[0] = len(cats)
        cats.append(["noise", NOISE_COLOUR, "x"])
    out.append({"label": "cluster", "source": "cluster", "shift": 1, "lookup": lookup,
                "cats": cats})
    for cut, group_of in macro.items():
        names = sorted(set(group_of.values()), key=str)
        cols = dict(zip(names, palette(len(names))))
        cats = []
        for g in names:
            members = sorted(c for c, v in group_of.items() if v == g)
            label = ", ".join(members[:4]) + (f" +{len(members) - 4}" if len(members) > 4 else "")
            cats.append([f"{g}: {label}", cols[g], "circle"])
        at = {g: i for i, g in enumerate(names)}
        out.append({"label": f"macro {cut}", "source": "cls", "shift": 0,
                    "lookup": [at.get(group_of.get(c, ""), -1) for c in class_order],
                    "cats": cats})
    for bit, issue in enumerate(present_issues(table)):
        name = "suspected label issue" if issue == "label_issue" else issue.replace("_", " ")
        off = "no suspected issue" if issue == "label_issue" else f"not {name}"
        out.append({"label": issue.replace("_", " "), "source": "flags", "shift": 0,
                    "lookup": [bit], "cats": [[off, "#c7c7c7", "circle"],
                                              [name, ISSUE_COLOUR, "circle"]]})
    return out


def present_issues(table: pd.DataFrame) -> list[str]:
    """The audit's issue types (:data:`clusterlens.audit.issues.ISSUE_TYPES`) whose flag column
    the table has, label issues first."""
    return [i for i in ("label_issue", *(t for t in ISSUE_TYPES if t != "label_issue"))
            if flag_column(i) in table]


def map_layout(view: MapView, shown: int, total: int) -> dict:
    """The plotly layout (a plain dict) of one map: its title (``shown`` of the map's
    ``total`` images; fewer when the page holds a sample) and axes."""
    note = view.note
    if shown < total:
        note = (f"a seeded sample of {shown:,} of {total:,}, flagged images first; " + note)
    return {
        "title": {"text": f"{view.name}: {shown:,} images" + (f" ({note})" if note else ""),
                  "x": 0.01, "xanchor": "left", "y": 0.97, "yref": "container"},
        "xaxis": {"title": {"text": f"{view.name} 1"}, "zeroline": False},
        "yaxis": {"title": {"text": f"{view.name} 2"}, "zeroline": False},
        "height": 640, "margin": {"l": 50, "r": 10, "t": 50, "b": 45},
        "legend": {"itemsizing": "constant", "font": {"size": 10}},
        "hovermode": "closest", "dragmode": "zoom"}


# --------------------------------------------------------------------------- packed columns
def pack_columns(columns: dict[str, np.ndarray], texts: dict[str, list[str]]
                 ) -> tuple[str, dict[str, list]]:
    """Pack per-image columns into one gzip-compressed, base64-encoded block.

    Parameters
    ----------
    columns : dict
        Name -> 1-D array of float32, int32 or uint8 (little-endian in the block, each
        starting at a multiple of 8 bytes, so the page views them as typed arrays in place).
    texts : dict
        Name -> strings, stored as UTF-8 joined by NUL (which no path holds).

    Returns
    -------
    tuple
        The base64 text and the layout: name -> ``[kind, byte offset, length]``, kind one of
        ``f4``, ``i4``, ``u1`` (length in elements) or ``text`` (length in bytes). The gzip
        header carries no time stamp, so the same columns give the same text.
    """
    chunks, layout, off = [], {}, 0
    for name, arr in columns.items():
        kind = f"{arr.dtype.kind}{arr.dtype.itemsize}"
        if kind not in ("f4", "i4", "u1"):
            raise TypeError(f"column {name!r}: float32, int32 or uint8, not {arr.dtype}")
        raw = np.ascontiguousarray(arr, dtype=np.dtype(kind).newbyteorder("<")).tobytes()
        layout[name] = [kind, off, int(len(arr))]
        raw += b"\0" * (-len(raw) % 8)
        chunks.append(raw)
        off += len(raw)
    for name, strings in texts.items():
        raw = "\0".join(strings).encode("utf-8")
        layout[name] = ["text", off, len(raw)]
        chunks.append(raw)
        off += len(raw)
    block = gzip.compress(b"".join(chunks), compresslevel=6, mtime=0)
    return base64.b64encode(block).decode("ascii"), layout


def unpack_columns(text: str, layout: dict[str, list]) -> dict:
    """The columns of :func:`pack_columns` back: name -> ndarray, or list of str for a text."""
    raw = gzip.decompress(base64.b64decode(text))
    out = {}
    for name, (kind, off, n) in layout.items():
        out[name] = (raw[off:off + n].decode("utf-8").split("\0") if kind == "text" else
                     np.frombuffer(raw, dtype="<" + kind if kind != "u1" else "u1",
                                   count=n, offset=off))
    return out


def page_columns(page: str) -> tuple[dict, dict]:
    """The explorer's data read back from a page (its HTML text): the JSON part
    (``window.CL_DATA``) and the packed columns (:func:`unpack_columns`)."""
    import re

    data = json.loads(re.search(r"window\.CL_DATA=(.*?);\n?</script>", page, re.S).group(1))
    block = re.search(r'window\.CL_BLOCK="([A-Za-z0-9+/=]*)"', page).group(1)
    return data, unpack_columns(block, data["layout"])


CSS = """.cl-ex{margin:1em 0}.cl-ex-bar{margin:.4em 0}.cl-ex-bar select{font-size:1em}
.cl-fig{width:100%;min-height:640px}
#cl-card{position:fixed;display:none;z-index:10;background:#fff;border:1px solid #999;
padding:6px;max-width:260px;font-size:12px;box-shadow:0 2px 8px rgba(0,0,0,.25);
pointer-events:none;overflow-wrap:anywhere}
#cl-card img{width:96px;height:96px;object-fit:contain;image-rendering:pixelated;display:block}
.cl-thumbs{display:flex;flex-wrap:wrap;gap:4px;margin:.5em 0}
.cl-thumbs figure{margin:0;width:76px;font-size:10px;text-align:center;overflow:hidden}
.cl-thumbs label{display:block;cursor:pointer}.cl-thumbs .cl-nothumb{display:block;width:72px;
height:72px;overflow:hidden;overflow-wrap:anywhere;border:2px solid #ddd}
.cl-thumbs img{width:72px;height:72px;object-fit:contain;image-rendering:pixelated;
border:2px solid #ddd}.cl-thumbs img.off{border-color:#d62728}
input.cl-pick{display:inline-block;margin:0 .2em 0 0;vertical-align:middle}
#cl-fix-msg{color:#555;font-style:italic}#cl-fix-list{max-height:320px;overflow:auto}
#cl-fix-table tr.cl-new td{background:#fff6d6}#cl-fix-table td,#cl-fix-table th{text-align:left}
#cl-fix-download{display:inline-block;padding:.2em .6em;border:1px solid #777;border-radius:3px;
background:#f3f3f3;color:#000;text-decoration:none}
#cl-sel-badge{position:fixed;right:8px;bottom:8px;z-index:9;display:none;background:#fff;
border:1px solid #999;border-radius:3px;padding:2px 8px;font-size:12px}
#cl-gallery-more{display:none}"""


JS = """(function(){
var D=window.CL_DATA,T=window.CL_THUMBS,TYPES={f4:Float32Array,i4:Int32Array,u1:Uint8Array};
function $(id){return document.getElementById(id);}
// the packed columns: base64 -> gzip -> typed arrays viewed in place, paths split at NUL
function inflate(b64){var s=atob(b64),n=s.length,u=new Uint8Array(n);
for(var i=0;i<n;i++)u[i]=s.charCodeAt(i);
return new Response(new Blob([u]).stream().pipeThrough(new DecompressionStream('gzip')))
.arrayBuffer();}
function unpack(buf){var C={};Object.keys(D.layout).forEach(function(k){var s=D.layout[k];
C[k]=s[0]==='text'?new TextDecoder().decode(new Uint8Array(buf,s[1],s[2])).split('\\0'):
new TYPES[s[0]](buf,s[1],s[2]);});return C;}
var GL=(function(){try{var c=document.createElement('canvas');
return !!(window.WebGLRenderingContext&&(c.getContext('webgl')||c.getContext('experimental-webgl')));
}catch(e){return false;}})();
inflate(window.CL_BLOCK).then(function(buf){start(unpack(buf));})
.catch(function(e){console.error('explorer: '+e);});
function start(C){
window.CL_COLUMNS=C;
var P=C.path;
function esc(s){return String(s).replace(/[&<>"]/g,function(m){return {'&':'&amp;',
'<':'&lt;','>':'&gt;','"':'&quot;'}[m];});}
function issue(i){return C.flags[i]&1;}
function majority(c){return D.majority[c]||'';}
function info(i){var c=C.cluster[i];return '<b>'+esc(P[i])+'</b><br>class: '+
esc(D.classes[C.cls[i]])+(C.given[i]!==C.cls[i]?' (relabelled; folder: '+
esc(D.classes[C.given[i]])+')':'')+'<br>cluster: '+
(c<0?'noise':c+' (mostly '+esc(majority(c))+')')+
(issue(i)?'<br><span style="color:#d62728">suspected label issue: '+
esc(D.classes[C.suggested[i]])+'?</span>':'');}
// each map's drawn traces: trace -> the page rows of its points
var ROWS={},PAINTED={},DRAWN={},paint=$('cl-colour-select');
function rowAt(id,p){return ROWS[id][p.curveNumber][p.pointIndex!==undefined?p.pointIndex:
p.pointNumber];}
var card=$('cl-card');
function hover(id,ev){var i=rowAt(id,ev.points[0]);
card.innerHTML=(T[i]?'<img alt="" src="'+T[i]+'">':'<i>(no thumbnail: sampled out)</i>')+
'<div>'+info(i)+'</div>';card.dataset.row=i;card.style.display='block';
var e=ev.event||{},x=(e.clientX||0)+16,y=(e.clientY||0)+16;
if(x+270>window.innerWidth)x=Math.max(0,x-300);if(y+200>window.innerHeight)y=Math.max(0,y-220);
card.style.left=x+'px';card.style.top=y+'px';}
function unhover(){card.style.display='none';}
// the selection: a set of image paths, shared by the maps, the gallery and the report's tables
var picked=new Set(),touched=new Set(),rowOf=new Map();
P.forEach(function(p,i){rowOf.set(p,i);});
function cmp(a,b){return a<b?-1:a>b?1:0;}
function sorted(it){return Array.from(it).sort(cmp);}
function thumb(i){var p=P[i],off=C.cluster[i]>=0&&D.classes[C.cls[i]]!==majority(C.cluster[i]);
return '<figure><label>'+(T[i]?'<img'+(off?' class="off"':'')+' alt="" title="'+esc(p)+
'" src="'+T[i]+'">':'<span class="cl-nothumb">'+esc(p)+'</span>')+
'<input type="checkbox" class="cl-pick" data-path="'+esc(p)+'"'+(picked.has(p)?' checked':'')+
'>'+esc(D.classes[C.cls[i]])+'</label></figure>';}
function showPicks(){var n=picked.size;
$('cl-sel-strip').innerHTML=sorted(picked).map(function(p){return rowOf.get(p);})
.filter(function(i){return i!==undefined;}).slice(0,D.galleryMax).map(thumb).join('');
document.querySelectorAll('input.cl-pick').forEach(function(b){
b.checked=picked.has(b.dataset.path);});
$('cl-sel-count').textContent='selected: '+n;$('cl-sel-badge-n').textContent=n;
$('cl-sel-badge').style.display=n?'block':'none';}
function toggle(p){if(picked.has(p))picked.delete(p);else picked.add(p);showPicks();}
document.addEventListener('change',function(e){var b=e.target;
if(b.classList&&b.classList.contains('cl-pick')){
if(b.checked)picked.add(b.dataset.path);else picked.delete(b.dataset.path);showPicks();}});
function clearMaps(){touched.forEach(function(id){var d=$(id);
Plotly.restyle(d,{selectedpoints:[null]});Plotly.relayout(d,{selections:[]});});touched.clear();}
$('cl-sel-clear').addEventListener('click',function(){picked.clear();clearMaps();showPicks();});
// the gallery: [start, end, images, order] of the gallery column; "show more" adds a page
var sel=$('cl-gallery-select'),galKey=null,galN=D.galleryMax;
function gallery(key,more){var g=D.galleries[key]||[0,0,0,''],rows=C.gallery.subarray(g[0],g[1]);
if(more&&key===galKey)galN+=D.galleryMax;else{galKey=key;galN=D.galleryMax;}
var shown=Array.from(rows.subarray(0,galN)),miss=g[2]-rows.length;
$('cl-gallery').innerHTML=shown.map(thumb).join('');$('cl-gallery-note').textContent=
'showing '+shown.length+' of '+g[2]+' images'+(shown.length<g[2]?' ('+g[3]+'; '+
(miss>0?miss+' have no thumbnail, ':'')+'at most '+galN+' shown)':'');
$('cl-gallery-more').style.display=shown.length<rows.length?'inline':'none';}
sel.addEventListener('change',function(){gallery(sel.value);});
$('cl-gallery-more').addEventListener('click',function(){gallery(sel.value,true);});
function click(id,ev){var i=rowAt(id,ev.points[0]),k=C.cluster[i]<0?'noise':'c'+C.cluster[i];
toggle(P[i]);if(D.galleries[k]){sel.value=k;gallery(k);}}
// the corrections: path -> [path, action, class, note], starting from the file in force
var seed=new Map(),fixes=new Map(),url=null;
D.fixes.forEach(function(r){seed.set(r[0],r);fixes.set(r[0],r);});
function put(p,action,cls,note){var i=rowOf.get(p);
if(action==='relabel'&&i!==undefined&&cls===D.classes[C.given[i]])fixes.delete(p);
else fixes.set(p,[p,action,action==='relabel'?cls:'',note]);}
function rows(){return sorted(fixes.keys()).map(function(p){return fixes.get(p);});}
function q(v){return /[",\\r\\n]/.test(v)?'"'+v.replace(/"/g,'""')+'"':v;}
function csv(){return 'path,action,class,note\\n'+rows().map(function(r){
return r.map(q).join(',')+'\\n';}).join('');}
function same(a,b){return !!a&&a.every(function(v,k){return v===b[k];});}
function showFixes(){var rs=rows(),changed=0;seed.forEach(function(r,p){if(!fixes.has(p))changed++;});
$('cl-fix-table').tBodies[0].innerHTML=rs.map(function(r){var n=!same(seed.get(r[0]),r);
changed+=n;return '<tr'+(n?' class="cl-new"':'')+'>'+r.map(function(v){
return '<td>'+esc(v)+'</td>';}).join('')+'</tr>';}).join('');
$('cl-fix-count').textContent=rs.length+' corrections, '+changed+' changed here';
if(url)URL.revokeObjectURL(url);url=URL.createObjectURL(new Blob([csv()],{type:'text/csv'}));
$('cl-fix-download').href=url;}
function plural(k,w){return k+' '+w+(k===1?'':'s');}
function accept(ps,note){var groups=new Map(),gone=new Set(),said=[],rel=0,none=0;
ps.forEach(function(p){var i=rowOf.get(p);if(i!==undefined&&C.dup[i]>=0)groups.set(C.dup[i],[]);});
if(groups.size)C.dup.forEach(function(g,i){if(groups.has(g))groups.get(g).push(i);});
groups.forEach(function(m,g){m.sort(function(a,b){
return (C.pixels?C.pixels[b]-C.pixels[a]:0)||cmp(P[a],P[b]);});
m.slice(1).forEach(function(i){put(P[i],'exclude','',note);gone.add(P[i]);});
said.push('near-duplicate group '+g+': kept '+P[m[0]]+', excluded '+(m.length-1));});
ps.forEach(function(p){var i=rowOf.get(p);if(gone.has(p))return;
if(i!==undefined&&issue(i)){put(p,'relabel',D.classes[C.suggested[i]],note);rel++;}
else if(i===undefined||C.dup[i]<0)none++;});
return ['accepted: '+plural(rel,'image')+' relabelled to the suggested class'].concat(said)
.concat(none?['no suggestion for '+plural(none,'image')]:[]).join('; ');}
function act(fn){var ps=sorted(picked);
if(!ps.length){$('cl-fix-msg').textContent='Select images first.';return;}
var m=fn(ps,$('cl-fix-note').value);picked.clear();clearMaps();showPicks();showFixes();
$('cl-fix-note').value='';$('cl-fix-msg').textContent=m;}
function on(id,fn){$(id).addEventListener('click',function(){act(fn);});}
on('cl-fix-accept',accept);
on('cl-fix-relabel',function(ps,note){var c=$('cl-fix-class').value;
ps.forEach(function(p){put(p,'relabel',c,note);});return 'relabel to '+c+': '+plural(ps.length,'image');});
on('cl-fix-exclude',function(ps,note){ps.forEach(function(p){put(p,'exclude','',note);});
return 'excluded: '+plural(ps.length,'image');});
on('cl-fix-keep',function(ps,note){ps.forEach(function(p){put(p,'keep','',note);});
return 'kept: '+plural(ps.length,'image');});
on('cl-fix-undo',function(ps){return 'undone: '+plural(ps.filter(function(p){
return fixes.delete(p);}).length,'row')+' removed';});
// the maps: a colouring's traces, built from the columns when it is chosen
function build(id,k){var f=D.figures[id],c=D.colourings[k],X=C[f.x],Y=C[f.y],
R=f.rows?C[f.rows]:null,n=X.length,src=C[c.source],lk=c.lookup,bits=c.source==='flags',
K=c.cats.length,cat=new Int32Array(n),cnt=new Int32Array(K),type=GL?'scattergl':'scatter',
data=[],rows=[],j,v,r;
for(j=0;j<n;j++){r=R?R[j]:j;v=bits?(src[r]>>lk[0])&1:lk[src[r]+c.shift];
if(v===undefined)v=-1;cat[j]=v;if(v>=0)cnt[v]++;}
function trace(name,len,marker,extra){var t={type:type,mode:'markers',name:name,
x:new Float32Array(len),y:new Float32Array(len),marker:marker,hoverinfo:'none',visible:true};
for(var key in extra)t[key]=extra[key];return t;}
if(K<=D.legendMax){var at=new Int32Array(K),ts=c.cats.map(function(s,q){
return trace(s[0],cnt[q],{color:s[1],symbol:s[2],size:f.size,opacity:0.8});}),
rs=c.cats.map(function(s,q){return new Int32Array(cnt[q]);});
for(j=0;j<n;j++){v=cat[j];if(v<0)continue;r=at[v]++;ts[v].x[r]=X[j];ts[v].y[r]=Y[j];
rs[v][r]=R?R[j]:j;}
for(v=0;v<K;v++)if(cnt[v]){data.push(ts[v]);rows.push(rs[v]);}}
else{var m=0;for(v=0;v<K;v++)m+=cnt[v];
var col=new Array(m),sym=new Array(m),one=trace(c.label+' ('+K+' colours)',m,
{color:col,symbol:sym,size:f.size,opacity:0.8},{showlegend:false}),rr=new Int32Array(m);
for(j=0,r=0;j<n;j++){v=cat[j];if(v<0)continue;one.x[r]=X[j];one.y[r]=Y[j];rr[r]=R?R[j]:j;
col[r]=c.cats[v][1];sym[r]=c.cats[v][2];r++;}
data.push(one);rows.push(rr);}
return {data:data,rows:rows};}
function draw(id){var d=$(id),k=+paint.value,t=build(id,k);ROWS[id]=t.rows;PAINTED[id]=k;
if(DRAWN[id])return Plotly.react(d,t.data,d.layout);
DRAWN[id]=true;
return Plotly.newPlot(d,t.data,D.figures[id].layout,{responsive:true,displaylogo:false})
.then(function(){d.on('plotly_hover',function(ev){hover(id,ev);});d.on('plotly_unhover',unhover);
d.on('plotly_click',function(ev){click(id,ev);});
d.on('plotly_selected',function(ev){if(!ev||!ev.points)return;touched.add(id);
ev.points.forEach(function(p){picked.add(P[rowAt(id,p)]);});showPicks();});});}
var mapSel=$('cl-map-select');
function showMap(){var p=Promise.resolve();D.maps.forEach(function(id){var d=$(id),
shown=id===mapSel.value;d.style.display=shown?'block':'none';
if(shown)p=!DRAWN[id]||PAINTED[id]!==+paint.value?draw(id):Plotly.Plots.resize(d);});
return p;}
mapSel.addEventListener('change',showMap);paint.addEventListener('change',showMap);
gallery(sel.value);showPicks();showFixes();
showMap().then(function(){window.CL_READY=true;});
}
})();"""

def _gallery_options(table: pd.DataFrame) -> tuple[list[tuple[str, str]], dict[str, list[int]]]:
    """The gallery's choices (largest cluster first, then noise, then the suspected label
    issues, each other audit flag and the outliers) and each choice's image rows (nearest the
    cluster's centre, or most severe, first)."""
    labels = table["cluster"].to_numpy()
    dist = np.nan_to_num(table["centre_distance"].to_numpy(dtype=np.float64), nan=np.inf)
    majority = table["cluster_majority_class"].astype(str).to_numpy(dtype=object)
    classes = table["class"].astype(str).to_numpy(dtype=object)
    options, rows = [], {}
    order = np.lexsort((np.arange(len(table)), dist, labels))  # by cluster, distance, row
    values, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
    clusters = sorted(((int(c), s, k) for c, s, k in zip(values, starts, counts) if c != NOISE),
                      key=lambda t: (-t[2], t[0]))
    for c, s, k in clusters:
        members = order[s:s + k]
        share = float(np.mean(classes[members] == majority[members[0]]))
        options.append((f"c{c}", f"cluster {c}: {k:,} images, {share:.0%} {majority[members[0]]}"))
        rows[f"c{c}"] = members.tolist()
    noise = np.flatnonzero(labels == NOISE)
    if len(noise):
        options.append(("noise", f"noise: {len(noise):,} images"))
        rows["noise"] = noise.tolist()
    issue = table["is_label_issue"].to_numpy(dtype=bool)
    if issue.any():
        ranked = np.flatnonzero(issue)
        if "label_issue_rank" in table:
            ranked = ranked[np.argsort(table["label_issue_rank"].to_numpy()[issue], kind="stable")]
        options.append(("issues", f"suspected label issues: {int(issue.sum()):,} images"))
        rows["issues"] = ranked.tolist()
    for kind in present_issues(table):
        flag = table[flag_column(kind)].to_numpy(dtype=bool)
        if kind == "label_issue" or not flag.any():
            continue
        score = table[score_column(kind)].to_numpy(dtype=np.float64)[flag]
        ranked = np.flatnonzero(flag)[np.argsort(-np.nan_to_num(score, nan=-np.inf),
                                                 kind="stable")]
        options.append((f"issue-{kind}", f"{kind.replace('_', ' ')}: {int(flag.sum()):,} images, "
                                         "most severe first"))
        rows[f"issue-{kind}"] = ranked.tolist()
    if "outlier_rank" in table and len(table):
        rank = np.nan_to_num(table["outlier_rank"].to_numpy(dtype=np.float64), nan=np.inf)
        ranked = np.argsort(rank, kind="stable")[:GALLERY_MAX]
        options.append(("outliers", f"outliers: the {len(ranked):,} most outlying images"))
        rows["outliers"] = ranked.tolist()
    return options, rows


def _script_json(obj) -> str:
    # "</" would end the <script> element early
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).replace("</", "<\\/")


def correction_rows(corrections: pd.DataFrame | None) -> list[list[str]]:
    """The corrections in force as ``[path, action, class, note]`` rows of strings, sorted by
    path, a missing value as ``""``; a path given twice keeps its last row. None or an empty
    table gives no rows."""
    if corrections is None or not len(corrections):
        return []
    df = corrections.reindex(columns=CORRECTION_COLUMNS)
    out = {}
    for row in df.itertuples(index=False):
        cells = ["" if v is None or (not isinstance(v, str) and pd.isna(v)) else str(v)
                 for v in row]
        out[cells[0]] = cells
    return [out[p] for p in sorted(out)]


def corrections_panel(classes: list[str], rows: list[list[str]]) -> str:
    """The corrections panel: how to use it, the selection (counter, clear button, its
    thumbnails), the actions, and the table of pending corrections (``rows``, the corrections
    in force until the page changes them) with the download link."""
    opts = "".join(f'<option value="{html.escape(c)}">{html.escape(c)}</option>' for c in classes)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(v, quote=False)}</td>" for v in r) +
                   "</tr>" for r in rows)
    return "\n".join([
        '<h3 id="corrections">Corrections</h3>',
        "<p>Select images: click points on a map, or drag with its box or lasso tool (top right "
        "of the map); tick thumbnails in the gallery, or images in the tables of section 8. "
        "Then act on the selection: <b>accept suggestion</b> (a suspected label issue takes its "
        "suggested class; of each near-duplicate group, the image with most pixels is kept, the "
        "first path on a tie, and the others are excluded), <b>relabel</b> to a class, "
        "<b>exclude</b> from the data set, <b>keep</b> (the image is fine: its audit flags are "
        "silenced), or <b>undo</b> (drop the selected images' rows); the note goes on the rows "
        "the next action makes. The list below starts from the corrections in force: a new choice for an image "
        "replaces its row, and relabelling an image back to its folder's class removes it. "
        "Download <code>corrections.csv</code>, save it as the project's corrections file "
        "(<code>data.corrections</code> in <code>params.yaml</code>, <code>corrections.csv</code> "
        "by default), commit it, run <code>dvc repro</code>, and compare the results with "
        "<code>dvc metrics diff</code>.</p>",
        '<div class="cl-ex-bar"><b id="cl-sel-count">selected: 0</b> '
        '<button type="button" id="cl-sel-clear">clear selection</button></div>',
        '<div class="cl-thumbs" id="cl-sel-strip"></div>',
        '<div class="cl-ex-bar"><button type="button" id="cl-fix-accept">accept suggestion'
        '</button> <button type="button" id="cl-fix-relabel">relabel to</button> '
        f'<select id="cl-fix-class" aria-label="new class">{opts}</select> '
        '<button type="button" id="cl-fix-exclude">exclude</button> '
        '<button type="button" id="cl-fix-keep">keep</button> '
        '<button type="button" id="cl-fix-undo">undo</button> '
        '<input type="text" id="cl-fix-note" size="28" placeholder="note (optional)" '
        'aria-label="note"></div>',
        '<div class="cl-ex-bar" id="cl-fix-msg"></div>',
        f'<div class="cl-ex-bar"><b id="cl-fix-count">{len(rows)} corrections, 0 changed here'
        '</b> <a id="cl-fix-download" download="corrections.csv" href="#">download '
        'corrections.csv</a></div>',
        '<div class="tw" id="cl-fix-list"><table id="cl-fix-table"><thead><tr>' +
        "".join(f"<th>{c}</th>" for c in CORRECTION_COLUMNS) +
        f"</tr></thead><tbody>{body}</tbody></table></div>",
        '<div id="cl-sel-badge"><a href="#corrections">selected: <b id="cl-sel-badge-n">0</b>'
        ' - corrections</a></div>'])


def _page_data(table: pd.DataFrame, maps: list[MapView], macro: dict[str, dict[str, str]],
               rows: np.ndarray, thumbs: dict[int, str],
               cluster_names: dict | None = None) -> tuple[dict, dict, dict]:
    """The page's JSON part, its columns and its thumbnails (by page position)."""
    n = len(table)
    pos = np.full(n, -1, dtype=np.int64)
    pos[rows] = np.arange(len(rows))
    classes = table["class"].astype(str).to_numpy(dtype=object)
    given = table["class"]
    if "given_class" in table:  # the folder's class; missing or empty: no correction
        given = table["given_class"].where(table["given_class"].fillna("").astype(str) != "",
                                           given)
    given = given.astype(str).to_numpy(dtype=object)
    class_order = sorted(set(classes.tolist()) | set(given.tolist()))
    index = pd.Index(class_order)
    cls = index.get_indexer(classes[rows])
    suggested = index.get_indexer(table["suggested_class"].astype(str).to_numpy(dtype=object)[rows])
    issues = present_issues(table)
    flags = np.zeros(len(rows), dtype=np.int32)
    for bit, issue in enumerate(issues):
        flags |= table[flag_column(issue)].to_numpy(dtype=bool)[rows].astype(np.int32) << bit
    labels = table["cluster"].to_numpy()
    cols = {"cls": cls.astype(np.int32), "given": index.get_indexer(given[rows]).astype(np.int32),
            "suggested": np.where(suggested < 0, cls, suggested).astype(np.int32),
            "cluster": labels[rows].astype(np.int32), "flags": flags,
            "dup": (table["duplicate_group"].fillna(-1).astype(np.int64).to_numpy()[rows]
                    if "duplicate_group" in table else np.full(len(rows), -1)).astype(np.int32)}
    if {"width", "height"} <= set(table.columns):
        pixels = table["width"].fillna(0).to_numpy(np.float64) * table["height"].fillna(0)
        cols["pixels"] = np.minimum(pixels.to_numpy()[rows], 2**31 - 1).astype(np.int32)
    paints = colourings(table, macro, class_order, cluster_names)
    if any(c["source"] == "split" for c in paints):
        names = sorted(set(table["split"].astype(str)) - {""})
        cols["split"] = pd.Index(names).get_indexer(
            table["split"].astype(str).to_numpy(dtype=object)[rows]).astype(np.int32)
    figures, ids = {}, [f"cl-map-{i}" for i in range(len(maps))]
    for m, (key, view) in enumerate(zip(ids, maps)):
        at = pos[view.rows]
        keep = at >= 0
        cols[f"x{m}"] = view.xy[keep, 0].astype(np.float32)
        cols[f"y{m}"] = view.xy[keep, 1].astype(np.float32)
        whole = np.array_equal(at[keep], np.arange(len(rows)))
        if not whole:
            cols[f"r{m}"] = at[keep].astype(np.int32)
        shown = int(keep.sum())
        figures[key] = {"x": f"x{m}", "y": f"y{m}", "rows": None if whole else f"r{m}",
                        "points": shown,
                        "size": float(max(3, min(8, 900 / max(shown, 1) ** 0.5))),
                        "layout": map_layout(view, shown, len(view.rows))}
    has_thumb = np.zeros(len(rows), dtype=bool)
    thumb_at = {int(pos[r]): uri for r, uri in sorted(thumbs.items()) if pos[r] >= 0}
    has_thumb[list(thumb_at)] = True
    options, galleries = _gallery_options(table)
    chunks, spans, start = [], {}, 0
    for key, members in galleries.items():
        at = pos[np.asarray(members, dtype=np.int64)]
        at = at[at >= 0]
        cluster = key.startswith("c") or key == "noise"
        if cluster:  # a cluster's gallery shows the images with a thumbnail
            at = at[has_thumb[at]]
        chunks.append(at.astype(np.int32))
        spans[key] = [start, start + len(at), len(members),
                      "nearest the centre first" if cluster else "most severe first"]
        start += len(at)
    cols["gallery"] = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int32)
    first = table.drop_duplicates("cluster")
    majority = {str(int(c)): str(m) for c, m in zip(first["cluster"],
                                                    first["cluster_majority_class"])
                if int(c) != NOISE}
    data = {"classes": class_order, "majority": majority, "options": options,
            "galleries": spans, "galleryMax": GALLERY_MAX, "legendMax": LEGEND_MAX, "maps": ids,
            "figures": figures, "colourings": paints, "images": n}
    return data, cols, thumb_at


def explorer_html(table: pd.DataFrame, maps: list[MapView], macro: dict[str, dict[str, str]],
                  thumbs: dict[int, str], plotly_js: str | None = None, *,
                  corrections: pd.DataFrame | None = None, rows=None,
                  cluster_names: dict | None = None) -> str:
    """The explorer as one HTML fragment.

    Parameters
    ----------
    table : DataFrame
        One row per image, in index order (``data/images.parquet``): at least the columns
        :data:`TABLE_COLUMNS`; ``label_issue_rank``, when present, orders the "suspected label
        issues" gallery, and ``outlier_rank`` makes the outliers' gallery. Optional:
        ``given_class`` (the folder's class when a correction relabelled the image; absent:
        ``class``), ``split``, the audit's flag and score columns, ``duplicate_group``
        (near-duplicate group, -1 for none) and ``width`` and ``height`` (the image kept of
        a near-duplicate group is the one with most pixels).
    maps : list of MapView
        The maps, the first shown first; their ``rows`` index ``table``.
    macro : dict
        Macro cut name -> class -> group name; one colouring per cut (may be empty).
    thumbs : dict
        Row -> thumbnail data URI (:func:`thumbnails`); rows without one show no image.
    plotly_js : str, optional
        plotly.js to inline; by default the bundle of the installed plotly package.
    corrections : DataFrame, optional
        The corrections in force (:data:`CORRECTION_COLUMNS`: every row of the current
        corrections file, excluded images included). The page's list, and the file it
        downloads, start from them.
    rows : array-like of int, optional
        The rows the page holds (:func:`page_rows`), sorted; by default every row. The maps
        and galleries show the images among them; the thumbnails of other rows are left out.
    cluster_names : dict, optional
        Cluster -> name, in the cluster legend (:func:`colourings`).

    Returns
    -------
    str
        ``<style>``, the controls, one ``<div>`` per map, the gallery, the corrections panel
        (:func:`corrections_panel`), and the scripts: plotly.js, ``window.CL_THUMBS``
        (page position -> data URI), ``window.CL_DATA`` (JSON: classes, colourings, maps,
        galleries, corrections in force, and the columns' layout), ``window.CL_BLOCK`` (the
        packed columns, :func:`pack_columns`: ``path``, class codes ``cls``, ``given`` and
        ``suggested``, ``cluster``, audit ``flags`` (bit ``k``: the ``k``-th of
        :func:`present_issues`), ``dup``, ``pixels``, ``split``, each map's ``x``/``y`` (and
        page rows ``r`` when not all) and the galleries' page rows).
    """
    if plotly_js is None:
        from plotly.offline import get_plotlyjs

        plotly_js = get_plotlyjs()
    table = table.reset_index(drop=True)
    rows = np.arange(len(table)) if rows is None else np.asarray(rows, dtype=np.int64)
    data, cols, thumb_at = _page_data(table, maps, macro, rows, thumbs, cluster_names)
    block, data["layout"] = pack_columns(cols, {"path": table["path"].astype(str).to_numpy(
        dtype=object)[rows].tolist()})
    data["fixes"] = correction_rows(corrections)
    ids = data["maps"]
    map_opts = "".join(f'<option value="{i}">{html.escape(v.name)} '
                       f'({data["figures"][i]["points"]:,} images)'
                       f'</option>' for i, v in zip(ids, maps))
    paint_opts = "".join(f'<option value="{k}">{html.escape(c["label"])}</option>'
                         for k, c in enumerate(data["colourings"]))
    gal_opts = "".join(f'<option value="{k}">{html.escape(t)}</option>'
                       for k, t in data.pop("options"))
    figs = "".join(f'<div class="cl-fig" id="{i}"></div>' for i in ids)
    sampled = (f" The page holds {len(rows):,} of them: a seeded sample, every image an audit "
               "flag marks, the most outlying, the thumbnailed ones and the t-SNE's."
               if len(rows) < len(table) else "")
    return "\n".join([
        f"<style>{CSS}</style>",
        '<div class="cl-ex" id="cl-explorer">',
        f'<div class="cl-ex-bar"><label for="cl-map-select">Map:</label> '
        f'<select id="cl-map-select">{map_opts}</select> '
        f'<label for="cl-colour-select">Colour by:</label> '
        f'<select id="cl-colour-select">{paint_opts}</select> '
        f'<span>{len(thumb_at):,} of {len(table):,} images have a thumbnail.{sampled} Hover '
        'over a point to see it; click one to select it and open its cluster below; drag to '
        'zoom (with the box or lasso tool, top right, to select), double-click to reset.'
        '</span></div>',
        figs, '<div id="cl-card"></div>',
        '<h3 id="cluster-gallery">Cluster gallery</h3>',
        '<div class="cl-ex-bar"><label for="cl-gallery-select">Cluster:</label> '
        f'<select id="cl-gallery-select">{gal_opts}</select> '
        '<span id="cl-gallery-note"></span></div>',
        '<div class="cl-thumbs" id="cl-gallery"></div>',
        '<div class="cl-ex-bar"><button type="button" id="cl-gallery-more">show more'
        '</button></div>',
        corrections_panel(data["classes"], data["fixes"]), '</div>',
        f'<script>{plotly_js}</script>',
        f"<script>window.CL_THUMBS={_script_json({str(k): v for k, v in thumb_at.items()})};\n"
        f'window.CL_BLOCK="{block}";\n'
        f"window.CL_DATA={_script_json(data)};</script>",
        f"<script>{JS}</script>"])


def explorer_section(table: pd.DataFrame, groups: dict, root: str | os.PathLike, cap: int,
                     px: int, seed: int, *, max_points: int | None = None,
                     corrections: pd.DataFrame | None = None,
                     leaks: dict | None = None,
                     composition: pd.DataFrame | None = None) -> tuple[str, str, dict]:
    """The report's explorer: its HTML fragment (:func:`explorer_html`), the sentence that
    introduces it, and the route it took.

    Parameters
    ----------
    table : DataFrame
        ``data/images.parquet`` (see :func:`explorer_html`).
    groups : dict
        ``data/macro/groups.json`` (:func:`macro_cuts`).
    root : str or PathLike
        The images' folder (``data.root``), for the thumbnails.
    cap, px, seed : int
        ``report.thumbnails``, ``report.thumbnail_px`` and ``seed`` (:func:`thumbnail_rows`,
        :func:`thumbnails`).
    max_points : int, optional
        ``report.max_points`` (:func:`page_rows`); None: every image.
    corrections : DataFrame, optional
        The corrections in force (see :func:`explorer_html`).
    leaks : dict, optional
        The leak rates (``metrics/neighbours.json: leaks``), said in the note when the folder
        has splits.
    composition : DataFrame, optional
        ``metrics/composition.csv``: its ``name`` of each cluster joins the cluster's legend
        entry.

    Returns
    -------
    tuple
        The fragment, the note, and the route: ``{"route": "all" | "sample", "images": N,
        "points": images in the page, "max_points": the cap}``.
    """
    table = table.reset_index(drop=True)
    n = len(table)
    cap_points = n if max_points is None else max_points
    maps = maps_from_table(table)
    first, rows = explorer_rows(table, maps, cap, cap_points, seed)
    thumbs = thumbnails(root, table["path"].to_numpy(dtype=object), first, px)
    sampled = (f"a sample of {len(thumbs):,} (`report.thumbnails`, seeded by `seed`: the "
               "suspected label issues, each cluster's nearest members and the most severe "
               "of each flag first)" if len(first) < n else f"{len(thumbs):,}")
    note = ("Maps of the images: " + "; ".join(f"**{m.name}**, {len(m.rows):,} images"
                                                for m in maps) +
            f". Thumbnails ({px} px): {sampled} of the {n:,} images.")
    n_flagged = len(flagged_rows(table)) if len(rows) < n else 0
    if len(rows) < n and n_flagged <= cap_points:
        note += (f" The page holds {len(rows):,} of the {n:,} images (`report.max_points`: "
                 f"{cap_points:,}): a sample seeded by `seed`, plus every image an audit flag "
                 "marks, the most outlying, the thumbnailed ones and the t-SNE's; the maps "
                 "draw those.")
    elif len(rows) < n:
        note += (f" The page holds {len(rows):,} of the {n:,} images: {n_flagged:,} are flagged, "
                 f"more than `report.max_points` ({cap_points:,}), so it holds the most severe "
                 "of each flag (the cap shared among them), the most outlying, the thumbnailed "
                 "ones and the t-SNE's. Every image and its flags: `data/images.parquet`.")
    rates = list((leaks or {}).get("by_split_pair", {}).values())
    if rates:
        note += " Leaks between splits (colour by `leak`, or by `split`): " + "; ".join(
            f"{r['earlier']} -> {r['later']}: {r['images_with_copy']:,} of {r['images']:,} "
            f"{r['later']} images have a copy in {r['earlier']} ({100 * r['rate']:.1f}%)"
            for r in rates) + "."
    route = {"route": "sample" if len(rows) < n else "all", "images": n,
             "points": int(len(rows)), "max_points": int(cap_points)}
    names = ({} if composition is None or "name" not in composition
             else dict(zip(composition["cluster"].astype(int), composition["name"].fillna(""))))
    return explorer_html(table, maps, macro_cuts(groups), thumbs, corrections=corrections,
                         rows=rows, cluster_names=names), note, route
