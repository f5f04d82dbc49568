"""The best model as users take it away: images in, class names and probabilities out.

Two forms of one trained network, both plain PyTorch (search/record/model_flavour.py logs them to MLflow as
the two flavours of one model):

- `Classifier`, an nn.Module taking float 0..1 (N, C, H, W) images, the training data's normalisation
  inside, returning logits (N, classes): what `mlflow.pytorch.load_model` gives back.
- `ImageClassifier`, what `mlflow.pyfunc.load_model` gives back (`_load_pyfunc` is its loader): uint8
  (N, H, W, C) images as PIL gives them, of any size (resized and centre-cropped as the data set was,
  core/images.py); it returns a DataFrame with the class name, its probability, and one `p_<class>`
  column per class.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from core.images import fit_array

META_FILE = "classifier.json"  # classes, image size, normalisation: beside the saved weights
BATCH = 128  # images per forward pass when predicting


class Classifier(nn.Module):
    """A trained net with its input normalisation: float 0..1 (N, C, H, W) in, logits out."""

    def __init__(self, net: nn.Module, mean: tuple[float, ...], std: tuple[float, ...],
                 classes: list[str], image_size: int):
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean and std differ in length: {len(mean)} vs {len(std)}")
        self.net = net
        # Per channel, on the 0..1 scale of the input: what the data set's train split had.
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.classes, self.image_size = list(classes), int(image_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) float 0..1
        return self.net((x - self.mean) / self.std)  # (N, classes) logits

    def meta(self) -> dict[str, Any]:
        """What the pyfunc form needs beside the weights (and what the model card states)."""
        return {"classes": self.classes, "image_size": self.image_size,
                "channels": int(self.mean.shape[1]),
                "mean": [round(float(m), 6) for m in self.mean.flatten()],
                "std": [round(float(s), 6) for s in self.std.flatten()]}


class ImageClassifier:
    """uint8 images (N, H, W, C) of any size in; class names and probabilities out."""

    def __init__(self, model: nn.Module, classes: list[str], image_size: int, channels: int):
        self.model, self.classes = model, list(classes)
        self.image_size, self.channels = int(image_size), int(channels)

    def __repr__(self) -> str:
        return (f"ImageClassifier(classes={len(self.classes)}, image_size={self.image_size}, "
                f"channels={self.channels})")

    def predict(self, images: Any, params: dict | None = None):
        """A DataFrame, one row per image: `class`, `probability`, then `p_<class>` for each class."""
        import pandas as pd

        probs = self.probabilities(images)
        best = probs.argmax(1)
        columns = {"class": [self.classes[i] for i in best],
                   "probability": probs[np.arange(len(best)), best].astype(np.float64)}
        columns |= {f"p_{c}": probs[:, i].astype(np.float64) for i, c in enumerate(self.classes)}
        return pd.DataFrame(columns)

    @torch.no_grad()
    def probabilities(self, images: Any) -> np.ndarray:
        """(N, classes) float32 class probabilities of the images."""
        x = self.pixels(images)
        out = []
        for start in range(0, len(x), BATCH):
            batch = torch.from_numpy(x[start:start + BATCH]).float().div_(255)
            out.append(torch.softmax(self.model(batch).float(), dim=1))
        return torch.cat(out).numpy()

    def pixels(self, images: Any) -> np.ndarray:
        """The images checked and made (N, C, size, size) uint8; a clear error if they are not
        uint8 (N, H, W, C) with this model's channels."""
        c = self.channels
        shape = f"(N, H, W, {c})" + (" or (N, H, W)" if c == 1 else "")
        how = "np.asarray(PIL.Image.open(f).convert('" + ("L" if c == 1 else "RGB") + "'))"
        if not isinstance(images, np.ndarray):
            raise TypeError(f"expected a numpy array of images {shape}, uint8 (what {how} gives, "
                            f"stacked), got {type(images).__name__}")
        if images.dtype != np.uint8:
            raise TypeError(f"expected uint8 pixels 0..255 (what {how} gives), got dtype "
                            f"{images.dtype}; the model scales and normalises them itself")
        if c == 1 and images.ndim == 3:
            images = images[..., None]
        if images.ndim != 4 or images.shape[3] != c or 0 in images.shape:
            raise ValueError(f"expected images of shape {shape} with N, H, W > 0, got "
                             f"{images.shape}; stack {how} of each image")
        if images.max() <= 1:
            # What 0..1 floats become when cast to uint8, as MLflow's server casts JSON numbers to
            # the signature's dtype: a wrong answer unless refused here.
            raise ValueError("every pixel is 0 or 1: expected pixels 0..255 (0..1 floats cast to "
                             f"uint8 become 0s and 1s); send {how}, unscaled")
        return fit_array(np.ascontiguousarray(images.transpose(0, 3, 1, 2)), self.image_size)


def write_meta(folder: str | Path, classifier: Classifier) -> None:
    (Path(folder) / META_FILE).write_text(json.dumps(classifier.meta(), indent=2))


def _load_pyfunc(data_path: str, model_config: dict | None = None) -> ImageClassifier:
    """MLflow's pyfunc loader (the `loader_module` contract): the model folder's data/ folder holds
    the pickled Classifier, `model.pth`, and META_FILE."""
    folder = Path(data_path)
    meta = json.loads((folder / META_FILE).read_text())
    model = torch.load(folder / "model.pth", map_location="cpu", weights_only=False).eval()
    return ImageClassifier(model, meta["classes"], meta["image_size"], meta["channels"])
