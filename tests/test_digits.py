import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

from clusterlens.digits import digit_images, write_digits
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
