"""The best model shipped: logged with both flavours, and its model card on the parent run.

The card says what a person deploying the model needs before trying it: parameters (non-zero of
total, so pruning shows), the size of the weights file, CPU latency measured at batch 1 and batch 128,
the class names, the input and the normalisation inside. It goes to the parent run as
`model_card.json`, `model_card.md` and `model_*` metrics, and into the logged model's metadata.
Every MLflow call is SearchRecord's.
"""

from __future__ import annotations

from typing import Any

from core.cost import latency_ms, parameter_counts
from core.served import Classifier
from search.record.model_flavour import SERIALIZATION_FORMAT
from search.record.tracking import SearchRecord

LATENCY_BATCHES = (1, 128)


def model_card(classifier: Classifier) -> dict[str, Any]:
    """The card's figures that come from the model itself (all but the file size)."""
    meta = classifier.meta()
    nonzero, total = parameter_counts(classifier)
    latency = {f"latency_ms_batch{b}": round(latency_ms(classifier, b, meta["channels"],
                                                          meta["image_size"]), 3)
               for b in LATENCY_BATCHES}
    return {"params_nonzero": nonzero, "params_total": total, **latency,
            "latency_device": "cpu, 1 torch thread, fp32",
            "serialization_format": SERIALIZATION_FORMAT,
            "pytorch_input": f"float32 (N, {meta['channels']}, {meta['image_size']}, "
                             f"{meta['image_size']}) in 0..1; returns logits (N, {len(meta['classes'])})",
            "pyfunc_input": f"uint8 (N, H, W, {meta['channels']}) images of any size, resized "
                            f"(shorter side to {meta['image_size']}, centre crop); returns class, "
                            "probability, p_<class>",
            **meta}


def markdown(card: dict[str, Any]) -> str:
    sparsity = 1 - card["params_nonzero"] / max(1, card["params_total"])
    rows = [
        ("parameters", f"{card['params_nonzero']:,} non-zero of {card['params_total']:,} "
                       f"({sparsity:.1%} zero)"),
        ("weights file", f"{card['weights_file_bytes'] / 1e6:.2f} MB ({card['serialization_format']})"),
        ("CPU latency, batch 1", f"{card['latency_ms_batch1']:.2f} ms"),
        ("CPU latency, batch 128", f"{card['latency_ms_batch128']:.1f} ms"),
        ("measured on", card["latency_device"]),
        ("classes", ", ".join(card["classes"])),
        ("image size", f"{card['image_size']} x {card['image_size']}, {card['channels']} channel(s)"),
        ("normalisation (0..1 scale)", f"mean {card['mean']}, std {card['std']}"),
        ("mlflow.pytorch.load_model input", card["pytorch_input"]),
        ("mlflow.pyfunc.load_model input", card["pyfunc_input"]),
    ]
    return "# Model card\n\n| | |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)


def ship_best_model(record: SearchRecord, name: str, classifier: Classifier) -> dict[str, Any]:
    """Logs `classifier` as the parent run's model `name` and its card on the parent run."""
    card = model_card(classifier)
    card["weights_file_bytes"] = record.log_best_model(name, classifier, card)
    record.log_model_card(card, markdown(card))
    return card
