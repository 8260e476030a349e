import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

from clusterlens.data.digits import digit_images, write_digits
from stages import digits as digits_stage


def test_digits_tree_holds_all_sklearn_digits(tmp_path):
    out = tmp_path / "digits"
    assert write_digits(out) == 1797
    bunch = load_digits()
    assert sorted(p.name for p in out.iterdir()) == [str(d) for d in range(10)]
    files = sorted(out.glob("*/*.png"))
    assert len(files) == 1797
    for n in (0, 17, 1796):
        img = Image.open(out / str(bunch.target[n]) / f"{n:04d}.png")
        assert img.size == (8, 8) and img.mode == "L"
        expected = np.rint(bunch.images[n] * 255 / 16).astype(np.uint8)
        np.testing.assert_array_equal(np.asarray(img), expected)


def test_digits_rewrite_is_byte_identical(tmp_path):
    write_digits(tmp_path / "a")
    write_digits(tmp_path / "b")
    a = (tmp_path / "a" / "3" / "0003.png").read_bytes()
    assert a == (tmp_path / "b" / "3" / "0003.png").read_bytes()


def test_digit_images_are_scaled_to_8_bit():
    images, targets = digit_images()
    assert images.shape == (1797, 8, 8) and images.dtype == np.uint8
    assert images.max() == 255 and sorted(set(targets.tolist())) == list(range(10))


def test_stage_writes_the_tree(tmp_path):
    assert digits_stage.run(str(tmp_path / "d")) == {"images": 1797}
    assert len(list((tmp_path / "d").glob("*/*.png"))) == 1797


def test_the_bundled_file_gives_load_digits_arrays_without_importing_sklearn(monkeypatch):
    import subprocess
    import sys

    import clusterlens.data.digits as dg

    assert dg.bundled_csv() is not None and dg.bundled_csv().name == "digits.csv.gz"
    bunch = load_digits()
    images, targets = digit_images()
    np.testing.assert_array_equal(targets, bunch.target)
    np.testing.assert_array_equal(images, np.rint(bunch.images * 255 / 16).astype(np.uint8))
    monkeypatch.setattr(dg, "bundled_csv", lambda: None)  # another layout: load_digits
    fallback = digit_images()
    np.testing.assert_array_equal(fallback[0], images)
    np.testing.assert_array_equal(fallback[1], targets)
    probe = ("import sys; from clusterlens.data.digits import digit_images; digit_images(); "
             "print('sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr
