"""How often a label-free choice of the clustering model agrees with the NMI one, per data set.

    python -m benchmarks.bench_label_free --cifar /work/shared/datasets/cifar10-test

For each data set: PCA-50 of its features (scikit-learn, seeded), a grid like the pipeline's
(K-Means, and agglomerative trees with the ward, complete, average and single linkages, at
K = C/2, C, 1.5C and 2C for C classes), and the choices of one grid point the pipeline makes
(``clusterlens.clustering.selection.select_model``): by NMI against the labels (the baseline,
what ``select.metric: nmi`` does), by the silhouette in PCA space and by the silhouette in a
10-D UMAP embedding (``silhouette_pca`` and ``silhouette_umap`` of
``clusterlens.clustering.label_free``, on the same seeded sample of at most 5,000 images), each
passing over points whose clusters are uneven (``selection.MIN_EVENNESS``), and the same two
without that rule. Reported: the point each picks, its NMI, whether it is the NMI choice, and
the NMI lost; the JSON also keeps every point's scores and evenness. Data sets:

- ``digits``: the demo's 1,797 digits, ``data/pca.npy`` and ``data/index.parquet`` of this
  repository (run ``dvc repro`` first);
- ``cifar64`` and ``cifar224``: a seeded stratified subset of ``--per-class`` CIFAR-10 test
  images per class, EfficientNet-Lite0 features at 64 and 224 px (squash and centre crop);
- ``generated10`` and ``generated100``: ``benchmarks._util.cnn_like_features`` (1,280-D,
  10 and 100 classes, ``--generated-n`` rows, 5,000 by default).

``--sets`` runs some of them only.

Writes benchmarks/results/label_free.json.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from benchmarks import _util as u
from benchmarks.bench_grid import fmt_table

SAMPLE = 5000
UNGATED = " (no evenness rule)"
CRITERIA = ("nmi", "silhouette_pca", "silhouette_umap", f"silhouette_pca{UNGATED}",
            f"silhouette_umap{UNGATED}")


LINKAGES = ("ward", "complete", "average", "single")  # the pipeline's default linkages


def grid_labels(X: np.ndarray, classes: int, seed: int) -> dict:
    from scipy.cluster.hierarchy import fcluster, linkage
    from sklearn.cluster import KMeans

    ks = sorted({max(2, round(classes * f)) for f in (0.5, 1, 1.5, 2)})
    out = {("kmeans", f"k{k}"): KMeans(k, n_init=3, random_state=seed).fit_predict(X) for k in ks}
    for method in LINKAGES:  # one tree per linkage, cut at every K
        tree = linkage(X, method=method)
        for k in ks:
            out[("agglomerative", f"{method}_k{k}")] = fcluster(tree, k, "maxclust") - 1
    return out


def choose(X: np.ndarray, y: np.ndarray, seed: int) -> dict:
    from sklearn.decomposition import PCA
    from sklearn.metrics import normalized_mutual_info_score as nmi

    from clusterlens.clustering import label_free, umap_embed
    from clusterlens.clustering.metrics import LABEL_FREE, evenness
    from clusterlens.clustering.selection import select_model
    from clusterlens.core.sampling import sample_rows

    X = PCA(min(50, *X.shape), random_state=seed).fit_transform(X).astype(np.float32)
    classes = len(np.unique(y))
    labelings = grid_labels(X, classes, seed)
    rows = sample_rows(len(X), SAMPLE, seed)
    reduced = umap_embed.embed(X[rows], n_components=10, n_neighbors=15, min_dist=0.1,
                               seed=seed)
    scores = {"nmi": {key: float(nmi(y, lab)) for key, lab in labelings.items()},
              "silhouette_pca": label_free.silhouettes(X[rows], labelings, rows),
              "silhouette_umap": label_free.silhouettes(reduced, labelings, rows)}
    results: dict = {}
    for (method, pt), lab in labelings.items():
        results.setdefault(method, {})[pt] = {
            "evenness": round(evenness(lab), 4), "noise_fraction": 0.0,
            **{m: None if v[(method, pt)] is None else round(v[(method, pt)], 4)
               for m, v in scores.items()}}
    ungated = {m: {pt: {**r, "evenness": 1.0} for pt, r in pts.items()}
               for m, pts in results.items()}
    picks = {"nmi": select_model(results, "nmi", 1.0)}
    for crit in LABEL_FREE:
        picks[crit] = select_model(results, crit, 1.0)
        picks[f"{crit}{UNGATED}"] = select_model(ungated, crit, 1.0)
    out = {"n": int(len(X)), "classes": int(classes),
           "points": {f"{m}/{pt}": r for m, pts in results.items() for pt, r in pts.items()}}
    best = results[picks["nmi"]["method"]][picks["nmi"]["point"]]["nmi"]
    for name, pick in picks.items():
        got = results[pick["method"]][pick["point"]]["nmi"]
        out[name] = {"point": f"{pick['method']}/{pick['point']}", "nmi": got,
                     "agrees": (pick["method"], pick["point"]) == (
                         picks["nmi"]["method"], picks["nmi"]["point"]),
                     "nmi_lost": round(best - got, 4)}
    return out


def cifar_features(root: Path, per_class: int, side: int, seed: int):
    from clusterlens.features.extraction import extract_features
    from clusterlens.features.preprocessing import build_for_input

    rng = np.random.default_rng(seed)
    paths, y = [], []
    for c, folder in enumerate(sorted(p for p in root.iterdir() if p.is_dir())):
        files = sorted(f.name for f in folder.glob("*.jpg"))
        for f in sorted(rng.choice(files, per_class, replace=False)):
            paths.append(f"{folder.name}/{f}")
            y.append(c)
    backbone, recipe = build_for_input("efficientnet_lite0", "DEFAULT", side, "auto")
    feats, _ = extract_features(backbone, root, paths, recipe.image_size, recipe.resize,
                                batch_size=64, progress=False, jit=False)
    return feats, np.asarray(y)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cifar", type=Path, default=u.PROJECT.parent / "shared/datasets/cifar10-test")
    ap.add_argument("--per-class", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sets", nargs="+", help="run these data sets only (default: all)")
    ap.add_argument("--generated-n", type=int, default=5000, help="rows of the generated sets")
    ap.add_argument("--out", type=Path, default=u.PROJECT / "benchmarks/results/label_free.json")
    args = ap.parse_args(argv)
    import pandas as pd

    from clusterlens.clustering import umap_embed

    umap_embed.configure_numba(u.PROJECT / ".cache/numba")
    sets = {}
    if (u.PROJECT / "data/pca.npy").is_file():
        sets["digits"] = lambda: (np.load(u.PROJECT / "data/pca.npy"), pd.read_parquet(
            u.PROJECT / "data/index.parquet")["label"].to_numpy())
    if args.cifar.is_dir():
        for side in (64, 224):
            sets[f"cifar{side}"] = lambda s=side: cifar_features(args.cifar, args.per_class, s,
                                                                 args.seed)
    for k in (10, 100):
        sets[f"generated{k}"] = lambda k=k: u.cnn_like_features(args.generated_n, k=k,
                                                                seed=args.seed)
    if args.sets:
        sets = {name: sets[name] for name in args.sets}
    info = u.machine()
    print(u.machine_line(info), flush=True)
    result, rows = {"machine": info, "sets": {}}, []
    for name, load in sets.items():
        X, y = load()
        r = result["sets"][name] = choose(np.asarray(X, dtype=np.float32), y, args.seed)
        for crit in CRITERIA:
            rows.append([name, crit, r[crit]["point"], r[crit]["nmi"], r[crit]["agrees"],
                         r[crit]["nmi_lost"]])
        print(fmt_table(rows, ["data set", "chosen by", "point", "NMI", "= NMI choice",
                               "NMI lost"]), flush=True)
    for crit in CRITERIA[1:]:
        agree = sum(r[crit]["agrees"] for r in result["sets"].values())
        lost = float(np.mean([r[crit]["nmi_lost"] for r in result["sets"].values()]))
        result[crit] = {"agree": agree, "of": len(result["sets"]), "mean_nmi_lost": round(lost, 4)}
        print(f"{crit}: the NMI choice on {agree} of {len(result['sets'])} data sets; "
              f"mean NMI lost {lost:.4f}")
    u.write_result(args.out, result)
    return result


if __name__ == "__main__":
    main()
