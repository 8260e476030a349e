"""The report's explorer: interactive 2-D maps of the images and a gallery per cluster.

:func:`explorer_html` returns one HTML fragment (plotly.js inlined, so it works offline from a
``file://`` page) with

- one plotly figure per map (t-SNE, PCA-2D, UMAP when computed), a ``<select>`` to switch
  between them, and a row of plotly buttons to colour the points by class, by cluster (each
  cluster in the colour of its matched class, see :mod:`clusterlens.report.colours`), by macro group
  (one button per cut) or by suspected label issue; one trace per category, so the legend
  names them;
- a hover card: hovering over a point shows its thumbnail, path, class and cluster (plotly
  cannot put an image in its own hover label, so a few lines of JavaScript fill a ``<div>``);
- a gallery: pick a cluster (or "suspected label issues") in a ``<select>``, or click a
  point, and see its members' thumbnails, nearest the cluster's centre first;
- corrections: select images (click points, box or lasso on a map, tick thumbnails in the
  gallery or images in the report's audit tables), act on them (accept the suggestion,
  relabel, exclude, keep, undo), and download the result as ``corrections.csv``
  (:data:`CORRECTION_COLUMNS`), built in the page from the corrections in force plus the new
  choices; no server is needed.

Each thumbnail is stored once, as a WebP data URI in one array indexed by image row; traces
carry only the row numbers. Above a cap the thumbnails are a seeded sample
(:func:`thumbnail_rows`). Element ids are fixed and nothing random or dated is written, so the
same inputs give the same bytes.
"""
from __future__ import annotations

import base64
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
from clusterlens.report.colours import MARKERS, NOISE_COLOUR, class_colours, cluster_styles, palette

ISSUE_COLOUR = "#d62728"
GALLERY_MAX = 200  # thumbnails shown at once in the gallery
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
    rest = np.setdiff1d(np.arange(n), np.asarray(keep, dtype=np.int64))
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
    then each cluster's ``per_cluster`` members nearest its centre (largest cluster first)."""
    _, galleries = _gallery_options(table.reset_index(drop=True))
    first = list(galleries.get("issues", []))
    for key, rows in galleries.items():
        if key.startswith("c"):
            first.extend(rows[:per_cluster])
    return first


def maps_from_table(table: pd.DataFrame) -> list[MapView]:
    """The maps of the per-image table: the t-SNE (its rows with coordinates: the sample the
    ``tsne`` stage embedded) when there is one, and the PCA-2D view of every image."""
    out = []
    if {"tsne_x", "tsne_y"} <= set(table.columns):
        xy = table[["tsne_x", "tsne_y"]].to_numpy(dtype=np.float64)
        rows = np.flatnonzero(np.isfinite(xy).all(axis=1))
        if len(rows):
            note = "all" if len(rows) == len(table) else f"a seeded sample of {len(table):,}"
            out.append(MapView("t-SNE", rows, xy[rows], note))
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


# --------------------------------------------------------------------------- traces
def _round(values: np.ndarray) -> list:
    return [float(f"{v:.4g}") for v in np.asarray(values, dtype=np.float64)]


def colourings(table: pd.DataFrame, macro: dict[str, dict[str, str]]) -> list[tuple]:
    """The ways to colour the points, as ``(button label, groups)``.

    ``groups`` is a list of ``(legend name, colour, plotly symbol, boolean mask over the table's
    rows)``. ``macro`` maps a cut name (e.g. ``g5``) to class -> group name.
    """
    classes = table["class"].astype(str).to_numpy(dtype=object)
    labels = table["cluster"].to_numpy()
    class_order = sorted(set(classes.tolist()))
    colours = class_colours(class_order)
    out = [("class", [(c, colours[c], "circle", classes == c) for c in class_order])]
    splits = table["split"].astype(str).to_numpy(dtype=object) if "split" in table else None
    if splits is not None and len(set(splits.tolist()) - {""}) >= 2:
        names = sorted(set(splits.tolist()) - {""})
        cols = dict(zip(names, palette(len(names))))
        out.append(("split", [(s, cols[s], "circle", splits == s) for s in names]))
    styles = cluster_styles(labels, classes, class_order)
    by_cluster = [(s.name(c), s.colour, MARKERS[s.marker][1], labels == c)
                  for c, s in styles.items()]
    if (labels == NOISE).any():
        by_cluster.append(("noise", NOISE_COLOUR, "x", labels == NOISE))
    out.append(("cluster", by_cluster))
    for cut, group_of in macro.items():
        names = sorted(set(group_of.values()), key=str)
        cols = dict(zip(names, palette(len(names))))
        member = np.array([group_of.get(c, "") for c in classes], dtype=object)
        groups = []
        for g in names:
            members = sorted(c for c, v in group_of.items() if v == g)
            label = ", ".join(members[:4]) + (f" +{len(members) - 4}" if len(members) > 4 else "")
            groups.append((f"{g}: {label}", cols[g], "circle", member == g))
        out.append((f"macro {cut}", groups))
    for issue in present_issues(table):
        flag = table[flag_column(issue)].to_numpy(dtype=bool)
        name = "suspected label issue" if issue == "label_issue" else issue.replace("_", " ")
        off = "no suspected issue" if issue == "label_issue" else f"not {name}"
        out.append((issue.replace("_", " "), [(off, "#c7c7c7", "circle", ~flag),
                                              (name, ISSUE_COLOUR, "circle", flag)]))
    return out


def present_issues(table: pd.DataFrame) -> list[str]:
    """The audit's issue types (:data:`clusterlens.audit.issues.ISSUE_TYPES`) whose flag column
    the table has, label issues first."""
    return [i for i in ("label_issue", *(t for t in ISSUE_TYPES if t != "label_issue"))
            if flag_column(i) in table]


def map_figure(view: MapView, table: pd.DataFrame, macro: dict) -> dict:
    """The plotly figure (as a plain dict) of one map: every colouring's traces, the first
    (by class) visible, and one button per colouring."""
    sub = table.iloc[view.rows].reset_index(drop=True)
    marker_px = float(max(3, min(8, 900 / max(len(sub), 1) ** 0.5)))
    traces, spans = [], []
    for label, groups in colourings(sub, macro):
        start = len(traces)
        for name, colour, symbol, mask in groups:
            if not mask.any():
                continue
            traces.append({
                "type": "scatter", "mode": "markers", "name": name,
                "x": _round(view.xy[mask, 0]), "y": _round(view.xy[mask, 1]),
                "customdata": [int(r) for r in view.rows[mask]],
                "marker": {"color": colour, "symbol": symbol, "size": marker_px,
                           "opacity": 0.8}, "hoverinfo": "none", "visible": not spans})
        spans.append((label, start, len(traces)))
    buttons = [{"label": label, "method": "restyle",
                "args": [{"visible": [start <= i < end for i in range(len(traces))]}]}
               for label, start, end in spans]
    layout = {
        "title": {"text": f"{view.name}: {len(view.rows):,} images" +
                  (f" ({view.note})" if view.note else ""),
                  "x": 0.01, "xanchor": "left", "y": 0.975, "yref": "container"},
        "xaxis": {"title": {"text": f"{view.name} 1"}, "zeroline": False},
        "yaxis": {"title": {"text": f"{view.name} 2"}, "zeroline": False},
        "height": 640, "margin": {"l": 50, "r": 10, "t": 90, "b": 45},
        "legend": {"itemsizing": "constant", "font": {"size": 10}},
        "hovermode": "closest", "dragmode": "zoom",
        "updatemenus": [{"type": "buttons", "direction": "right", "showactive": True,
                         "x": 0.09, "xanchor": "left", "y": 1.1, "yanchor": "top",
                         "pad": {"r": 4, "t": 0}, "buttons": buttons}],
        "annotations": [{"text": "colour by:", "showarrow": False, "xref": "paper",
                         "yref": "paper", "x": 0, "xanchor": "left", "y": 1.085,
                         "yanchor": "top"}]}
    return {"data": traces, "layout": layout}


# --------------------------------------------------------------------------- the page part
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
border:1px solid #999;border-radius:3px;padding:2px 8px;font-size:12px}"""

JS = """(function(){
var D=window.CL_DATA,T=window.CL_THUMBS;
function $(id){return document.getElementById(id);}
function info(i){var c=D.cluster[i];return '<b>'+esc(D.path[i])+'</b><br>class: '+
esc(D.classes[D.cls[i]])+(D.given[i]!==D.cls[i]?' (relabelled; folder: '+
esc(D.classes[D.given[i]])+')':'')+'<br>cluster: '+
(c<0?'noise':c+' (mostly '+esc(D.majority[i])+')')+
(D.issue[i]?'<br><span style="color:#d62728">suspected label issue: '+
esc(D.classes[D.suggested[i]])+'?</span>':'');}
function esc(s){return String(s).replace(/[&<>"]/g,function(m){return {'&':'&amp;',
'<':'&lt;','>':'&gt;','"':'&quot;'}[m];});}
var card=$('cl-card');
function hover(ev){var p=ev.points[0],i=p.customdata;
card.innerHTML=(T[i]?'<img alt="" src="'+T[i]+'">':'<i>(no thumbnail: sampled out)</i>')+
'<div>'+info(i)+'</div>';card.dataset.row=i;card.style.display='block';
var e=ev.event||{},x=(e.clientX||0)+16,y=(e.clientY||0)+16;
if(x+270>window.innerWidth)x=Math.max(0,x-300);if(y+200>window.innerHeight)y=Math.max(0,y-220);
card.style.left=x+'px';card.style.top=y+'px';}
function unhover(){card.style.display='none';}
// the selection: a set of image paths, shared by the maps, the gallery and the report's tables
var picked=new Set(),touched=new Set(),rowOf=new Map();
D.path.forEach(function(p,i){rowOf.set(p,i);});
function cmp(a,b){return a<b?-1:a>b?1:0;}
function sorted(it){return Array.from(it).sort(cmp);}
function thumb(i){var p=D.path[i],off=D.cluster[i]>=0&&D.classes[D.cls[i]]!==D.majority[i];
return '<figure><label>'+(T[i]?'<img'+(off?' class="off"':'')+' alt="" title="'+esc(p)+
'" src="'+T[i]+'">':'<span class="cl-nothumb">'+esc(p)+'</span>')+
'<input type="checkbox" class="cl-pick" data-path="'+esc(p)+'"'+(picked.has(p)?' checked':'')+
'>'+esc(D.classes[D.cls[i]])+'</label></figure>';}
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
// the gallery
var sel=$('cl-gallery-select');
function gallery(key){var rows=D.galleries[key]||[],
shown=rows.filter(function(i){return T[i];}).slice(0,D.galleryMax);
var n=rows.filter(function(i){return T[i];}).length;
$('cl-gallery').innerHTML=shown.map(thumb).join('');$('cl-gallery-note').textContent=
'showing '+shown.length+' of '+rows.length+' images'+(shown.length<rows.length?
' (nearest the centre first; '+(n<rows.length?(rows.length-n)+' have no thumbnail, ':'')+
'at most '+D.galleryMax+' shown)':'');}
sel.addEventListener('change',function(){gallery(sel.value);});
function click(ev){var i=ev.points[0].customdata,k=D.cluster[i]<0?'noise':'c'+D.cluster[i];
toggle(D.path[i]);if(D.galleries[k]){sel.value=k;gallery(k);}}
// the corrections: path -> [path, action, class, note], starting from the file in force
var seed=new Map(),fixes=new Map(),url=null;
D.fixes.forEach(function(r){seed.set(r[0],r);fixes.set(r[0],r);});
function put(p,action,cls,note){var i=rowOf.get(p);
if(action==='relabel'&&i!==undefined&&cls===D.classes[D.given[i]])fixes.delete(p);
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
ps.forEach(function(p){var i=rowOf.get(p);if(i!==undefined&&D.dup[i]>=0)groups.set(D.dup[i],[]);});
if(groups.size)D.dup.forEach(function(g,i){if(groups.has(g))groups.get(g).push(i);});
groups.forEach(function(m,g){m.sort(function(a,b){
return (D.pixels?D.pixels[b]-D.pixels[a]:0)||cmp(D.path[a],D.path[b]);});
m.slice(1).forEach(function(i){put(D.path[i],'exclude','',note);gone.add(D.path[i]);});
said.push('near-duplicate group '+g+': kept '+D.path[m[0]]+', excluded '+(m.length-1));});
ps.forEach(function(p){var i=rowOf.get(p);if(gone.has(p))return;
if(i!==undefined&&D.issue[i]){put(p,'relabel',D.classes[D.suggested[i]],note);rel++;}
else if(i===undefined||D.dup[i]<0)none++;});
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
// the maps
var mapSel=$('cl-map-select');
function showMap(){D.maps.forEach(function(id){var d=$(id);
d.style.display=(id===mapSel.value)?'block':'none';if(id===mapSel.value)Plotly.Plots.resize(d);});}
mapSel.addEventListener('change',showMap);
D.maps.forEach(function(id){var f=D.figures[id],d=$(id);
Plotly.newPlot(d,f.data,f.layout,{responsive:true,displaylogo:false});
d.on('plotly_hover',hover);d.on('plotly_unhover',unhover);d.on('plotly_click',click);
d.on('plotly_selected',function(ev){if(!ev||!ev.points)return;touched.add(id);
ev.points.forEach(function(p){picked.add(D.path[p.customdata]);});showPicks();});});
showMap();gallery(sel.value);showPicks();showFixes();
})();"""


def _gallery_options(table: pd.DataFrame) -> tuple[list[tuple[str, str]], dict[str, list[int]]]:
    """The gallery's choices (largest cluster first, then noise, then the suspected label
    issues) and each choice's image rows (nearest the cluster's centre first)."""
    labels = table["cluster"].to_numpy()
    dist = table["centre_distance"].to_numpy(dtype=np.float64)
    options, rows = [], {}
    sizes = pd.Series(labels[labels != NOISE]).value_counts()
    order = sorted(sizes.index, key=lambda c: (-sizes[c], c))
    majority = table["cluster_majority_class"].astype(str).to_numpy(dtype=object)
    classes = table["class"].astype(str).to_numpy(dtype=object)
    for c in order:
        members = np.flatnonzero(labels == c)
        members = members[np.lexsort((members, np.nan_to_num(dist[members], nan=np.inf)))]
        share = float(np.mean(classes[members] == majority[members[0]]))
        options.append((f"c{c}", f"cluster {c}: {len(members):,} images, "
                                  f"{share:.0%} {majority[members[0]]}"))
        rows[f"c{c}"] = [int(r) for r in members]
    noise = np.flatnonzero(labels == NOISE)
    if len(noise):
        options.append(("noise", f"noise: {len(noise):,} images"))
        rows["noise"] = [int(r) for r in noise]
    issue = table["is_label_issue"].to_numpy(dtype=bool)
    if issue.any():
        ranked = table.index[issue][np.argsort(
            table.loc[issue, "label_issue_rank"].to_numpy(), kind="stable")] \
            if "label_issue_rank" in table else table.index[issue]
        options.append(("issues", f"suspected label issues: {int(issue.sum()):,} images"))
        rows["issues"] = [int(r) for r in ranked]
    for kind in present_issues(table):
        flag = table[flag_column(kind)].to_numpy(dtype=bool)
        if kind == "label_issue" or not flag.any():
            continue
        score = table[score_column(kind)].to_numpy(dtype=np.float64)[flag]
        ranked = table.index[flag][np.argsort(-np.nan_to_num(score, nan=-np.inf), kind="stable")]
        options.append((f"issue-{kind}", f"{kind.replace('_', ' ')}: {int(flag.sum()):,} images, "
                                         "most severe first"))
        rows[f"issue-{kind}"] = [int(r) for r in ranked]
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


def explorer_html(table: pd.DataFrame, maps: list[MapView], macro: dict[str, dict[str, str]],
                  thumbs: dict[int, str], plotly_js: str | None = None, *,
                  corrections: pd.DataFrame | None = None) -> str:
    """The explorer as one HTML fragment.

    Parameters
    ----------
    table : DataFrame
        One row per image, in index order (``data/images.parquet``): at least the columns
        :data:`TABLE_COLUMNS`; ``label_issue_rank``, when present, orders the "suspected label
        issues" gallery. Optional: ``given_class`` (the folder's class when a correction
        relabelled the image; absent: ``class``), ``duplicate_group`` (near-duplicate group,
        -1 for none) and ``width`` and ``height`` (the image kept of a near-duplicate group
        is the one with most pixels).
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

    Returns
    -------
    str
        ``<style>``, the controls, one ``<div>`` per map, the gallery, the corrections panel
        (:func:`corrections_panel`), and the scripts.
    """
    if plotly_js is None:
        from plotly.offline import get_plotlyjs

        plotly_js = get_plotlyjs()
    table = table.reset_index(drop=True)
    classes = table["class"].astype(str).to_numpy(dtype=object)
    given = table["class"]
    if "given_class" in table:  # the folder's class; missing or empty: no correction
        given = table["given_class"].where(table["given_class"].fillna("").astype(str) != "",
                                           given)
    given = given.astype(str).to_numpy(dtype=object)
    class_order = sorted(set(classes.tolist()) | set(given.tolist()))
    code = {c: i for i, c in enumerate(class_order)}
    dup = table["duplicate_group"].fillna(-1).astype(int).tolist() \
        if "duplicate_group" in table else [-1] * len(table)
    pixels = (table["width"].fillna(0) * table["height"].fillna(0)).astype(np.int64).tolist() \
        if {"width", "height"} <= set(table.columns) else None
    suggested = table["suggested_class"].astype(str).to_numpy(dtype=object)
    ids = [f"cl-map-{i}" for i in range(len(maps))]
    options, galleries = _gallery_options(table)
    data = {
        "path": table["path"].astype(str).tolist(), "classes": class_order,
        "cls": [code[c] for c in classes], "cluster": [int(c) for c in table["cluster"]],
        "majority": table["cluster_majority_class"].astype(str).tolist(),
        "issue": [int(v) for v in table["is_label_issue"].to_numpy(dtype=bool)],
        "suggested": [code.get(s, code[c]) for s, c in zip(suggested, classes)],
        "given": [code[g] for g in given], "dup": dup, "pixels": pixels,
        "fixes": correction_rows(corrections),
        "galleries": galleries, "galleryMax": GALLERY_MAX, "maps": ids,
        "figures": {i: map_figure(v, table, macro) for i, v in zip(ids, maps)}}
    thumb_list = [thumbs.get(i) for i in range(len(table))]
    map_opts = "".join(f'<option value="{i}">{html.escape(v.name)} ({len(v.rows):,} images)'
                       f'</option>' for i, v in zip(ids, maps))
    gal_opts = "".join(f'<option value="{k}">{html.escape(t)}</option>' for k, t in options)
    figs = "".join(f'<div class="cl-fig" id="{i}"></div>' for i in ids)
    n_thumbs = sum(t is not None for t in thumb_list)
    return "\n".join([
        f"<style>{CSS}</style>",
        '<div class="cl-ex" id="cl-explorer">',
        f'<div class="cl-ex-bar"><label for="cl-map-select">Map:</label> '
        f'<select id="cl-map-select">{map_opts}</select> '
        f'<span>{n_thumbs:,} of {len(table):,} images have a thumbnail. Hover over a point to '
        'see it; click one to select it and open its cluster below; drag to zoom (with the box '
        'or lasso tool, top right, to select), double-click to reset.</span></div>',
        figs, '<div id="cl-card"></div>',
        '<h3 id="cluster-gallery">Cluster gallery</h3>',
        '<div class="cl-ex-bar"><label for="cl-gallery-select">Cluster:</label> '
        f'<select id="cl-gallery-select">{gal_opts}</select> '
        '<span id="cl-gallery-note"></span></div>',
        '<div class="cl-thumbs" id="cl-gallery"></div>',
        corrections_panel(class_order, data["fixes"]), '</div>',
        f'<script>{plotly_js}</script>',
        f"<script>window.CL_THUMBS={_script_json(thumb_list)};\n"
        f"window.CL_DATA={_script_json(data)};</script>",
        f"<script>{JS}</script>"])


def explorer_section(table: pd.DataFrame, groups: dict, root: str | os.PathLike, cap: int,
                     px: int, seed: int, *,
                     corrections: pd.DataFrame | None = None,
                     leaks: dict | None = None) -> tuple[str, str]:
    """The report's explorer: its HTML fragment (:func:`explorer_html`) and the sentence that
    introduces it.

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
    corrections : DataFrame, optional
        The corrections in force (see :func:`explorer_html`).
    leaks : dict, optional
        The leak rates (``metrics/neighbours.json: leaks``), said in the note when the folder
        has splits.

    Returns
    -------
    tuple of str
        The fragment and the note.
    """
    rows = thumbnail_rows(len(table), cap, seed, first=priority_rows(table))
    thumbs = thumbnails(root, table["path"].to_numpy(dtype=object), rows, px)
    maps = maps_from_table(table)
    sampled = (f"a sample of {len(thumbs):,} (`report.thumbnails`, seeded by `seed`: the "
               "suspected label issues and each cluster's nearest members first)"
               if len(rows) < len(table) else f"{len(thumbs):,}")
    note = ("Maps of the images: " + "; ".join(f"**{m.name}**, {len(m.rows):,} images"
                                                for m in maps) +
            f". Thumbnails ({px} px): {sampled} of the {len(table):,} images.")
    rates = list((leaks or {}).get("by_split_pair", {}).values())
    if rates:
        note += " Leaks between splits (colour by `leak`, or by `split`): " + "; ".join(
            f"{r['earlier']} -> {r['later']}: {r['images_with_copy']:,} of {r['images']:,} "
            f"{r['later']} images have a copy in {r['earlier']} ({100 * r['rate']:.1f}%)"
            for r in rates) + "."
    return explorer_html(table, maps, macro_cuts(groups), thumbs,
                         corrections=corrections), note
