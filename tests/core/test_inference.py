"""The evaluation copy: same predictions, BatchNorm folded, pruning final, the original untouched."""

from __future__ import annotations

import torch
from torch import nn

from core.inference import final_weights, inference_copy
from core.models import build_model
from core.pruning import GradualPruner, sparsity_of


def _trained_bn_model(**options) -> nn.Module:
    torch.manual_seed(0)
    model = build_model("resnet18", 10, 3, width=0.125, **options)
    model.train()
    with torch.no_grad():  # running statistics that differ from the initial ones
        for _ in range(3):
            model(torch.randn(16, 3, 32, 32) * 2 + 0.5)
    return model.eval()


def test_copy_predicts_what_the_model_predicts():
    model = _trained_bn_model()
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        got = inference_copy(model)(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_batchnorm_is_folded_into_the_convolutions():
    copy = inference_copy(_trained_bn_model())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in copy.modules())


def test_separable_model_is_folded_too():
    model = _trained_bn_model(conv="separable")
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(inference_copy(model)(x), model(x), rtol=1e-4, atol=1e-4)


def test_original_model_keeps_its_modules_and_mode():
    model = _trained_bn_model()
    model.train()
    inference_copy(model)
    assert model.training
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_pruning_is_made_permanent_in_the_copy_only():
    model = _trained_bn_model()
    pruner = GradualPruner(model, 0.5, epochs=4)
    pruner.step(4)
    copy = inference_copy(model)
    assert not any(hasattr(m, "weight_orig") for m in copy.modules())
    assert all(not m._forward_pre_hooks for m in copy.modules())
    assert any(hasattr(m, "weight_orig") for m in model.modules())  # still pruning
    frozen = final_weights(model)
    assert abs(sparsity_of(frozen) - 0.5) < 0.01
