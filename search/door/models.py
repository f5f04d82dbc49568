"""The door's check of the `model` setting: the model exists, builds, takes the options the space
sets, and maps a batch of the data's shape to one score per class. Before Ray starts.

core/models.py builds the four kinds (built-in, torchvision, timm, a user's function); this module
turns what can go wrong with them into one line naming the setting, the model and what would be
right, and resolves a user's `file.py:function` against the space file's folder.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from core.hparams import suggest
from core.models import (
    BUILTIN,
    MODEL_OPTIONS,
    TIMM_PREFIX,
    build_model,
    model_keywords,
    model_kind,
    torchvision_models,
    user_builder,
)
from search.errors import SpecError


def resolve_model_name(where: str, name: str, space_file: Path) -> str:
    """`name` with a user file's path made absolute (it is relative to the space file's folder)."""
    if model_kind(name) != "user":
        return name
    target, _, function = name.rpartition(":")
    if not target.endswith(".py"):
        return name  # package.module:function
    path = Path(target).expanduser()
    path = path if path.is_absolute() else space_file.resolve().parent / path
    if not path.is_file():
        raise SpecError(f"{where}: settings.model: {target}: no such file (relative to the space "
                        f"file's folder, {space_file.resolve().parent})")
    return f"{path}:{function}"


def check_model_name(where: str, name: str) -> None:
    """Refuses a model that does not exist, or whose library or file cannot be imported."""
    kind = model_kind(name)
    field = f"{where}: settings.model"
    if kind == "builtin":
        return
    if kind == "torchvision":
        names = torchvision_models()
        if name not in names:
            raise SpecError(f"{field}: {name!r} is not a torchvision classification model"
                            f"{suggest(name, [BUILTIN, *names])}; or use 'timm/<name>' or "
                            "'file.py:function'")
        return
    if kind == "timm":
        try:
            from core.models import import_timm

            timm = import_timm()
        except ImportError as e:
            raise SpecError(f"{field}: {name!r}: {e}") from None
        model = name[len(TIMM_PREFIX):]
        if not timm.is_model(model):
            raise SpecError(f"{field}: {name!r} is not a timm model"
                            f"{suggest(model, timm.list_models())}")
        return
    try:
        user_builder(name)
    except Exception as e:  # the user's file: anything it raises is theirs to read
        raise SpecError(f"{field}: {name!r} does not import: {type(e).__name__}: {e}") from None


def own_model_parameters(name: str) -> set[str]:
    """The keyword parameters a user's model function declares besides num_classes, in_channels
    and tune-run's hyperparameters (`depth`, say): options of its own that a space may search."""
    from core.hparams import HPARAMS

    if model_kind(name) != "user":
        return set()
    params = inspect.signature(user_builder(name)).parameters.values()
    named = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return named - {"num_classes", "in_channels"} - set(HPARAMS)


def check_model_options(where: str, name: str, space: dict[str, Any]) -> None:
    """Refuses a model option the space sets that the model has no keyword for, and a required
    parameter of a user's function that nothing gives."""
    if model_kind(name) == "builtin":
        return
    takes = model_keywords(name)
    for option in MODEL_OPTIONS:
        if option in space and option not in takes:
            taken = ", ".join(sorted(takes)) or "none of them"
            raise SpecError(f"{where}: space.{option}: model {name!r} takes no {option!r}; of the "
                            f"model options ({', '.join(MODEL_OPTIONS)}) it takes {taken}")
    if model_kind(name) == "user":
        params = inspect.signature(user_builder(name)).parameters.values()
        given = {"num_classes", "in_channels", *(o for o in MODEL_OPTIONS if o in space),
                 *(o for o in own_model_parameters(name) if o in space)}
        missing = [p.name for p in params if p.default is p.empty
                   and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in given]
        if missing:
            raise SpecError(f"{where}: settings.model: {name!r} requires {missing[0]!r}, which the "
                            f"space does not give; it is given num_classes, in_channels, the "
                            f"model options the space sets ({', '.join(MODEL_OPTIONS)}) and the "
                            "space's values of its own parameters: add it to `space`")


def probe_model(where: str, name: str, options: dict[str, Any], shape: tuple[int, int, int],
                num_classes: int, channel_pruning: float = 0.0) -> None:
    """Builds the model with `options` and runs a batch of 2 images of `shape` (C, H, W) through
    it; refuses a builder that raises, returns no Module, or gives other than (2, num_classes).
    With `channel_pruning` (the largest prune_ratio the space can ask with channel pruning), the
    channels are removed to that ratio first, as a trial's last epochs would."""
    import torch
    from torch import nn

    field = f"{where}: settings.model"
    try:
        model = build_model(name, num_classes, shape[0], **options)
    except Exception as e:
        raise SpecError(f"{field}: {name!r} failed to build with {num_classes} classes and "
                        f"{shape[0]} channels: {type(e).__name__}: {e}") from None
    if not isinstance(model, nn.Module):
        raise SpecError(f"{field}: {name!r} returned {type(model).__name__}, not a torch.nn.Module")
    if channel_pruning > 0:
        from core.pruning import make_pruner

        try:
            make_pruner(model, "channel", channel_pruning, 1, shape[0]).step(1)
        except Exception as e:
            raise SpecError(f"{where}: space.prune_method: model {name!r} cannot have channels "
                            f"removed (torch-pruning: {type(e).__name__}: {e}); use "
                            "prune_method 'unstructured'") from None
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(2, *shape))
            trained = model.train()(torch.randn(2, *shape))  # as a trial calls it
    except Exception as e:
        raise SpecError(f"{field}: {name!r} cannot take a batch of {shape[0]}x{shape[1]}x"
                        f"{shape[2]} images (the data's shape): {type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}; set image_size or choose "
                        "a model for images of this size") from None
    for mode, result in (("", out), (" in training mode", trained)):
        if not isinstance(result, torch.Tensor) or tuple(result.shape) != (2, num_classes):
            got = tuple(result.shape) if isinstance(result, torch.Tensor) else type(result).__name__
            raise SpecError(f"{field}: {name!r} maps a batch of 2 images to {got}{mode}; "
                            f"expected (2, {num_classes}): one score per class")


def resolve_weights_paths(where: str, value: Any, space_file: Path) -> Any:
    """`space.weights` with each file it names made absolute (relative to the space file's
    folder, as a trial runs elsewhere); weights names such as DEFAULT as they are."""
    from core.finetune import is_weights_file
    from search.door.domains import with_values_mapped

    def absolute(weights):
        if not isinstance(weights, str) or not is_weights_file(weights):
            return weights
        path = Path(weights).expanduser()
        path = path if path.is_absolute() else space_file.resolve().parent / path
        if not path.is_file():
            raise SpecError(f"{where}: space.weights: {weights}: no such file (relative to the "
                            f"space file's folder, {space_file.resolve().parent})")
        return str(path)

    return with_values_mapped(value, absolute)


def check_weights(where: str, name: str, weights: list[str], options: dict[str, Any],
                  in_channels: int, num_classes: int) -> None:
    """Refuses weights the model cannot start from: a file that is not a state dict of it, a
    weights name its library does not have, weights not cached where the machine is offline.
    Reading torchvision's also puts them in torch's hub cache for the trials."""
    from core.finetune import load_pretrained, pretrained_normalisation

    for value in weights:
        try:
            load_pretrained(build_model(name, num_classes, in_channels, **options), name, value)
            pretrained_normalisation(name, value, in_channels)
        except (ValueError, ImportError) as e:
            raise SpecError(f"{where}: space.weights: {e}") from None
