"""The models a space file names: the built-in ResNet-18, torchvision's, timm's, or the user's own.

`model` in a space file's settings is one of four kinds (`model_kind`):
- `resnet18`: the built-in ResNet-18 for small images (3x3 stem, no max-pool) with every model
  option. With default options its parameter names and shapes match torchvision's `resnet18` except
  the stem (`conv1`) and the head (`fc`), so ImageNet weights load for fine-tuning (core/finetune.py);
- a classification model of `torchvision.models` (`mobilenet_v3_small`, `resnet50`, ...), built
  with the data set's classes (and its first convolution remade for other than 3 channels);
- `timm/<name>`, a timm model, where timm is installed;
- `file.py:function` or `package.module:function`, the user's own: a function taking
  `num_classes` and `in_channels` (and any model options it names) that returns an nn.Module
  mapping (B, C, H, W) to (B, num_classes).
A model option (core/hparams.py's MODEL_OPTIONS) reaches a model only under the keyword it takes
(`model_keywords`); search/door checks that before a search starts.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
import typing
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

BUILTIN = "resnet18"
TIMM_PREFIX = "timm/"
# The hyperparameters that shape a model (what build_model may take besides classes and channels).
MODEL_OPTIONS = ("width", "activation", "norm", "conv", "dropout", "init")
# For torchvision and timm, a model option goes to the first of these keywords the builder takes.
LIBRARY_KEYWORDS = {"dropout": ("dropout", "drop_rate", "dropout_rate"), "width": ("width_mult",)}


def make_activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "leaky_relu":
        return nn.LeakyReLU(0.1, inplace=True)
    if name == "elu":
        return nn.ELU(inplace=True)
    if name == "prelu":
        return nn.PReLU()
    if name == "gelu":
        return nn.GELU()
    raise ValueError(f"activation {name!r}: expected relu, leaky_relu, elu, prelu or gelu")


def make_norm(name: str, channels: int) -> nn.Module:
    if name == "batch":
        return nn.BatchNorm2d(channels)
    if name == "none":
        return nn.Identity()
    raise ValueError(f"norm {name!r}: expected batch or none")


def conv3x3(conv: str, cin: int, cout: int, stride: int) -> nn.Module:
    if conv == "standard":
        return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    if conv == "separable":
        return nn.Sequential(
            nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),  # depthwise
            nn.Conv2d(cin, cout, 1, bias=False),  # pointwise
        )
    raise ValueError(f"conv {conv!r}: expected standard or separable")


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, activation: str, norm: str, conv: str):
        super().__init__()
        self.conv1 = conv3x3(conv, cin, cout, stride)
        self.bn1 = make_norm(norm, cout)
        self.act1 = make_activation(activation)
        self.conv2 = conv3x3(conv, cout, cout, 1)
        self.bn2 = make_norm(norm, cout)
        self.act2 = make_activation(activation)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), make_norm(norm, cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + identity)


class ResNet18(nn.Module):
    """ResNet-18 with stages of 64, 128, 256, 512 channels times `width`."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        width: float = 1.0,
        activation: str = "relu",
        norm: str = "batch",
        conv: str = "standard",
        dropout: float = 0.0,
        init: str = "default",
    ):
        super().__init__()
        channels = [max(1, round(c * width)) for c in (64, 128, 256, 512)]
        self.conv1 = nn.Conv2d(in_channels, channels[0], 3, 1, 1, bias=False)
        self.bn1 = make_norm(norm, channels[0])
        self.act = make_activation(activation)
        stages, cin = [], channels[0]
        for i, cout in enumerate(channels):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(
                BasicBlock(cin, cout, stride, activation, norm, conv),
                BasicBlock(cout, cout, 1, activation, norm, conv),
            ))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(cin, num_classes)
        initialise(self, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, H, W)
        x = self.act(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)  # (B, channels[3])
        return self.fc(self.dropout(x))  # (B, num_classes) logits


def initialise(model: nn.Module, init: str) -> None:
    """Re-initialises conv and linear weights; 'default' keeps PyTorch's own initialisation."""
    if init == "default":
        return
    if init not in ("kaiming", "xavier"):
        raise ValueError(f"init {init!r}: expected default, kaiming or xavier")
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            if init == "kaiming":
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            else:
                nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def model_kind(name: str) -> str:
    """builtin, torchvision, timm or user (see the module's docstring)."""
    if name == BUILTIN:
        return "builtin"
    if name.startswith(TIMM_PREFIX):
        return "timm"
    if ":" in name:
        return "user"
    return "torchvision"


def torchvision_models() -> list[str]:
    """The classification models torchvision lists."""
    from torchvision import models

    return sorted(models.list_models(module=models))


def build_model(name: str, num_classes: int, in_channels: int, **options) -> nn.Module:
    """The model named in a space file's settings, with the trial's model options (tune-run's
    names, as core/hparams.py has them; each goes to the keyword `model_keywords` maps it to)."""
    kind = model_kind(name)
    if kind == "builtin":
        return ResNet18(num_classes, in_channels, **options)
    if kind == "torchvision" and name not in torchvision_models():
        raise ValueError(f"model {name!r}: not built in (resnet18), not a torchvision "
                         "classification model, not timm/<name> nor file.py:function")
    keywords = model_keywords(name)
    if kind == "user":  # its own parameters too, as they are; the function refuses the rest
        return user_builder(name)(num_classes=num_classes, in_channels=in_channels,
                                  **{keywords.get(k, k): v for k, v in options.items()})
    unknown = sorted(set(options) - set(keywords))
    if unknown:
        raise ValueError(f"model {name!r} takes no {unknown[0]!r}")
    kwargs = {keywords[k]: v for k, v in options.items()}
    if kind == "torchvision":
        from torchvision import models

        kwargs |= training_form(name)
        model = models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
        return with_input_channels(model, in_channels)
    timm = import_timm()
    return timm.create_model(name[len(TIMM_PREFIX):], pretrained=False, num_classes=num_classes,
                             in_chans=in_channels, **kwargs)


def model_keywords(name: str) -> dict[str, str]:
    """The model options `name` takes: tune-run's option name -> the builder's keyword."""
    kind = model_kind(name)
    if kind == "builtin":
        return {o: o for o in MODEL_OPTIONS}
    if kind == "user":
        params = inspect.signature(user_builder(name)).parameters
        takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
        return {o: o for o in MODEL_OPTIONS if o in params or takes_any}
    taken = library_keywords(name)
    found = {}
    for option, candidates in LIBRARY_KEYWORDS.items():
        keyword = next((k for k in candidates if k in taken), None)
        if keyword:
            found[option] = keyword
    return found


def training_form(name: str) -> dict[str, bool]:
    """The keywords that make a torchvision model give one tensor of scores in training too:
    googlenet and inception_v3 add auxiliary heads' outputs unless told not to (and warn of a
    change of initialisation unless it is named)."""
    taken = library_keywords(name)
    return {k: v for k, v in (("aux_logits", False), ("init_weights", True)) if k in taken}


def library_keywords(name: str) -> set[str]:
    """The keywords a torchvision builder (and the model class it returns) or a timm model takes."""
    if model_kind(name) == "timm":
        timm = import_timm()
        model_name = name[len(TIMM_PREFIX):]
        # timm passes its keywords to the model class its entry point builds.
        entry = timm.models.model_entrypoint(model_name)
        module = sys.modules[entry.__module__]
        classes = [c for c in vars(module).values()
                   if inspect.isclass(c) and issubclass(c, nn.Module) and c.__module__ == module.__name__]
        return {p for c in classes for p in inspect.signature(c.__init__).parameters}
    from torchvision import models

    builder = models.get_model_builder(name)
    taken = set(inspect.signature(builder).parameters)
    model_class = typing.get_type_hints(builder).get("return")
    if inspect.isclass(model_class):
        taken |= set(inspect.signature(model_class.__init__).parameters)
    return taken - {"self", "kwargs", "weights", "progress", "num_classes"}


def import_timm():
    try:
        import timm
    except ImportError:
        raise ImportError("timm is not installed: pip install 'tune-run[timm]'") from None
    return timm


def user_builder(reference: str) -> Callable[..., nn.Module]:
    """The function of a user's `file.py:function` or `package.module:function`."""
    target, _, function = reference.rpartition(":")
    if target.endswith(".py"):
        path = Path(target).resolve()
        module_name = f"tune_run_user_model_{abs(hash(str(path)))}"
        module = sys.modules.get(module_name)
        if module is None:
            spec = importlib.util.spec_from_file_location(module_name, path)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot import {target}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[module_name]
                raise
    else:
        module = importlib.import_module(target)
    builder = getattr(module, function, None)
    if not callable(builder):
        raise AttributeError(f"{target} has no function {function!r}")
    return builder


def with_input_channels(model: nn.Module, in_channels: int) -> nn.Module:
    """`model` with its first convolution remade for `in_channels` (a torchvision model takes 3)."""
    if in_channels == 3:
        return model
    first = next((n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        return model
    parent_name, _, child_name = first.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, child_name)
    setattr(parent, child_name, nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride,
                                          old.padding, old.dilation, bias=old.bias is not None,
                                          padding_mode=old.padding_mode))
    return model
