"""The best model as one MLflow model with two flavours, saved by `SearchRecord.log_best_model`.

- `pytorch`: `mlflow.pytorch.load_model` gives `core.served.Classifier`, float 0..1 (N, C, H, W) in,
  logits out, the normalisation inside.
- `python_function`: `mlflow.pyfunc.load_model` (and `mlflow models serve`) gives
  `core.served.ImageClassifier` through its loader `core.served._load_pyfunc`: uint8 (N, H, W, C)
  images of any size in, a DataFrame of class names and probabilities out. The signature and the input
  example state this, and MLflow refuses input of another dtype or number of channels.

The model folder carries core/ as code, so it loads without tune-run installed (torch, torchvision,
Pillow, numpy and pandas are its requirements). This module is MLflow's `flavor` contract: a
`save_model(path, mlflow_model, ...)` that `mlflow.models.Model.log` calls.
"""

from __future__ import annotations

import pickle
import sys
from importlib.metadata import version
from pathlib import Path
from types import ModuleType

import cloudpickle
import numpy as np
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema, TensorSpec

import core
from core import pickled
from core.served import Classifier, write_meta

# Pickle, not torch.export's pt2: pt2 keeps the predictions but gives back a module whose eval() and
# train() raise and that takes one image size only (tests/core/test_served.py; the README says more).
SERIALIZATION_FORMAT = "pickle"
PYFUNC_LOADER = "core.served"


def signature(classifier: Classifier) -> ModelSignature:
    """uint8 images (N, H, W, C) of any size in; class, probability and p_<class> columns out."""
    meta = classifier.meta()
    inputs = Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, meta["channels"]))])
    outputs = Schema([ColSpec("string", "class"), ColSpec("double", "probability")]
                     + [ColSpec("double", f"p_{c}") for c in meta["classes"]])
    return ModelSignature(inputs, outputs)


def input_example(classifier: Classifier) -> np.ndarray:
    """Two images at the model's size, as PIL gives them: a dark one and a light one."""
    meta = classifier.meta()
    shape = (meta["image_size"], meta["image_size"], meta["channels"])
    return np.stack([np.full(shape, 64, np.uint8), np.full(shape, 192, np.uint8)])


def requirements() -> list[str]:
    return [f"{package}=={version(package).split('+')[0]}"
            for package in ("torch", "torchvision", "pillow", "numpy", "pandas")]


def user_modules(classifier: Classifier) -> list[ModuleType]:
    """The modules of the user's own layers in `classifier` (a model file or package of theirs)."""
    libraries = {"torch", "torchvision", "timm", "core", "builtins"}
    names = {type(m).__module__ for m in classifier.modules()}
    return [sys.modules[n] for n in sorted(names)
            if n.split(".")[0] not in libraries and n in sys.modules]


def save_model(path: str, mlflow_model, classifier: Classifier,
               serialization_format: str = SERIALIZATION_FORMAT,
               validate_serving_input: bool = True) -> None:
    """Saves `classifier` to `path` with both flavours (MLflow's flavour contract).
    `validate_serving_input` is `Model.log`'s own option, handed on to every flavour; unused here."""
    import mlflow.pytorch
    from mlflow import pyfunc

    if serialization_format != "pickle":
        raise ValueError(f"serialization_format {serialization_format!r}: only pickle round-trips "
                         "this model (see the README's 'The best model')")
    own = user_modules(classifier)
    for module in own:
        cloudpickle.register_pickle_by_value(module)
    try:
        mlflow.pytorch.save_model(
            classifier, path, mlflow_model=mlflow_model, serialization_format="pickle",
            signature=signature(classifier), input_example=input_example(classifier),
            code_paths=[str(Path(core.__file__).parent)], pip_requirements=requirements(),
            # Loads with torch.load alone, no MLflow needed. A user's model file is pickled by
            # value (cloudpickle), so the model loads where that file is not.
            pickle_module=pickled if own else pickle,
        )
    finally:
        for module in own:
            cloudpickle.unregister_pickle_by_value(module)
    data = Path(path) / "data"
    write_meta(data, classifier)
    # The pytorch flavour's pyfunc would take float tensors and return logits: replaced by ours.
    pyfunc.add_to_model(mlflow_model, loader_module=PYFUNC_LOADER, data="data", code="code",
                        conda_env="conda.yaml", python_env="python_env.yaml")
    weights = data / "model.pth"
    mlflow_model.metadata = (mlflow_model.metadata or {}) | {
        "weights_file": str(weights.relative_to(path)), "weights_file_bytes": weights.stat().st_size}
    mlflow_model.save(str(Path(path) / "MLmodel"))
