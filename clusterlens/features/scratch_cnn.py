"""The scratch CNN's architecture, and loading a trained one (what feature extraction needs).

:class:`ScratchCNN` is the reference Keras model in PyTorch (see
:mod:`clusterlens.features.scratch_cnn_training` for the
recipe that trains it); :func:`load_cnn_features` rebuilds a trained network from the folder
:func:`clusterlens.features.scratch_cnn_training.save_cnn` wrote (``config.json`` +
``weights.npz``, no pickle). Training
code lives in :mod:`clusterlens.features.scratch_cnn_training`, so editing it does not invalidate the features of other
backbones.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from clusterlens.core.devices import resolve_device
from clusterlens.core.errors import DataError

# The architecture's name in config.json: the reference notebook, ``seed000``, that defined the
# Keras model below. Kept as it is, so that the saved model files (and so every stage after
# `backbone`) do not change.
ARCHITECTURE = "seed000_cnn"
FORMAT = "clusterlens-cnn/1"
KERAS_BN_EPS = 1e-3  # keras.layers.BatchNormalization default epsilon
WEIGHTS_FILE = "weights.npz"
CONFIG_FILE = "config.json"


class ScratchCNN(nn.Module):
    """The reference Keras model in PyTorch. ``features`` maps (B, 3, S, S) images in [0, 1] to the
    (B, embedding_dim) ReLU embedding; ``head`` (dropout + dense) gives the class logits."""

    def __init__(self, n_classes: int, filters: Sequence[int] = (32, 64, 128),
                 embedding_dim: int = 256, dropout_conv: float = 0.25,
                 dropout_dense: float = 0.5, batchnorm_momentum: float = 0.99):
        super().__init__()
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        c_in = 3
        for i, c in enumerate(filters):
            block = [nn.Conv2d(c_in, c, 3, padding=1), nn.ReLU(inplace=True),
                     nn.Conv2d(c, c, 3, padding=1), nn.ReLU(inplace=True),
                     # Keras momentum m keeps m of the old moving average; PyTorch's keeps 1 - m
                     nn.BatchNorm2d(c, eps=KERAS_BN_EPS, momentum=1.0 - batchnorm_momentum),
                     nn.MaxPool2d(2)]
            if i > 0:
                block.append(nn.Dropout(dropout_conv))
            layers[f"block{i + 1}"] = nn.Sequential(*block)
            c_in = c
        layers["pool"] = nn.AdaptiveAvgPool2d(1)
        layers["flatten"] = nn.Flatten()
        layers["embedding"] = nn.Linear(c_in, embedding_dim)
        layers["embedding_relu"] = nn.ReLU(inplace=True)
        self.features = nn.Sequential(layers)
        self.head = nn.Sequential(OrderedDict(dropout=nn.Dropout(dropout_dense),
                                              output=nn.Linear(embedding_dim, n_classes)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def regularized_kernels(self) -> list[torch.Tensor]:
        """The kernels the reference model puts ``kernel_regularizer=l2`` on: every conv and
        the embedding dense (not the output dense, not biases, not BatchNorm)."""
        return [m.weight for m in self.features.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]

    def l2_penalty(self) -> torch.Tensor:
        """``sum(w**2)`` over :meth:`regularized_kernels` (multiply by ``l2`` for the loss)."""
        return sum((w * w).sum() for w in self.regularized_kernels())


def read_cnn_config(out_dir: str | Path) -> dict:
    """The ``config.json`` of a trained CNN.

    Parameters
    ----------
    out_dir : str or Path
        The folder :func:`save_cnn` wrote.

    Returns
    -------
    dict
        n_classes, class_names, image_size, filters, embedding_dim, input, seed, params, ...

    Raises
    ------
    FileNotFoundError
        When the folder holds no ``config.json``.
    DataError
        When the file is not a config of this format.
    """
    path = Path(out_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no trained CNN here (train it first: the `backbone` "
                                "stage, or clusterlens.features.scratch_cnn_training.train_cnn)")
    config = json.loads(path.read_text(encoding="utf-8"))
    if config.get("format") != FORMAT:
        raise DataError(f"{path}: not a {FORMAT} config (format {config.get('format')!r})")
    return config


def load_cnn(out_dir: str | Path, device: str | torch.device = "cpu") -> ScratchCNN:
    """Rebuild the trained classifier from ``config.json`` and load ``weights.npz`` strictly;
    eval mode."""
    config = read_cnn_config(out_dir)
    model = ScratchCNN(config["n_classes"], config["filters"], config["embedding_dim"],
                       config["dropout_conv"], config["dropout_dense"],
                       config["batchnorm_momentum"])
    with np.load(Path(out_dir) / WEIGHTS_FILE, allow_pickle=False) as npz:
        state = {k: torch.from_numpy(np.array(npz[k])) for k in npz.files}
    model.load_state_dict(state, strict=True)
    return model.to(resolve_device(device)).eval()


def load_cnn_features(out_dir: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """The trained embedding network, in eval mode.

    Parameters
    ----------
    out_dir : str or Path
        The folder :func:`save_cnn` wrote.
    device : str or torch.device
        Where the network goes.

    Returns
    -------
    torch.nn.Module
        Maps (B, 3, S, S) float images in [0, 1] (no mean/std normalisation) to the
        (B, embedding_dim) ReLU output of the embedding layer.
    """
    return load_cnn(out_dir, device).features.eval()
