"""`index` stage: scan ``data.root`` (one sub-folder per class) into an index table.

Every file under a class folder is opened with Pillow and fully decoded once; what cannot be used
is listed in the rejected table with a reason and left out, never a crash (SPEC D1-D4).

Rules (documented in the README):
- classes are the non-hidden, non-symlinked folders directly under the root, sorted by name;
  files in nested folders of a class belong to that class;
- hidden files and folders (name starting with ``.``) are skipped and listed as ``hidden``;
- folders that are symlinks are not followed; a symlinked file is indexed only when it resolves
  to a file inside the root;
- images smaller than ``index.min_side`` pixels on either side are rejected as ``too_small``;
- exact duplicates (same sha256) are reported; with ``index.drop_duplicates`` every copy after the
  first (in sorted order) is rejected as ``duplicate``;
- every file is decoded exactly as ``extract`` will load it (EXIF orientation, first frame, RGB
  conversion), so an indexed image can always be read by the later stages;
- names that are not valid UTF-8 cannot be written to the output tables: ``bad_filename``.
"""
from __future__ import annotations

import argparse
import errno
import hashlib
import io
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from clusterlens.common import (
    DataError, get_logger, load_params, log_block, matplotlib_setup, param, remove_stale_tmp,
    require_bool, require_int, run_cli, save_figure, write_json, write_table,
)

log = get_logger("index")

INDEX_COLUMNS = ["path", "class", "label", "width", "height", "mode", "format", "n_frames",
                 "bytes", "sha256", "duplicate_of"]
REJECTED_COLUMNS = ["path", "class", "reason", "detail"]
GRAYSCALE_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}


class Rejected(Exception):
    def __init__(self, reason: str, detail: str = ""):
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}")


@dataclass(frozen=True)
class IndexParams:
    root: Path
    min_side: int
    drop_duplicates: bool
    workers: int
    sample_per_class: int
    sample_classes: int
    seed: int

    @classmethod
    def from_params(cls, params: dict) -> "IndexParams":
        root = param(params, "data.root")
        if not isinstance(root, str) or not root:
            raise DataError(f"params.yaml: `data.root` must be a folder path, got {root!r}")
        return cls(
            root=Path(root),
            min_side=require_int("index.min_side", param(params, "index.min_side"), 1),
            drop_duplicates=require_bool("index.drop_duplicates",
                                         param(params, "index.drop_duplicates")),
            workers=require_int("index.workers", param(params, "index.workers"), 1),
            sample_per_class=require_int("index.sample_per_class",
                                         param(params, "index.sample_per_class"), 1),
            sample_classes=require_int("index.sample_classes",
                                       param(params, "index.sample_classes"), 1),
            seed=require_int("seed", param(params, "seed")),
        )


# --------------------------------------------------------------------------- scanning
def check_root(root: Path) -> Path:
    if not root.exists():
        raise DataError(f"data.root: folder {str(root)!r} does not exist; set `data.root` in "
                        "params.yaml to a folder with one sub-folder per class")
    if not root.is_dir():
        raise DataError(f"data.root: {str(root)!r} is not a folder; set `data.root` in "
                        "params.yaml to a folder with one sub-folder per class")
    return root


BAD_NAME_DETAIL = ("the name is not valid UTF-8 and cannot be written to the output tables; "
                   "rename it (e.g. `convmv -f latin1 -t utf8`)")


def is_utf8(name: str) -> bool:
    """False for names holding bytes that are not UTF-8 (Python keeps them as surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable_name(name: str) -> str:
    """The name with undecodable bytes shown as escapes (e.g. ``caf\\xe9.jpg``)."""
    return os.fsencode(name).decode("utf-8", "backslashreplace") if name else name


def symlink_problem(exc: BaseException) -> str:
    """Why a symlink cannot be resolved (Python 3.11 raises RuntimeError on loops, 3.13 ELOOP)."""
    if isinstance(exc, RuntimeError) or getattr(exc, "errno", None) == errno.ELOOP:
        return "symlink loop"
    if isinstance(exc, FileNotFoundError):
        return "dangling symlink: its target does not exist"
    return f"cannot resolve the symlink ({type(exc).__name__}: {exc})"


def scan_tree(root: Path) -> tuple[list[tuple[str, str]], list[dict], list[str]]:
    """List candidate files as (relative posix path, class), the rejected entries, all classes.

    Sorted, so the same folder always gives the same order.
    """
    root = check_root(Path(root))
    real_root = root.resolve()
    candidates: list[tuple[str, str]] = []
    rejected: list[dict] = []
    classes: list[str] = []

    def reject(rel: str, cls: str, reason: str, detail: str = "") -> None:
        rejected.append({"path": printable_name(rel), "class": printable_name(cls),
                         "reason": reason, "detail": detail})

    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as exc:
        raise DataError(f"data.root: cannot list {str(root)!r} ({exc.strerror or exc}); give "
                        "this user read access to it, or set `data.root` to another folder") \
            from None
    for entry in entries:
        rel = entry.name
        if not is_utf8(entry.name):
            reject(rel, "", "bad_filename", BAD_NAME_DETAIL)
        elif entry.name.startswith("."):
            reject(rel, "", "hidden", "hidden entry at the root")
        elif entry.is_symlink() and entry.is_dir():
            reject(rel, "", "symlinked_folder", "folders that are symlinks are not followed")
        elif entry.is_dir(follow_symlinks=False):
            classes.append(entry.name)
        else:
            reject(rel, "", "not_in_class_folder",
                   "files must be inside a class folder: root/<class>/<image>")

    for cls in classes:
        def unlistable(exc: OSError, cls=cls) -> None:  # os.walk would skip it silently
            rel = Path(exc.filename).relative_to(root).as_posix()
            reject(rel, cls, "unreadable", f"cannot list the folder: {exc.strerror or exc}")

        for dirpath, dirnames, filenames in os.walk(root / cls, onerror=unlistable,
                                                    followlinks=False):
            rel_dir = Path(dirpath).relative_to(root).as_posix()
            kept_dirs = []
            for d in sorted(dirnames):
                full = Path(dirpath) / d
                if not is_utf8(d):
                    reject(f"{rel_dir}/{d}", cls, "bad_filename", BAD_NAME_DETAIL)
                elif d.startswith("."):
                    reject(f"{rel_dir}/{d}", cls, "hidden", "hidden folder")
                elif full.is_symlink():
                    reject(f"{rel_dir}/{d}", cls, "symlinked_folder",
                           "folders that are symlinks are not followed")
                else:
                    kept_dirs.append(d)
            dirnames[:] = kept_dirs
            for name in sorted(filenames):
                rel = f"{rel_dir}/{name}"
                full = Path(dirpath) / name
                if not is_utf8(name):
                    reject(rel, cls, "bad_filename", BAD_NAME_DETAIL)
                    continue
                if name.startswith("."):
                    reject(rel, cls, "hidden", "hidden file")
                    continue
                if full.is_symlink():
                    try:
                        target = full.resolve(strict=True)
                    except (OSError, RuntimeError) as exc:
                        reject(rel, cls, "broken_symlink", symlink_problem(exc))
                        continue
                    if not target.is_relative_to(real_root):
                        reject(rel, cls, "symlink_outside_root",
                               "symlinks that leave data.root are not followed")
                        continue
                    if not target.is_file():
                        reject(rel, cls, "not_a_file", "symlink to a non-file")
                        continue
                elif not full.is_file():
                    reject(rel, cls, "not_a_file", "special file (fifo, socket, device)")
                    continue
                candidates.append((rel, cls))
    candidates.sort()
    return candidates, rejected, classes


def bomb_limit() -> int | None:
    """Pillow's safety limit on pixels per image (``Image.MAX_IMAGE_PIXELS``; None = no limit)."""
    return Image.MAX_IMAGE_PIXELS


def inspect_image(path: Path, min_side: int) -> dict:
    """Read, hash and fully decode one file; raise Rejected with a reason if unusable.

    The pixels are decoded once, exactly as ``extract`` loads them (``first_frame_rgb``: first
    frame, EXIF orientation, RGB conversion), so every indexed image can be read later.
    """
    from clusterlens.images import first_frame_rgb

    try:
        data = path.read_bytes()
    except PermissionError as exc:
        raise Rejected("unreadable", f"permission denied: {exc.strerror}") from None
    except OSError as exc:
        raise Rejected("unreadable", str(exc.strerror or exc)) from None
    if not data:
        raise Rejected("empty_file", "0 bytes")
    digest = hashlib.sha256(data).hexdigest()
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise Rejected("not_an_image", "Pillow cannot identify the file") from None
    except Image.DecompressionBombError as exc:
        raise Rejected("decompression_bomb", str(exc).split(".")[0]) from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a rejection
        raise Rejected("corrupt", f"{type(exc).__name__}: {exc}") from None
    limit = bomb_limit()
    pixels = img.size[0] * img.size[1]
    if limit and pixels > limit:  # explicit: Pillow only warns between 1x and 2x the limit
        raise Rejected("decompression_bomb", f"{img.size[0]}x{img.size[1]} = {pixels} pixels "
                       f"exceeds Pillow's limit of {limit} (PIL.Image.MAX_IMAGE_PIXELS)")
    try:
        fmt = img.format or ""
        mode = img.mode
        n_frames = int(getattr(img, "n_frames", 1))
        img.seek(0)
        img.load()
    except Exception as exc:  # noqa: BLE001
        raise Rejected("corrupt", f"{type(exc).__name__}: {exc}") from None
    try:
        width, height = first_frame_rgb(img).size  # what `extract` will see
    except Exception as exc:  # noqa: BLE001 - decodes, but cannot become an RGB picture
        raise Rejected("unsupported_mode", f"mode {mode}: {type(exc).__name__}: {exc}") from None
    if min(width, height) < min_side:
        raise Rejected("too_small", f"{width}x{height} is below index.min_side={min_side}")
    return {"width": width, "height": height, "mode": mode, "format": fmt,
            "n_frames": n_frames, "bytes": len(data), "sha256": digest}


def build_index(root: str | Path, min_side: int = 8, drop_duplicates: bool = False,
                workers: int = 2) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Scan and inspect ``root``. Returns (index, rejected, info).

    index: one row per usable image, sorted by path, columns INDEX_COLUMNS; ``label`` numbers
    the classes that have at least one usable image, in sorted order.
    rejected: one row per file or folder left out, with its reason.
    """
    root = Path(root)
    candidates, rejected, classes = scan_tree(root)
    check_scan(root, classes, candidates, rejected)  # before decoding anything
    rows: list[dict] = []

    def work(item):
        rel, _ = item
        try:
            return inspect_image(root / rel, min_side)
        except Rejected as exc:
            return exc

    # Pillow warns (rather than raises) between 1x and 2x its pixel limit; inspect_image rejects
    # those itself. Filters are process-wide, so they are set here, once, not in each thread.
    with warnings.catch_warnings(), ThreadPoolExecutor(max_workers=workers) as pool:
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        results = pool.map(work, candidates)
        for (rel, cls), res in tqdm(zip(candidates, results), total=len(candidates),
                                    desc="index", unit="img", mininterval=1.0):
            if isinstance(res, Rejected):
                rejected.append({"path": rel, "class": cls, "reason": res.reason,
                                 "detail": res.detail})
            else:
                rows.append({"path": rel, "class": cls, **res})

    index = pd.DataFrame(rows, columns=[c for c in INDEX_COLUMNS if c not in ("label",
                                                                           "duplicate_of")])
    first_path = index.groupby("sha256", sort=False)["path"].transform("first")
    index["duplicate_of"] = np.where(first_path != index["path"], first_path, "")
    if drop_duplicates:
        dups = index["duplicate_of"] != ""
        for rel, cls, first in index.loc[dups, ["path", "class", "duplicate_of"]].to_numpy():
            rejected.append({"path": rel, "class": cls, "reason": "duplicate",
                             "detail": f"same bytes as {first}"})
        index = index[~dups].reset_index(drop=True)

    used = sorted(index["class"].unique())
    label_of = {c: i for i, c in enumerate(used)}
    index.insert(2, "label", index["class"].map(label_of).astype("int64"))
    index = index[INDEX_COLUMNS].reset_index(drop=True)
    rejected_df = pd.DataFrame(rejected, columns=REJECTED_COLUMNS).sort_values(
        "path", kind="stable").reset_index(drop=True)
    info = {"classes_found": classes, "empty_classes": [c for c in classes if c not in label_of]}
    validate_index(index, root, rejected_df, info["empty_classes"])
    return index, rejected_df, info


def rejection_summary(rejected) -> str:
    """E.g. ``3 entries rejected: corrupt 2, not_an_image 1``, or '' when none."""
    reasons = [r["reason"] for r in rejected] if isinstance(rejected, list) else (
        list(rejected["reason"]) if rejected is not None else [])
    if not reasons:
        return ""
    counts = pd.Series(reasons).value_counts().sort_index()
    noun = "entry" if len(reasons) == 1 else "entries"
    return f"{len(reasons)} {noun} rejected: " + ", ".join(f"{k} {v}" for k, v in counts.items())


LAYOUT_HINT = ("set `data.root` in params.yaml to a folder laid out as root/<class>/<image>, "
               "with at least 2 class folders")


def check_scan(root: Path, classes: list[str], candidates: list, rejected: list) -> None:
    """Hard errors visible from the folder listing alone, before any image is decoded."""
    if len(classes) < 2:
        found = f" ({', '.join(repr(c) for c in classes)})" if classes else ""
        plural = "" if len(classes) == 1 else "s"
        raise DataError(f"data.root: {str(root)!r} has {len(classes)} class folder{plural}{found}; "
                        f"{LAYOUT_HINT}")
    if not candidates:
        why = rejection_summary(rejected)
        raise DataError(f"data.root: no image file under {str(root)!r}"
                        + (f" ({why})" if why else "") + f"; {LAYOUT_HINT}")


def validate_index(index: pd.DataFrame, root: Path, rejected=None,
                   empty_classes: list[str] | None = None) -> None:
    """Hard errors after decoding: no usable image, or fewer than 2 classes with one."""
    why = rejection_summary(rejected)
    if index.empty:
        raise DataError(f"data.root: no usable image under {str(root)!r}"
                        + (f" ({why})" if why else "")
                        + f"; fix or remove the broken files, or {LAYOUT_HINT}")
    used = sorted(index["class"].unique())
    if len(used) < 2:
        empty = f"; class folders without a usable image: {', '.join(empty_classes)}" \
            if empty_classes else ""
        raise DataError(f"data.root: {str(root)!r} has usable images in only {len(used)} class "
                        f"({used[0]!r}){empty}" + (f"; {why}" if why else "")
                        + "; clustering against labels needs at least 2 classes: add images to "
                        "another class folder")


# --------------------------------------------------------------------------- metrics
def index_metrics(index: pd.DataFrame, rejected: pd.DataFrame, info: dict) -> dict:
    counts = index["class"].value_counts()
    dup_groups = index[index["duplicate_of"] != ""].groupby("duplicate_of")
    cross = 0
    for first, grp in dup_groups:
        first_cls = index.loc[index["path"] == first, "class"]
        if len(first_cls) == 0 or set(grp["class"]) != {first_cls.iloc[0]}:
            cross += 1
    by_reason = rejected["reason"].value_counts().sort_index()
    modes = index["mode"]
    return {
        "images": int(len(index)),
        "classes": int(len(counts)),
        "empty_classes": len(info.get("empty_classes", [])),
        "per_class_min": int(counts.min()),
        "per_class_median": float(counts.median()),
        "per_class_max": int(counts.max()),
        "per_class_mean": float(counts.mean()),
        "per_class_std": float(counts.std(ddof=1)) if len(counts) > 1 else 0.0,
        "imbalance_ratio": float(counts.max() / counts.min()),
        "rejected": int(len(rejected)),
        "rejected_by_reason": {str(k): int(v) for k, v in by_reason.items()},
        "duplicates": int((index["duplicate_of"] != "").sum()),
        "duplicate_groups": int(dup_groups.ngroups),
        "cross_class_duplicate_groups": int(cross),
        "grayscale_images": int(modes.isin(GRAYSCALE_MODES).sum()),
        "cmyk_images": int((modes == "CMYK").sum()),
        "alpha_images": int(modes.isin(ALPHA_MODES).sum()),
        "palette_images": int((modes == "P").sum()),
        "animated_images": int((index["n_frames"] > 1).sum()),
        "width_median": float(index["width"].median()),
        "height_median": float(index["height"].median()),
        "width_min": int(index["width"].min()),
        "height_min": int(index["height"].min()),
    }


# --------------------------------------------------------------------------- plots
def plot_class_distribution(counts: pd.Series, path: str | Path) -> None:
    import matplotlib.pyplot as plt

    counts = counts.sort_values(ascending=False)
    n = len(counts)
    width = min(max(6.0, 0.28 * n + 2), 60.0)
    fig, ax = plt.subplots(figsize=(width, 4.5))
    ax.bar(range(n), counts.values, color="#4C72B0")
    ax.set_xticks(range(n))
    ax.set_xticklabels(counts.index, rotation=90 if n > 12 else 0,
                       fontsize=max(5, min(10, int(400 / max(n, 1)))))
    ax.axhline(counts.median(), color="#C44E52", ls="--", lw=1,
               label=f"median {counts.median():g}")
    ax.set_xlabel("class")
    ax.set_ylabel("images")
    ax.set_title(f"Class distribution: {int(counts.sum())} images in {n} classes "
                 f"(imbalance max/min {counts.max() / counts.min():.2f})")
    ax.set_ylim(0, counts.max() * 1.15)
    ax.legend(loc="upper right", framealpha=0.9)
    save_figure(fig, path)


def plot_image_sizes(index: pd.DataFrame, path: str | Path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, col in zip(axes, ["width", "height"]):
        values = index[col].to_numpy()
        bins = min(50, max(1, len(np.unique(values))))
        ax.hist(values, bins=bins, color="#55A868", edgecolor="white")
        ax.set_xlabel(f"{col} (pixels)")
        ax.set_ylabel("images")
        ax.set_title(f"{col.capitalize()}: median {np.median(values):g}, "
                     f"range {values.min()}-{values.max()}")
    fig.suptitle(f"Image size distribution (n={len(index)})")
    save_figure(fig, path)


def thumbnail_cell(ax, path=None) -> None:
    """One cell of an image grid: no ticks or frame; the image (up to 128 px) when given."""
    from clusterlens.images import load_rgb

    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if path is not None:
        img = load_rgb(path)
        img.thumbnail((128, 128))
        ax.imshow(img, interpolation="nearest")


def plot_sample_grid(index: pd.DataFrame, root: str | Path, path: str | Path, seed: int,
                     per_class: int = 6, max_classes: int = 10) -> None:
    """A grid of random images: one row per class (a seeded random subset of classes)."""
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    classes = sorted(index["class"].unique())
    if len(classes) > max_classes:
        classes = sorted(rng.choice(classes, size=max_classes, replace=False).tolist())
    fig, axes = plt.subplots(len(classes), per_class,
                             figsize=(1.2 * per_class + 1.5, 1.2 * len(classes) + 0.8),
                             squeeze=False, layout="constrained")
    for r, cls in enumerate(classes):
        paths = index.loc[index["class"] == cls, "path"].to_numpy()
        pick = rng.choice(paths, size=min(per_class, len(paths)), replace=False)
        for c in range(per_class):
            ax = axes[r][c]
            thumbnail_cell(ax, Path(root) / pick[c] if c < len(pick) else None)
            if c == 0:
                ax.set_ylabel(cls, rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle(f"Sample images ({len(classes)} classes x up to {per_class})")
    save_figure(fig, path)


# --------------------------------------------------------------------------- stage
OUT_INDEX = "data/index.parquet"
OUT_REJECTED = "data/rejected.csv"
OUT_METRICS = "metrics/index.json"
OUT_COUNTS = "plots/index/class_counts.csv"
OUT_DIST = "plots/index/class_distribution.png"
OUT_SIZES = "plots/index/image_sizes.png"
OUT_SAMPLES = "plots/index/samples.png"
OUTPUTS = (OUT_INDEX, OUT_REJECTED, OUT_METRICS, OUT_COUNTS, OUT_DIST, OUT_SIZES, OUT_SAMPLES)


def run(params: dict) -> dict:
    p = IndexParams.from_params(params)
    check_root(p.root)
    remove_stale_tmp(*OUTPUTS)  # left by a run killed mid-write
    log_block(log, "index", inputs={"data.root": p.root},
              params={"index.min_side": p.min_side, "index.drop_duplicates": p.drop_duplicates,
                      "index.workers": p.workers, "seed": p.seed})
    index, rejected, info = build_index(p.root, p.min_side, p.drop_duplicates, p.workers)
    metrics = index_metrics(index, rejected, info)
    if info["empty_classes"]:
        log.warning("class folders without a usable image (no label given): %s",
                    ", ".join(info["empty_classes"]))
    if len(rejected):
        log.warning("%d files rejected: %s (see %s)", len(rejected),
                    metrics["rejected_by_reason"], OUT_REJECTED)

    matplotlib_setup()
    counts = index["class"].value_counts().sort_index()
    write_table(OUT_INDEX, index)
    write_table(OUT_REJECTED, rejected)
    write_table(OUT_COUNTS, pd.DataFrame({"class": counts.index, "count": counts.values}))
    plot_class_distribution(counts, OUT_DIST)
    plot_image_sizes(index, OUT_SIZES)
    plot_sample_grid(index, p.root, OUT_SAMPLES, p.seed, p.sample_per_class, p.sample_classes)
    metrics = write_json(OUT_METRICS, metrics)
    log_block(log, "index done", outputs={
        OUT_INDEX: f"{metrics['images']} images, {metrics['classes']} classes",
        OUT_REJECTED: f"{metrics['rejected']} rejected",
        OUT_METRICS: f"imbalance {metrics['imbalance_ratio']:.2f}, "
                     f"{metrics['duplicates']} duplicates",
        "plots": ", ".join([OUT_COUNTS, OUT_DIST, OUT_SIZES, OUT_SAMPLES])})
    return metrics


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Index an image folder (SPEC D1-D4).")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    run(load_params(args.params))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
