"""Fine-tuning: a model's initial weights, its classifier head, a freeze policy, and the input
normalisation the weights expect.

`weights` (core/hparams.py) is one of:
- a file: a state dict (`.pt`, `.pth`, `.bin`, `.safetensors`; or a dict holding one under "model",
  as a tune-run checkpoint's trial.pt does), for a model of any kind;
- a torchvision weights name (`DEFAULT`, `IMAGENET1K_V1`, `IMAGENET1K_V2`, ...) of a torchvision
  model, or of torchvision's `resnet18` for the built-in one (its names and shapes match outside
  the stem); read from torch's hub cache (`TORCH_HOME`), fetched by torchvision where online;
- `imagenet`: `DEFAULT` for the built-in and torchvision models; timm's own pretrained weights
  (from Hugging Face's cache) for a timm model.
Every tensor whose name and shape match the model is copied, except the head's: the model was built
with the data set's classes, so its head is new. A first convolution made for other than 3 input
channels (grey images) gets the RGB filters adapted, as timm does: summed for 1 channel.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from core.models import BUILTIN, TIMM_PREFIX, import_timm, model_kind

IMAGENET = "imagenet"
WEIGHT_FILE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")
# Torchvision's models keep their classifier under one of these names.
TORCHVISION_HEADS = ("fc", "classifier", "heads", "head")
# Fewer of the model's tensors than this found in the weights: the file is of another model.
LEAST_MATCHED = 0.5


def is_weights_file(weights: str) -> bool:
    return weights.lower().endswith(WEIGHT_FILE_SUFFIXES) or "/" in weights or Path(weights).is_file()


def load_pretrained(model: nn.Module, model_name: str, weights: str) -> list[str]:
    """Copies every tensor of `weights` whose name and shape match `model`, except the head's.
    Returns the names loaded; raises ValueError (naming `weights` and what would be right) when the
    weights cannot be read or fewer than half the model's other tensors are found in them."""
    source = _unpruned(pretrained_state(model_name, weights))
    own = model.state_dict()
    head = head_name(model, model_name) + "."
    loaded = {}
    for k, v in source.items():
        # A model under core/pruning.py's GradualPruner holds its weights as `<name>_orig`.
        target = k + "_orig" if k not in own and k + "_orig" in own else k
        if target not in own or k.startswith(head):
            continue
        v = _adapted_input_filters(v, own[target])
        if tuple(v.shape) == tuple(own[target].shape):
            loaded[target] = v.to(own[target].dtype)
    wanted = [k for k in own if not k.startswith(head)
              and not k.endswith(("num_batches_tracked", "_mask"))]
    found = [k for k in wanted if k in loaded]
    if len(found) < LEAST_MATCHED * len(wanted):
        raise ValueError(f"weights {weights!r}: only {len(found)} of the {len(wanted)} tensors of "
                         f"model {model_name!r} (outside its head) match by name and shape: "
                         "weights of another model or other model options")
    model.load_state_dict(loaded, strict=False)
    return sorted(loaded)


def pretrained_state(model_name: str, weights: str) -> dict[str, torch.Tensor]:
    """The state dict `weights` names, for a model of `model_name`."""
    if is_weights_file(weights):
        return _file_state(weights)
    if model_kind(model_name) == "timm":
        if weights != IMAGENET:
            raise ValueError(f"weights {weights!r}: a timm model takes a state-dict file "
                             f"(.safetensors, .pth) or {IMAGENET!r} (timm's own pretrained weights)")
        return _timm_state(model_name)
    if model_kind(model_name) == "user":
        raise ValueError(f"weights {weights!r}: a model of one's own takes a state-dict file "
                         "(.pt, .pth, .safetensors)")
    return _torchvision_state(torchvision_weights(model_name, weights))


def torchvision_weights(model_name: str, weights: str):
    """The torchvision weights enum member `weights` names for `model_name` (the built-in model's
    are torchvision resnet18's). Raises ValueError naming the ones there are."""
    from torchvision import models

    name = "resnet18" if model_name == BUILTIN else model_name
    enum = models.get_model_weights(name)
    key = "DEFAULT" if weights == IMAGENET else weights
    if key not in enum.__members__:
        raise ValueError(f"weights {weights!r}: torchvision has no such weights for {name}; it "
                         f"has {', '.join(['DEFAULT', *enum.__members__.keys() - {'DEFAULT'}])}, "
                         f"or {IMAGENET!r}, or a state-dict file")
    return enum[key]


def head_name(model: nn.Module, model_name: str) -> str:
    """The dotted name of the layer that gives the class scores: torchvision's `fc` /
    `classifier` / `heads` (its last Linear), timm's `get_classifier()`, else the last Linear."""
    container: nn.Module = model
    prefix = ""
    if model_kind(model_name) == "timm" and hasattr(model, "get_classifier"):
        classifier = model.get_classifier()
        prefix = next((n for n, m in model.named_modules() if m is classifier), "")
        container = classifier if prefix else model
    elif model_kind(model_name) != "user":
        prefix = next((n for n in TORCHVISION_HEADS if isinstance(getattr(model, n, None),
                                                                  nn.Module)), "")
        container = getattr(model, prefix) if prefix else model
    layers = [n for n, m in container.named_modules() if isinstance(m, nn.Linear)]
    if not layers:  # a convolutional head (squeezenet's): the last layer with weights
        layers = [n for n, m in container.named_modules() if getattr(m, "weight", None) is not None
                  and not list(m.children())]
    name = layers[-1] if layers else ""
    return ".".join(p for p in (prefix, name) if p)


def freeze(model: nn.Module, model_name: str, policy: str) -> None:
    """'none' trains everything; 'backbone' trains only the head (`head_name`), with the
    backbone's BatchNorm statistics kept as the weights had them (evaluation mode)."""
    if policy == "none":
        return
    if policy != "backbone":
        raise ValueError(f"freeze {policy!r}: expected none or backbone")
    head = head_name(model, model_name)
    for name, p in model.named_parameters():
        p.requires_grad_(name == head or name.startswith(head + "."))
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not name.startswith(head):
            m.register_forward_pre_hook(_keep_in_eval_mode)


def _keep_in_eval_mode(module: nn.Module, args) -> None:
    # Not module.eval() once: the trainer calls model.train() every epoch.
    module.training = False


def pretrained_normalisation(model_name: str, weights: str | None,
                             channels: int) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The mean and std (0..1 scale, one per channel) that `weights` were trained with, where they
    say: torchvision's weights, timm's model config, or a tune-run checkpoint's record. None: the
    data's own."""
    if not weights:
        return None
    mean = std = None
    if is_weights_file(weights):
        state = _load_file(weights)
        if isinstance(state, dict) and "mean" in state and "std" in state:
            mean, std = state["mean"], state["std"]
    elif model_kind(model_name) == "timm":
        timm = import_timm()
        config = timm.get_pretrained_cfg(model_name[len(TIMM_PREFIX):])
        mean, std = (config.mean, config.std) if config is not None else (None, None)
    elif model_kind(model_name) != "user":
        transforms = torchvision_weights(model_name, weights).transforms()
        mean, std = getattr(transforms, "mean", None), getattr(transforms, "std", None)
    if mean is None or std is None:
        return None
    return _per_channel(mean, channels), _per_channel(std, channels)


def _per_channel(values, channels: int) -> tuple[float, ...]:
    values = [float(v) for v in values]
    if len(values) == channels:
        return tuple(values)
    return (sum(values) / len(values),) * channels  # RGB weights on grey images: one mean


def _adapted_input_filters(source: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
    """RGB filters of a first convolution for a model of other input channels (timm's
    adapt_input_conv): summed for one channel, else repeated and rescaled."""
    if source.dim() != 4 or own.dim() != 4 or source.shape[1] != 3 or own.shape[1] == 3:
        return source
    if source.shape[0] != own.shape[0] or source.shape[2:] != own.shape[2:]:
        return source
    if own.shape[1] == 1:
        return source.sum(dim=1, keepdim=True)
    repeats = -(-own.shape[1] // 3)
    return source.repeat(1, repeats, 1, 1)[:, :own.shape[1]] * (3 / own.shape[1])


def _load_file(path: str):
    if not Path(path).is_file():
        raise ValueError(f"weights {path!r}: no such file")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"weights {path!r}: not a state dict torch.load reads "
                         f"({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None


def _file_state(path: str) -> dict[str, torch.Tensor]:
    state = _load_file(path)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    for key in ("state_dict", "model_state_dict"):  # Lightning's and a common hand-made layout
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"weights {path!r}: holds no state dict (name -> tensor)")
    return state


def _unpruned(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A pruned model's `<name>_orig` and `<name>_mask` as the plain `<name>` = orig * mask."""
    plain = {}
    for k, v in state.items():
        base = k.removesuffix("_orig").removesuffix("_mask")
        if base != k and base + "_orig" in state and base + "_mask" in state:
            plain[base] = state[base + "_orig"] * state[base + "_mask"]
        else:
            plain[k] = v
    return plain


def _torchvision_state(weights) -> dict[str, torch.Tensor]:
    try:
        return weights.get_state_dict(progress=False)
    except Exception as e:  # offline: urllib's URLError and friends
        file = weights.url.rsplit("/", 1)[-1]
        raise ValueError(
            f"weights {weights}: not in torch's hub cache ({torch.hub.get_dir()}/checkpoints/"
            f"{file}) and torchvision could not fetch them ({type(e).__name__}); copy {file} "
            "there from a machine that is online, or pass a state-dict file") from None


def _timm_state(model_name: str) -> dict[str, torch.Tensor]:
    timm = import_timm()
    try:
        return timm.create_model(model_name[len(TIMM_PREFIX):], pretrained=True).state_dict()
    except Exception as e:
        raise ValueError(
            f"weights {IMAGENET!r} of {model_name}: timm could not read its pretrained weights "
            f"({type(e).__name__}); download them where online (Hugging Face's cache, HF_HOME), "
            "or pass the .safetensors file") from None
