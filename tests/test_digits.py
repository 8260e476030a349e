import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

from clusterlens.digits import write_digits


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
