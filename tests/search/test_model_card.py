"""The model card: what a person deploying the best model reads before trying it."""

from __future__ import annotations

import torch
from torch import nn

from core.served import Classifier
from search.record.model_card import markdown, model_card


def tiny_classifier() -> Classifier:
    """A linear net on 3 x 8 x 8 images with half of its weights zero, as pruning leaves them."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
    with torch.no_grad():
        net[1].weight[0].zero_()
    return Classifier(net, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), ["cat", "dog"], 8)


def test_the_card_counts_zero_weights_and_states_the_input():
    card = model_card(tiny_classifier())
    assert (card["params_nonzero"], card["params_total"]) == (192 + 2, 2 * 192 + 2)
    assert (card["classes"], card["channels"], card["image_size"]) == (["cat", "dog"], 3, 8)
    assert card["mean"] == [0.5] * 3 and card["std"] == [0.25] * 3
    assert card["pytorch_input"].startswith("float32 (N, 3, 8, 8) in 0..1; returns logits (N, 2)")
    assert card["pyfunc_input"].startswith("uint8 (N, H, W, 3) images of any size")
    assert card["latency_ms_batch1"] > 0 and card["latency_ms_batch128"] > 0


def test_markdown_is_one_table_row_per_figure():
    card = model_card(tiny_classifier()) | {"weights_file_bytes": 2_500_000}
    text = markdown(card)
    assert text.startswith("# Model card\n\n| | |\n|---|---|\n")
    assert "| parameters | 194 non-zero of 386 (49.7% zero) |\n" in text
    assert "| weights file | 2.50 MB (" in text and "| classes | cat, dog |\n" in text
    assert "| image size | 8 x 8, 3 channel(s) |\n" in text
    assert all(line.startswith("|") for line in text.splitlines()[2:])
