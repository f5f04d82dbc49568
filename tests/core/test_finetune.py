"""Tests of core/finetune.py: initial weights from a file, and freezing the backbone."""

from __future__ import annotations

import pytest
import torch

from core.finetune import freeze, load_pretrained
from core.models import ResNet18
from core.pruning import GradualPruner


def _model(seed: int, **options) -> ResNet18:
    torch.manual_seed(seed)
    options.setdefault("width", 0.125)
    return ResNet18(num_classes=5, **options)


def _trained_like(seed: int) -> ResNet18:
    """A model whose BatchNorm statistics are not the defaults, so they are worth copying."""
    model = _model(seed)
    model.train()(torch.randn(4, 3, 8, 8))
    return model


def test_copies_the_backbone_but_not_the_head(tmp_path):
    source = _trained_like(0)
    path = tmp_path / "w.pt"
    torch.save(source.state_dict(), path)
    target = _model(1)
    head_before = {k: v.clone() for k, v in target.state_dict().items() if k.startswith("fc.")}

    names = load_pretrained(target, str(path))

    src, dst = source.state_dict(), target.state_dict()
    backbone = [k for k in dst if not k.startswith("fc.")]
    assert sorted(names) == sorted(backbone)
    for k in backbone:
        assert torch.equal(dst[k], src[k]), k
    for k, v in head_before.items():
        assert torch.equal(dst[k], v) and not torch.equal(dst[k], src[k]), k


def test_accepts_a_dict_with_a_model_key(tmp_path):
    source = _trained_like(0)
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": source.state_dict(), "epoch": 3}, path)
    target = _model(1)
    load_pretrained(target, str(path))
    assert torch.equal(target.layer3[1].conv2.weight, source.layer3[1].conv2.weight)
    assert torch.equal(target.bn1.running_mean, source.bn1.running_mean)


def test_skips_tensors_of_another_shape(tmp_path):
    source = _trained_like(0)  # 3 input channels
    torch.save(source.state_dict(), tmp_path / "w.pt")
    target = _model(1, in_channels=1)
    names = load_pretrained(target, str(tmp_path / "w.pt"))
    assert "conv1.weight" not in names and "layer1.0.conv1.weight" in names
    assert target.conv1.weight.shape == (8, 1, 3, 3)


def test_missing_file_raises(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        load_pretrained(_model(0), str(tmp_path / "absent.pt"))


def test_nothing_matching_raises(tmp_path):
    torch.save(_model(0, width=0.25).state_dict(), tmp_path / "wide.pt")
    with pytest.raises(ValueError, match="no tensor matches"):
        load_pretrained(_model(1, norm="none"), str(tmp_path / "wide.pt"))


def test_loads_into_a_model_being_pruned(tmp_path):
    # The trainable builds the GradualPruner (weights become weight_orig) before loading weights.
    source = _trained_like(0)
    torch.save(source.state_dict(), tmp_path / "w.pt")
    target = _model(1)
    GradualPruner(target, 0.5, epochs=4)
    names = load_pretrained(target, str(tmp_path / "w.pt"))
    assert "layer2.0.conv1.weight_orig" in names
    assert torch.equal(target.layer2[0].conv1.weight_orig, source.layer2[0].conv1.weight)
    # With the head copied too, the two compute the same function.
    with torch.no_grad():
        target.fc.weight_orig.copy_(source.fc.weight)
        target.fc.bias.copy_(source.fc.bias)
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(target.eval()(x), source.eval()(x))


def test_loads_the_pruned_weights_of_a_pruned_checkpoint(tmp_path):
    source = _trained_like(0)
    pruner = GradualPruner(source, 0.5, epochs=1)
    pruner.step(1)
    torch.save({"model": source.state_dict()}, tmp_path / "trial.pt")  # weight_orig, weight_mask
    target = _model(1)
    names = load_pretrained(target, str(tmp_path / "trial.pt"))
    assert "layer2.0.conv1.weight" in names
    expected = source.layer2[0].conv1.weight_orig * source.layer2[0].conv1.weight_mask
    assert torch.equal(target.layer2[0].conv1.weight, expected)
    assert (target.layer2[0].conv1.weight == 0).any()


def test_freeze_backbone_trains_only_the_head():
    model = _model(0)
    freeze(model, "backbone")
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["fc.weight", "fc.bias"]

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    logits = model(torch.randn(4, 3, 8, 8))
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 3]))
    loss.backward()
    opt.step()
    for n, p in model.named_parameters():
        changed = not torch.equal(p, before[n])
        assert changed == n.startswith("fc."), n


def test_freeze_none_trains_everything():
    model = _model(0)
    freeze(model, "none")
    assert all(p.requires_grad for p in model.parameters())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    logits = model(torch.randn(4, 3, 8, 8))
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 3]))
    loss.backward()
    opt.step()
    unchanged = [n for n, p in model.named_parameters() if torch.equal(p, before[n])]
    assert unchanged == []


def test_unknown_freeze_policy_raises():
    with pytest.raises(ValueError, match="'head'"):
        freeze(_model(0), "head")
