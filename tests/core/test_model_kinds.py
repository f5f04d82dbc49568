"""Tests of core/models.py's kinds beyond the built-in ResNet-18: torchvision, timm, a user's own."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from core.models import build_model, model_keywords, model_kind, with_input_channels

USER_MODEL = """
from torch import nn

def build(num_classes, in_channels, dropout=0.0):
    return nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                         nn.Linear(8, num_classes))

def takes_anything(num_classes, in_channels, **options):
    return build(num_classes, in_channels)
"""


def test_each_kind_is_told_by_its_name():
    assert model_kind("resnet18") == "builtin"
    assert model_kind("mobilenet_v3_small") == "torchvision"
    assert model_kind("timm/resnet18") == "timm"
    assert model_kind("models/tiny.py:build") == "user"
    assert model_kind("my_package.nets:build") == "user"


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "resnet50", "regnet_y_400mf"])
@pytest.mark.parametrize("channels", [1, 3])
def test_a_torchvision_model_is_built_for_the_data_s_classes_and_channels(name, channels):
    model = build_model(name, 7, channels)
    assert model.eval()(torch.zeros(2, channels, 32, 32)).shape == (2, 7)


def test_a_torchvision_model_takes_dropout_only_where_its_builder_does():
    assert model_keywords("mobilenet_v3_small") == {"dropout": "dropout"}
    assert model_keywords("densenet121")["dropout"] == "drop_rate"
    assert model_keywords("mobilenet_v2") == {"dropout": "dropout", "width": "width_mult"}
    assert model_keywords("resnet50") == {}
    head = build_model("mobilenet_v3_small", 3, 3, dropout=0.4).classifier
    assert [m.p for m in head if isinstance(m, nn.Dropout)] == [0.4]
    with pytest.raises(ValueError, match="takes no 'dropout'"):
        build_model("resnet50", 3, 3, dropout=0.4)


def test_the_first_convolution_is_remade_for_other_channels():
    model = with_input_channels(build_model("mobilenet_v3_small", 3, 3), 1)
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first.in_channels == 1


def test_a_user_function_gets_the_options_it_names(tmp_path):
    (tmp_path / "tiny.py").write_text(USER_MODEL)
    name = f"{tmp_path / 'tiny.py'}:build"
    assert model_keywords(name) == {"dropout": "dropout"}
    model = build_model(name, 4, 1, dropout=0.3)
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 4)
    assert len(model_keywords(f"{tmp_path / 'tiny.py'}:takes_anything")) == 6  # **options: all


def test_a_timm_model_is_built_where_timm_is_installed():
    pytest.importorskip("timm")
    model = build_model("timm/resnet18", 5, 1, dropout=0.1)
    assert model_keywords("timm/resnet18")["dropout"] == "drop_rate"
    assert model.eval()(torch.zeros(2, 1, 32, 32)).shape == (2, 5)


@pytest.mark.parametrize("name,size", [("googlenet", 64), ("inception_v3", 80)])
def test_torchvision_models_with_auxiliary_heads_give_one_tensor_in_training(name, size):
    model = build_model(name, 5, 3).train()
    out = model(torch.randn(2, 3, size, size))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 5)
