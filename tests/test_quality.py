"""Image-quality flags (clusterlens.data.quality): detection of planted problems, the folder-relative
size flags, the per-class table and the shortcut rule, and their place in the index stage."""
import io
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

from clusterlens.config.base import parse_stage
from clusterlens.data import quality as q
from clusterlens.data.images import load_rgb
from clusterlens.data.index import INDEX_COLUMNS, build_index
from stages.index import Params, run
from tests.conftest import CIFAR, make_tree

TARGET_RECALL = 0.9
MAX_CLEAN_RATE = 0.02


def jpeg(img: Image.Image) -> Image.Image:
    """Through a quality-90 JPEG file, as an image would reach the index."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    buf.seek(0)
    return load_rgb(buf)


def _pink(rng, h, w, alpha):
    """A 1/f**alpha random field (natural images have about alpha = 1..2), zero mean, unit std."""
    f = np.hypot(np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None, :])
    f[0, 0] = 1.0
    spec = (rng.normal(size=f.shape) + 1j * rng.normal(size=f.shape)) / f ** alpha
    spec[0, 0] = 0
    x = np.fft.irfft2(spec, s=(h, w))
    return (x - x.mean()) / (x.std() + 1e-9)


def photo_like(rng, size) -> Image.Image:
    """A colour texture with a natural image's 1/f spectrum and a few sharp-edged shapes."""
    w, h = size
    lum, tint_field, other = _pink(rng, h, w, 1.3), _pink(rng, h, w, 2.0), _pink(rng, h, w, 2.0)
    base, tint = rng.uniform(0.25, 0.75, size=3), rng.normal(size=3) * 0.15
    arr = np.stack([base[c] + 0.15 * lum + tint[c] * tint_field + 0.1 * rng.normal() * other
                    for c in range(3)], axis=2)
    img = Image.fromarray(np.clip(arr * 255, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(rng.integers(3, 7)):
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
        box = (x0, y0, x0 + rng.uniform(0.1, 0.5) * w, y0 + rng.uniform(0.1, 0.5) * h)
        colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    return jpeg(img)


def exactly_grey(img: Image.Image) -> bool:
    arr = np.asarray(img)
    return bool((arr.max(axis=2) == arr.min(axis=2)).all())


def detection(images, rng) -> dict[str, tuple[float, float]]:
    """Per pixel kind: (recall on the planted copies, false-flag rate on the clean images).

    Exactly grey clean images are grayscale for real: they do not count as false grayscale flags.
    """
    clean = pd.DataFrame([q.image_scores(img) for img in images])
    grey = np.array([exactly_grey(img) for img in images])
    out = {}
    for kind in q.PIXEL_KINDS:
        planted = [q.image_scores(jpeg(q.plant(img, kind, rng=rng)))[f"{kind}_score"] for img in images]
        recall = float(np.mean(np.array(planted) >= q.THRESHOLDS[kind]))
        false = clean[f"{kind}_score"].to_numpy() >= q.THRESHOLDS[kind]
        if kind == "grayscale":
            false &= ~grey
        out[kind] = (recall, float(false.mean()))
    return out


def assert_targets(result: dict, where: str) -> None:
    for kind, (recall, false_rate) in result.items():
        assert recall >= TARGET_RECALL, f"{where}: {kind} recall {recall:.3f}"
        assert false_rate <= MAX_CLEAN_RATE, f"{where}: {kind} clean false-flag rate {false_rate:.3f}"


# --------------------------------------------------------------------------- detection
def test_pixel_flags_find_planted_problems_in_generated_photos():
    rng = np.random.default_rng(0)
    images = [photo_like(rng, (int(rng.integers(96, 161)), int(rng.integers(72, 121))))
              for _ in range(120)]
    assert_targets(detection(images, np.random.default_rng(1)), "generated photos")


@pytest.mark.skipif(not CIFAR.is_dir(), reason="needs ../shared/datasets/cifar10-test")
def test_pixel_flags_find_planted_problems_in_cifar10():
    files = sorted(CIFAR.glob("*/*.jpg"))
    pick = np.random.default_rng(2).choice(len(files), size=300, replace=False)
    images = [load_rgb(files[i]) for i in sorted(pick)]
    assert {img.size for img in images} == {(32, 32)}  # tiny images: the same thresholds
    assert_targets(detection(images, np.random.default_rng(3)), "CIFAR-10")


def folder_sizes(rng, n, median=(120, 90)):
    """Photo-like sizes: area spread by about 25% (log sd), aspect ratio by 15%."""
    area = median[0] * median[1] * np.exp(rng.normal(0, 0.25, n))
    aspect = median[0] / median[1] * np.exp(rng.normal(0, 0.15, n))
    return np.rint(np.sqrt(area * aspect)).astype(int), np.rint(np.sqrt(area / aspect)).astype(int)


@pytest.mark.parametrize("kind", q.SIZE_KINDS)
@pytest.mark.parametrize("uniform", [False, True], ids=["photo-like", "all-32x32"])
def test_size_flags_find_planted_sizes_relative_to_the_folder(kind, uniform):
    rng = np.random.default_rng(4)
    n_clean, n_planted = 400, 40
    w, h = (np.full(n_clean, 32), np.full(n_clean, 32)) if uniform else folder_sizes(rng, n_clean)
    median = (int(np.median(w)), int(np.median(h)))
    planted = [q.plant(Image.new("RGB", (int(a), int(b))), kind, rng=rng, median_size=median).size
               for a, b in zip(w[:n_planted], h[:n_planted])]
    widths = np.concatenate([w, [p[0] for p in planted]])
    heights = np.concatenate([h, [p[1] for p in planted]])
    scores = pd.DataFrame({f"{k}_score": np.zeros(len(widths)) for k in q.PIXEL_KINDS})
    flags = q.flag_table(scores, widths=widths, heights=heights)[f"is_{kind}"].to_numpy()
    assert flags[n_clean:].mean() >= TARGET_RECALL
    assert flags[:n_clean].mean() <= MAX_CLEAN_RATE
    if uniform:
        assert not flags[:n_clean].any() and flags[n_clean:].all()


# --------------------------------------------------------------------------- scores
def test_scores_are_defined_for_flat_tiny_and_non_rgb_images():
    for img in [Image.new("RGB", (1, 1), (90, 90, 90)), Image.new("RGB", (1, 40), (10, 200, 30)),
                Image.new("L", (50, 3), 200), Image.new("RGBA", (9, 9), (255, 0, 0, 128))]:
        scores = q.image_scores(img)
        assert list(scores) == [f"{k}_score" for k in q.PIXEL_KINDS]
        assert all(0.0 <= v <= 1.0 for v in scores.values()), (img.mode, img.size, scores)
    flat = q.image_scores(Image.new("RGB", (64, 48), (128, 128, 128)))
    assert flat["blurry_score"] == 0.0  # no detail to judge: low information, not blurry
    assert flat["low_information_score"] == 1.0 and flat["grayscale_score"] == 1.0


def test_analysis_image_caps_the_longer_side_and_never_enlarges():
    assert q.analysis_image(Image.new("RGB", (1000, 250))).size == (256, 64)
    small = Image.new("RGB", (40, 30))
    assert q.analysis_image(small) is small


def test_flag_table_columns_and_thresholds():
    scores = pd.DataFrame({f"{k}_score": [0.0, 1.0] for k in q.PIXEL_KINDS})
    table = q.flag_table(scores, widths=[100, 100], heights=[100, 100])
    assert list(table.columns) == q.QUALITY_COLUMNS
    assert table[[f"is_{k}" for k in q.PIXEL_KINDS]].to_numpy().tolist() == [[False] * 5, [True] * 5]
    assert (table["odd_size_score"] == 1.0).all() and not table["is_odd_size"].any()
    with pytest.raises(ValueError, match="flag_table"):
        q.flag_table(scores, widths=[100], heights=[100, 100])
    with pytest.raises(ValueError, match="kind must be one of"):
        q.plant(Image.new("RGB", (8, 8)), "noisy", rng=np.random.default_rng(0))


# --------------------------------------------------------------------------- per class
def flag_frame(spec: dict[str, dict[str, int]], sizes: dict[str, int]):
    """Flags where ``spec[class][kind]`` images of each class have the flag, the rest not."""
    rows, classes = [], []
    for cls, n in sizes.items():
        for i in range(n):
            rows.append({f"is_{k}": i < spec.get(cls, {}).get(k, 0) for k in q.KINDS})
            classes.append(cls)
    return pd.DataFrame(rows), classes


def test_shortcut_rule():
    sizes = {"ant": 40, "bee": 40, "cat": 40, "dog": 4, "elk": 25, "fox": 60}
    spec = {"ant": {"dark": 12, "blurry": 10},   # dark 30% vs 1.5% elsewhere: a shortcut
            "bee": {"grayscale": 6, "blurry": 10},  # grayscale 15%: under the 20% bound
            "cat": {"dark": 2, "blurry": 10},     # blurry 25% in ant, bee, cat: lift < 4
            "dog": {"light": 4},                 # 100%, but 4 images: under the count bound
            "elk": {"odd_size": 5},              # 20%, lift 5 / 25 / (0 / 149): on the bounds
            "fox": {"odd_size": 0}}
    flags, classes = flag_frame(spec, sizes)
    found = q.shortcuts(flags, classes)
    assert list(found.columns) == q.SHORTCUT_COLUMNS
    assert list(zip(found["class"], found["kind"])) == [("ant", "dark"), ("elk", "odd_size")]
    ant = found.iloc[0]
    assert (ant["flagged"], ant["images"]) == (12, 40)
    assert ant["rate"] == pytest.approx(0.3) and ant["rest_rate"] == pytest.approx(2 / 169)


def test_uniform_flags_give_no_shortcut():
    # every kind flagged at random in 2% of the images (the highest clean false-flag rate
    # allowed), 30 classes of 20..200 images, several draws
    for seed in range(5):
        rng = np.random.default_rng(seed)
        classes = np.repeat([f"c{i}" for i in range(30)], rng.integers(20, 201, size=30))
        flags = pd.DataFrame({f"is_{k}": rng.random(len(classes)) < MAX_CLEAN_RATE for k in q.KINDS})
        assert q.shortcuts(flags, classes).empty, seed


def test_class_rates_table():
    flags, classes = flag_frame({"ant": {"dark": 12}, "bee": {"grayscale": 1}}, {"bee": 10, "ant": 40})
    table = q.class_rates(flags, classes)
    assert list(table.columns) == ["class", "images"] + [f"{k}_rate" for k in q.KINDS] + ["shortcuts"]
    assert table["class"].tolist() == ["ant", "bee"] and table["images"].tolist() == [40, 10]
    assert table["dark_rate"].tolist() == [0.3, 0.0] and table["grayscale_rate"].tolist() == [0.0, 0.1]
    assert table["shortcuts"].tolist() == ["dark", ""]


def test_a_darkened_class_is_a_shortcut_in_the_index_stage(tmp_path, in_tmp_cwd):
    root = make_tree(tmp_path / "root", {"ant": 12, "bee": 12, "cow": 12}, size=(48, 40))
    rng = np.random.default_rng(5)
    for path in sorted((root / "bee").glob("*.png")):  # every bee image dark
        q.plant(load_rgb(path), "dark", rng=rng).save(path)
    q.plant(load_rgb(root / "ant/000.png"), "grayscale", rng=rng).save(root / "ant/000.png")
    index, _, _ = build_index(root, min_side=8, workers=2)
    assert list(index.columns) == INDEX_COLUMNS
    assert index.groupby("class")["is_dark"].sum().to_dict() == {"ant": 0, "bee": 12, "cow": 0}
    assert index.loc[index["is_grayscale"], "path"].tolist() == ["ant/000.png"]
    assert index[q.FLAG_COLUMNS].dtypes.eq(bool).all()

    params = {"seed": 0, "data": {"root": str(root)},
              "index": {"min_side": 8, "drop_duplicates": False, "workers": 2,
                        "sample_per_class": 2, "sample_classes": 3}}
    metrics = run(parse_stage(params, Params))
    counts = metrics["quality_flags"]
    assert list(counts) == list(q.KINDS) and (counts["dark"], counts["grayscale"]) == (12, 1)
    assert counts["blurry"] == counts["light"] == counts["odd_size"] == counts["odd_aspect_ratio"] == 0
    # near-black images are nearly uniform too: low_information may come with dark, in bee only
    table = pd.read_csv(in_tmp_cwd / "data/quality_by_class.csv", keep_default_na=False)
    assert table["class"].tolist() == ["ant", "bee", "cow"] and table["images"].tolist() == [12] * 3
    assert table["dark_rate"].tolist() == [0.0, 1.0, 0.0]
    assert table["low_information_rate"].tolist()[::2] == [0.0, 0.0]
    assert table["shortcuts"].tolist()[::2] == ["", ""]
    assert "dark" in table["shortcuts"][1].split(";")
    assert metrics["quality_shortcuts"] == len(table["shortcuts"][1].split(";"))
    assert json.loads((in_tmp_cwd / "metrics/index.json").read_text()) == metrics
