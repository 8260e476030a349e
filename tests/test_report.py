"""The report's renderers (markdown and self-contained HTML)."""
import base64

import pandas as pd

from clusterlens import report
from tests.conftest import make_image


def _doc(tmp_path, monkeypatch):
    import numpy as np
    from pathlib import Path

    monkeypatch.chdir(tmp_path)
    png = Path("plots") / "fig.png"  # stages write relative paths, from the project root
    png.parent.mkdir()
    make_image(0, np.random.default_rng(0)).save(png)
    doc = report.Doc()
    doc.h(1, "Title <x>")
    doc.p("some `code` and **bold** & more")
    doc.items(["one", "two"])
    doc.table(pd.DataFrame({"method": ["kmeans", "a|b"], "nmi": [0.123456, None]}))
    doc.fig(png, "A figure")
    doc.fig(Path("plots") / "absent.png", "gone")
    return doc, png


def test_markdown_links_figures_relatively_and_escapes_tables(tmp_path, monkeypatch):
    doc, png = _doc(tmp_path, monkeypatch)
    md = report.render_markdown(doc, tmp_path / "report")
    assert md.startswith("# Title <x>\n")
    assert "| method | nmi |" in md and "| kmeans | 0.1235 |" in md and "a\\|b" in md
    assert "![A figure](../plots/fig.png)" in md and md.count("![") == 1
    assert "- one\n- two" in md
    assert "absent.png` is missing" in md


def test_html_is_self_contained_and_escaped(tmp_path, monkeypatch):
    doc, png = _doc(tmp_path, monkeypatch)
    page = report.render_html(doc, "t")
    assert "<h1>Title &lt;x&gt;</h1>" in page
    assert "<code>code</code>" in page and "<strong>bold</strong>" in page and "&amp;" in page
    data = base64.b64encode(png.read_bytes()).decode()
    assert f"data:image/png;base64,{data}" in page
    assert page.count("<img") == 1 and "src=\"../" not in page
    assert "<td>-</td>" in page  # missing values shown as a dash


def test_timing_sentence_counts_only_the_images_run_through_the_network():
    full = {"seconds": 3.4, "images_per_s": 528.5, "images": 1797, "extracted": 1797,
            "from_store": 0}
    assert report.timing_sentence(full) == ("Throughput of the last run: **528 images/s** "
                                            "(3.4 s for the 1,797 images it extracted).")
    part = {**full, "seconds": 0.5, "images_per_s": 200.0, "extracted": 100, "from_store": 1697}
    assert "0.5 s for the 100 images it extracted; 1,697 more came from the feature store" in \
        report.timing_sentence(part)
    cached = {**full, "seconds": 0.002, "images_per_s": 0.0, "extracted": 0, "from_store": 1797}
    text = report.timing_sentence(cached)
    assert "all 1,797 images' features from the feature store" in text and "images/s" not in text
    old = {"seconds": 2.0, "images_per_s": 50.0, "images": 100}  # a log from before the store
    assert "2.0 s for the 100 images it extracted)" in report.timing_sentence(old)


def test_features_section_describes_a_trained_cnn_and_only_one():
    extract = {"backbone": "scratch_cnn", "weights": "models/backbone", "dim": 256,
               "image_size": 32, "resize": "squash", "device": "cpu", "precision": "fp32"}
    timing = {"seconds": 1.0, "images_per_s": 30.0, "images": 30, "extracted": 30}
    cnn = {"trained": True, "epochs_run": 3, "best_epoch": 2, "best_val_acc": 0.875,
           "best_val_loss": 0.4321, "lr_reductions": 1, "stopped_early": False}
    doc = report.Doc()
    report.section_features(doc, extract, timing, cnn)
    text = [b[1] for b in doc.blocks if b[0] == "p"]
    assert len(text) == 2 and "30 images/s" in text[0]
    assert "trained from scratch (seed 000): 3 epochs, best epoch 2" in text[1]
    assert "validation accuracy 0.875, loss 0.432; 1 learning-rate reductions)" in text[1]
    doc = report.Doc()
    report.section_features(doc, extract, timing, {"trained": False})  # any other backbone
    assert [b[0] for b in doc.blocks] == ["h", "p"]
