"""The door's check of the `model` setting: refusals with one line and exit 2, nothing created."""

from __future__ import annotations

import sys

import pytest

from tests.conftest import make_image_folder
from tests.search.conftest import refuse_space_file, run_cli, space_file

USER_MODELS = """
from torch import nn

def build(num_classes, in_channels, dropout=0.0):
    return nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                         nn.Linear(8, num_classes))

def needs_depth(num_classes, in_channels, depth):
    return build(num_classes, in_channels)

def wrong_shape(num_classes, in_channels):
    return nn.Conv2d(in_channels, 4, 3)

def not_a_module(num_classes, in_channels):
    return "a string"

def for_32px_rgb(num_classes, in_channels):
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, num_classes))

def deep(num_classes, in_channels, depth):
    return build(num_classes, in_channels)

def raises(num_classes, in_channels):
    raise RuntimeError("no such layer")

class WithAuxiliary(nn.Module):  # as googlenet without aux_logits=False: a tuple in training
    def __init__(self, num_classes, in_channels):
        super().__init__()
        self.net = build(num_classes, in_channels)

    def forward(self, x):
        out = self.net(x)
        return (out, out) if self.training else out

def auxiliary(num_classes, in_channels):
    return WithAuxiliary(num_classes, in_channels)
"""


def _settings(model: str) -> str:
    return f'{{"dataset": "digits", "num_samples": 2, "max_epochs": 2, "model": "{model}"}}'


@pytest.fixture
def user_models(workdir):
    (workdir / "models").mkdir()
    (workdir / "models" / "mine.py").write_text(USER_MODELS)
    (workdir / "models" / "broken.py").write_text("import no_such_module_here\n")
    return workdir


REFUSALS = [
    ("mobilenet_v3_smal", '{"lr": tune.loguniform(1e-3, 1e-1)}',
     ["settings.model", "not a torchvision", "did you mean 'mobilenet_v3_small'"]),
    ("resnet50", '{"lr": tune.loguniform(1e-3, 1e-1), "dropout": tune.uniform(0, 0.5)}',
     ["space.dropout", "'resnet50' takes no 'dropout'"]),
    ("mobilenet_v3_small", '{"lr": tune.loguniform(1e-3, 1e-1), "width": 0.5}',
     ["space.width", "takes no 'width'", "it takes dropout"]),
    ("models/mine.py:needs_depth", '{"lr": tune.loguniform(1e-3, 1e-1)}',
     ["settings.model", "requires 'depth'"]),
    ("models/mine.py:wrong_shape", '{"lr": tune.loguniform(1e-3, 1e-1)}',
     ["settings.model", "expected (2, 10)"]),
    ("models/mine.py:not_a_module", '{"lr": tune.loguniform(1e-3, 1e-1)}',
     ["settings.model", "returned str, not a torch.nn.Module"]),
    ("models/mine.py:raises", '{"lr": tune.loguniform(1e-3, 1e-1)}',
     ["settings.model", "failed to build", "no such layer"]),
    ("models/mine.py:missing", '{"lr": tune.loguniform(1e-3, 1e-1)}',
     ["settings.model", "does not import", "no function 'missing'"]),
    ("models/broken.py:build", '{"lr": tune.loguniform(1e-3, 1e-1)}',
     ["settings.model", "does not import", "no_such_module_here"]),
    ("models/absent.py:build", '{"lr": tune.loguniform(1e-3, 1e-1)}',
     ["settings.model", "no such file"]),
    ("models/mine.py:auxiliary", '{"lr": tune.loguniform(1e-3, 1e-1)}',
     ["settings.model", "maps a batch of 2 images to tuple in training mode"]),
    ("models/mine.py:for_32px_rgb", '{"lr": tune.loguniform(1e-3, 1e-1)}',  # digits: 1x8x8
     ["settings.model", "cannot take a batch of 1x8x8 images"]),
]


@pytest.mark.parametrize("model, space, fragments", REFUSALS, ids=[r[0] + str(i) for i, r in
                                                                  enumerate(REFUSALS)])
def test_a_model_the_door_cannot_use_is_refused_in_one_line(model, space, fragments, user_models,
                                                            capsys):
    refuse_space_file(space_file(_settings(model), space), [], fragments, user_models, capsys)


def test_timm_without_timm_says_how_to_get_it(workdir, capsys, monkeypatch):
    # timm is in the test extra: this machine is made to lack it (a None entry in sys.modules
    # makes `import timm` raise ImportError, as on a machine without it).
    monkeypatch.setitem(sys.modules, "timm", None)
    refuse_space_file(space_file(_settings("timm/resnet18")), [], ["pip install 'tune-run[timm]'"],
                      workdir, capsys)


def test_a_model_that_fits_passes_the_dry_run(user_models, tmp_path, capsys):
    images = make_image_folder(tmp_path / "images")
    settings = (f'{{"dataset": "imagefolder", "data_dir": "{images}", "num_samples": 2, '
                f'"max_epochs": 2, "model": "models/mine.py:build"}}')
    (user_models / "ok.py").write_text(space_file(settings, '{"lr": tune.loguniform(1e-3, 1e-1), '
                                                            '"dropout": tune.uniform(0.0, 0.5)}'))
    code, err = run_cli(["ok.py", "--dry-run"], capsys)
    assert code == 0, err


def test_a_user_function_s_own_parameter_may_be_searched(user_models, capsys):
    (user_models / "deep.py").write_text(space_file(
        _settings("models/mine.py:deep"), '{"lr": tune.loguniform(1e-3, 1e-1), '
                                          '"depth": tune.choice([1, 2])}'))
    code, err = run_cli(["deep.py", "--dry-run"], capsys)
    assert code == 0, err


@pytest.fixture
def weight_files(workdir):
    """State dicts beside the space file: one of a width-0.25 ResNet-18 for digits' 1 channel and
    10 classes, one of torchvision's mobilenet_v3_small."""
    import torch
    from torchvision import models

    from core.models import ResNet18

    torch.save(ResNet18(10, 1, width=0.25).state_dict(), workdir / "r18.pt")
    torch.save(models.mobilenet_v3_small().state_dict(), workdir / "mnv3.pth")
    return workdir


WEIGHTS_REFUSALS = [
    ("resnet18", '"width": 0.25, "weights": "absent.pt"', ["space.weights", "absent.pt: no such file"]),
    ("resnet18", '"width": 0.5, "weights": "r18.pt"',
     ["space.weights", "of model 'resnet18'", "match by name and shape"]),
    ("mobilenet_v3_small", '"weights": "r18.pt"', ["space.weights", "of model 'mobilenet_v3_small'"]),
    ("mobilenet_v3_small", '"weights": "IMAGENET9K"',
     ["space.weights", "no such weights for mobilenet_v3_small", "IMAGENET1K_V1"]),
    ("models/mine.py:build", '"weights": "DEFAULT"',
     ["space.weights", "a model of one's own takes a state-dict file"]),
    ("resnet18", '"width": 0.25, "weights": tune.choice(["r18.pt", "mnv3.pth"])',
     ["space.weights", "mnv3.pth", "of model 'resnet18'"]),
]


@pytest.mark.parametrize("model, space, fragments", WEIGHTS_REFUSALS,
                         ids=[f"{r[0]}-{i}" for i, r in enumerate(WEIGHTS_REFUSALS)])
def test_weights_the_model_cannot_start_from_are_refused(model, space, fragments, weight_files,
                                                        user_models, capsys):
    refuse_space_file(space_file(_settings(model), f'{{"lr": tune.loguniform(1e-3, 1e-1), {space}}}'),
                      [], fragments, weight_files, capsys)


def test_weights_beside_the_space_file_pass_the_dry_run(weight_files, capsys):
    (weight_files / "tuned.py").write_text(space_file(
        _settings("resnet18"), '{"lr": tune.loguniform(1e-3, 1e-1), "width": 0.25, '
                               '"weights": "r18.pt", "freeze": "backbone"}'))
    code, err = run_cli(["tuned.py", "--dry-run"], capsys)
    assert code == 0, err
