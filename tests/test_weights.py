"""Every weights file is loaded without unpickling, torchvision's cached checkpoints included:
a pickle planted in the torch hub cache is refused and never runs, a plain state_dict there is
used as torchvision would use it, and an absent one is downloaded with its hash checked."""
from __future__ import annotations

import ast
import pickle
from pathlib import Path

import pytest
import torch

from clusterlens.core.errors import ParamError
from clusterlens.features.backbones import build_backbone

PROJECT = Path(__file__).resolve().parents[1]
RESNET18_FILE = "resnet18-f37072fd.pth"  # the file name of torchvision's ResNet18 DEFAULT URL


class _Planted:
    """Unpickling this creates ``marker`` (what a malicious checkpoint would do, harmlessly)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    """An empty ``$TORCH_HOME`` with its hub checkpoint folder; downloading is an error."""
    home = tmp_path / "torch_home"
    (home / "hub" / "checkpoints").mkdir(parents=True)
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # no earlier torch.hub.set_dir applies

    def no_download(*args, **kwargs):
        raise AssertionError(f"unexpected download: {args}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    return home


def _checkpoint(home: Path) -> Path:
    return home / "hub" / "checkpoints" / RESNET18_FILE


@pytest.mark.parametrize("form", ["torch.save", "raw pickle"])
def test_a_pickle_planted_in_the_hub_cache_is_refused_and_never_runs(torch_home, tmp_path,
                                                                     form):
    marker = tmp_path / "code_ran"
    planted = _checkpoint(torch_home)
    if form == "torch.save":
        torch.save({"fc.weight": _Planted(marker)}, planted)
    else:
        planted.write_bytes(pickle.dumps({"fc.weight": _Planted(marker)}))
    # the planted file does run code when unpickled (what torchvision's own loader does; the
    # raw pickle then fails torch's format check, after its code ran)
    try:
        torch.load(planted, weights_only=False)
    except RuntimeError:
        assert form == "raw pickle"
    assert marker.exists()
    marker.unlink()

    with pytest.raises(ParamError) as err:
        build_backbone("resnet18", "DEFAULT")
    assert not marker.exists(), "the planted checkpoint was unpickled"
    msg = str(err.value)
    assert "`extract.weights`" in msg and str(planted) in msg and "not unpickled" in msg
    assert "objects other than tensors" in msg and "delete the file" in msg
    with pytest.raises(ParamError, match=RESNET18_FILE):  # the enum name takes the same path
        build_backbone("resnet18", "IMAGENET1K_V1")
    assert not marker.exists()


def test_a_plain_state_dict_in_the_hub_cache_is_used(torch_home):
    from torchvision.models import resnet18

    torch.manual_seed(0)
    saved = resnet18(weights=None).state_dict()
    torch.save(saved, _checkpoint(torch_home))
    bb = build_backbone("resnet18", "DEFAULT")
    assert bb.dim == 512 and bb.weights == "torchvision ResNet18_Weights.IMAGENET1K_V1"
    assert bb.native_size == 224 and bb.interpolation == "bilinear"
    got = bb.model.state_dict()
    assert torch.equal(got["conv1.weight"], saved["conv1.weight"])
    assert torch.equal(got["layer4.1.bn2.running_var"], saved["layer4.1.bn2.running_var"])
    # the torchvision enum is left as it was (its own loader is back in place)
    from torchvision.models import ResNet18_Weights

    assert "get_state_dict" not in ResNet18_Weights.__dict__


def test_a_checkpoint_that_does_not_fit_names_the_file(torch_home):
    torch.save({"fc.weight": torch.zeros(3, 3)}, _checkpoint(torch_home))
    with pytest.raises(ParamError, match=r"`extract.weights`.*" + RESNET18_FILE
                       + r".*does not fit backbone 'resnet18'"):
        build_backbone("resnet18", "DEFAULT")


def test_an_absent_checkpoint_is_downloaded_with_its_hash_checked(torch_home, monkeypatch):
    from torchvision.models import resnet18

    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, Path(dst), hash_prefix))
        torch.save(resnet18(weights=None).state_dict(), dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    build_backbone("resnet18", "DEFAULT")
    assert calls == [("https://download.pytorch.org/models/" + RESNET18_FILE,
                      _checkpoint(torch_home), "f37072fd")]
    build_backbone("resnet18", "DEFAULT")  # now cached: no second download
    assert len(calls) == 1

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    _checkpoint(torch_home).unlink()
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(ParamError, match=r"`extract.weights` could not get resnet18 .*"
                       r"network is unreachable.*Without internet"):
        build_backbone("resnet18", "DEFAULT")


def test_no_code_path_loads_weights_through_an_unpickling_loader():
    """torch.hub / torchvision loaders that unpickle (``load_state_dict_from_url``, a weights
    enum's ``get_state_dict``, ``torch.hub.load``) are never called from clusterlens/ or stages/
    (tests/test_robustness.py checks every ``torch.load`` for ``weights_only=True``)."""
    banned = {"load_state_dict_from_url", "get_state_dict", "load_url"}
    found = []
    files = sorted([*(PROJECT / "clusterlens").rglob("*.py"), *(PROJECT / "stages").glob("*.py")])
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                func = ast.unparse(node.func)
                if func.split(".")[-1] in banned or func == "torch.hub.load":
                    found.append(f"{path.relative_to(PROJECT)}:{node.lineno}: {func}")
    assert found == []


def test_the_sentence_model_ships_safetensors_only():
    """transformers reads all-MiniLM-L6-v2 from the package folder; with no pickle-based weights
    file there (pytorch_model.bin, *.pt, *.pth, *.pkl) it can only load ``model.safetensors``."""
    from clusterlens.features.captions import text_model_path

    folder = text_model_path()
    files = {p.name for p in folder.rglob("*") if p.is_file()}
    assert "model.safetensors" in files
    unsafe = {f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt", ".h5"))}
    assert unsafe == set()
