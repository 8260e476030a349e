"""The raw-pixel backbone: the resized image, scaled and flattened."""
import numpy as np
import pytest
from PIL import Image

from clusterlens.core.errors import ParamError
from clusterlens.features.backbones import RAW, build_backbone
from clusterlens.features.extraction import extract_features


# --------------------------------------------------------------------------- raw pixels
def test_raw_pixels_are_the_resized_image_scaled_and_flattened(image_tree):
    paths = sorted(p.relative_to(image_tree).as_posix() for p in image_tree.rglob("*.png"))[:5]
    bb = build_backbone(RAW, "none", 12)
    assert bb.dim == 3 * 12 * 12
    feats, _ = extract_features(bb, image_tree, paths, 12, "squash", batch_size=2, device="cpu",
                                workers=0, precision="fp32", progress=False, jit=True)
    for row, rel in zip(feats, paths):
        img = Image.open(image_tree / rel).convert("RGB").resize((12, 12), Image.BILINEAR)
        want = (np.asarray(img, dtype=np.float32) / 255.0).transpose(2, 0, 1).reshape(-1)
        np.testing.assert_allclose(row, want, atol=1e-6)
    assert feats.min() >= 0 and feats.max() <= 1


def test_raw_pixels_native_size_and_no_weights():
    assert build_backbone(RAW, "DEFAULT", None).dim == 3 * 32 * 32  # image_size: auto
    with pytest.raises(ParamError, match="extract.weights.*raw_pixels.*no weights"):
        build_backbone(RAW, "/some/file.pth", 32)


