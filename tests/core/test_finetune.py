"""Tests of core/finetune.py: initial weights from a file, the head of each kind of model,
freezing the backbone, and the normalisation pretrained weights expect."""

from __future__ import annotations

import pytest
import torch

from core.finetune import (
    freeze,
    head_name,
    load_pretrained,
    pretrained_normalisation,
    torchvision_weights,
)
from core.models import ResNet18, build_model
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

    names = load_pretrained(target, "resnet18", str(path))

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
    load_pretrained(target, "resnet18", str(path))
    assert torch.equal(target.layer3[1].conv2.weight, source.layer3[1].conv2.weight)
    assert torch.equal(target.bn1.running_mean, source.bn1.running_mean)


def test_rgb_filters_are_summed_for_grey_images(tmp_path):
    source = _trained_like(0)  # 3 input channels
    torch.save(source.state_dict(), tmp_path / "w.pt")
    target = _model(1, in_channels=1)
    names = load_pretrained(target, "resnet18", str(tmp_path / "w.pt"))
    assert "conv1.weight" in names and "layer1.0.conv1.weight" in names
    assert target.conv1.weight.shape == (8, 1, 3, 3)
    torch.testing.assert_close(target.conv1.weight, source.conv1.weight.sum(1, keepdim=True))


def test_missing_file_raises(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        load_pretrained(_model(0), "resnet18", str(tmp_path / "absent.pt"))


def test_nothing_matching_raises(tmp_path):
    torch.save(_model(0, width=0.25).state_dict(), tmp_path / "wide.pt")
    with pytest.raises(ValueError, match="only 0 of the .* match by name and shape"):
        load_pretrained(_model(1, norm="none"), "resnet18", str(tmp_path / "wide.pt"))


def test_loads_into_a_model_being_pruned(tmp_path):
    # The trainable builds the GradualPruner (weights become weight_orig) before loading weights.
    source = _trained_like(0)
    torch.save(source.state_dict(), tmp_path / "w.pt")
    target = _model(1)
    GradualPruner(target, 0.5, epochs=4)
    names = load_pretrained(target, "resnet18", str(tmp_path / "w.pt"))
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
    names = load_pretrained(target, "resnet18", str(tmp_path / "trial.pt"))
    assert "layer2.0.conv1.weight" in names
    expected = source.layer2[0].conv1.weight_orig * source.layer2[0].conv1.weight_mask
    assert torch.equal(target.layer2[0].conv1.weight, expected)
    assert (target.layer2[0].conv1.weight == 0).any()


def test_freeze_backbone_trains_only_the_head():
    model = _model(0)
    freeze(model, "resnet18", "backbone")
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


def test_a_frozen_backbone_keeps_its_batchnorm_statistics():
    model = _trained_like(0)
    freeze(model, "resnet18", "backbone")
    before = model.bn1.running_mean.clone()
    x = torch.randn(4, 3, 8, 8) * 5 + 3
    trained = model.train()(x)
    assert torch.equal(model.bn1.running_mean, before)
    torch.testing.assert_close(trained, model.eval()(x))  # trains as it evaluates


def test_freeze_none_trains_everything():
    model = _model(0)
    freeze(model, "resnet18", "none")
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
        freeze(_model(0), "resnet18", "head")


@pytest.mark.parametrize("name,head", [
    ("resnet18", "fc"), ("resnet50", "fc"), ("mobilenet_v3_small", "classifier.3"),
    ("efficientnet_b0", "classifier.1"), ("vit_b_16", "heads.head"), ("convnext_tiny", "classifier.2"),
    ("squeezenet1_0", "classifier.1"),
])
def test_the_head_of_each_torchvision_model_is_its_last_classifier_layer(name, head):
    from torchvision import models

    model = models.get_model(name, weights=None, num_classes=7)
    assert head_name(model, name) == head


def test_the_head_of_a_users_model_is_its_last_linear():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4, 8),
                                torch.nn.ReLU(), torch.nn.Linear(8, 3))
    assert head_name(model, "net.py:build") == "4"


def test_the_head_of_a_timm_model_is_its_classifier():
    timm = pytest.importorskip("timm")
    model = timm.create_model("resnet10t", num_classes=3)
    assert head_name(model, "timm/resnet10t") == "fc"
    model = timm.create_model("mobilenetv3_small_050", num_classes=3)
    assert head_name(model, "timm/mobilenetv3_small_050") == "classifier"


def test_a_torchvision_models_weights_load_and_its_new_head_alone_trains(tmp_path):
    from torchvision import models

    source = models.get_model("mobilenet_v3_small", weights=None, num_classes=1000)
    torch.save(source.state_dict(), tmp_path / "imagenet.pth")
    target = build_model("mobilenet_v3_small", 4, 3)
    names = load_pretrained(target, "mobilenet_v3_small", str(tmp_path / "imagenet.pth"))
    assert "classifier.0.weight" in names and "classifier.3.weight" not in names
    assert torch.equal(target.features[0][0].weight, source.features[0][0].weight)
    freeze(target, "mobilenet_v3_small", "backbone")
    assert [n for n, p in target.named_parameters() if p.requires_grad] == [
        "classifier.3.weight", "classifier.3.bias"]


def test_weights_of_another_model_are_refused(tmp_path):
    from torchvision import models

    torch.save(models.resnet18().state_dict(), tmp_path / "r18.pth")
    with pytest.raises(ValueError, match="of model 'mobilenet_v3_small'"):
        load_pretrained(build_model("mobilenet_v3_small", 4, 3), "mobilenet_v3_small",
                        str(tmp_path / "r18.pth"))


def test_a_safetensors_file_loads(tmp_path):
    from safetensors.torch import save_file

    source = _trained_like(0)
    save_file(source.state_dict(), str(tmp_path / "w.safetensors"))
    target = _model(1)
    load_pretrained(target, "resnet18", str(tmp_path / "w.safetensors"))
    assert torch.equal(target.layer3[1].conv2.weight, source.layer3[1].conv2.weight)


def test_an_unknown_torchvision_weights_name_lists_the_ones_there_are():
    with pytest.raises(ValueError, match="has DEFAULT, .*IMAGENET1K_V1"):
        torchvision_weights("mobilenet_v3_small", "IMAGENET9K")


def test_offline_torchvision_weights_name_the_cache_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr("torch.hub.load_state_dict_from_url",
                        lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    with pytest.raises(ValueError, match=r"not in torch's hub cache .*mobilenet_v3_small-.*\.pth"):
        load_pretrained(build_model("mobilenet_v3_small", 4, 3), "mobilenet_v3_small", "DEFAULT")


def test_pretrained_weights_bring_their_normalisation(tmp_path):
    imagenet = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert pretrained_normalisation("mobilenet_v3_small", "DEFAULT", 3) == imagenet
    assert pretrained_normalisation("resnet18", "imagenet", 3) == imagenet
    mean, std = pretrained_normalisation("resnet18", "IMAGENET1K_V1", 1)
    assert mean == pytest.approx((0.449,), abs=1e-3) and len(std) == 1
    torch.save({"model": {}, "mean": (0.1, 0.2, 0.3), "std": (0.4, 0.5, 0.6)}, tmp_path / "trial.pt")
    assert pretrained_normalisation("resnet18", str(tmp_path / "trial.pt"), 3) == (
        (0.1, 0.2, 0.3), (0.4, 0.5, 0.6))
    torch.save(_model(0).state_dict(), tmp_path / "plain.pt")
    assert pretrained_normalisation("resnet18", str(tmp_path / "plain.pt"), 3) is None
    assert pretrained_normalisation("resnet18", None, 3) is None
