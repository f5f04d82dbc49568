"""The best model as shipped: logged by the search's own results path to a real MLflow SQLite store
(both flavours, the model card), registered with the alias `champion`, and served by a real
`mlflow models serve` that answers real JPEG pixels as `pyfunc.predict` does.

No Ray here: a tiny pruned model is trained in-process with core/ and checkpointed as a trial would.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import mlflow
import mlflow.pyfunc
import mlflow.pytorch
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from PIL import Image

from core.augment import BatchAugment
from core.data import load_dataset
from core.hparams import resolve
from core.optim import make_optimizer, make_schedule
from core.pruning import sparsity_of
from core.train import steps_per_epoch, train_epoch
from search.record.tracking import SearchRecord
from search.report import results
from search.report.results import MODEL_NAME, complete_parent_run
from tests.conftest import make_image_folder
from tests.search.model_server import ask, serving
from trainables import checkpoints

pytestmark = pytest.mark.slow

REGISTERED = "colours"
PRUNE_RATIO = 0.5


def _train_checkpoint(data, folder: Path) -> Path:
    """Four epochs of a width-1/16 ResNet-18, pruned to PRUNE_RATIO, saved as a trial saves it."""
    torch.manual_seed(0)
    epochs, batch = 4, 8
    hp = resolve({"width": 0.0625, "prune_ratio": PRUNE_RATIO, "optimizer": "adamw", "lr": 0.01})
    spec = checkpoints.model_spec("resnet18", data.num_classes, data.in_channels, hp)
    model, pruner = checkpoints.build_from_spec(spec, epochs)
    optimizer = make_optimizer("adamw", model.parameters(), hp["lr"], 0.9, 0.0, False)
    schedule = make_schedule("constant", optimizer, epochs,
                             steps_per_epoch(len(data.train_y), batch), 0)
    augment = BatchAugment(data.mean, data.std, padding=1, hflip=True)
    x, y = torch.from_numpy(data.train_x), torch.from_numpy(data.train_y)
    for epoch in range(1, epochs + 1):
        train_epoch(model, x, y, augment, optimizer, schedule, batch, 0.0)
        pruner.step(epoch)
    folder.mkdir()
    checkpoints.save(folder, model=model.state_dict(), model_spec=spec, mean=data.mean,
                     std=data.std, classes=data.classes, image_size=data.image_size)
    return folder


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    work = tmp_path_factory.mktemp("ship")
    # 3 classes x 70 test JPEGs: at least 200 images of the test split.
    root = make_image_folder(work / "jpegs", classes=3, train_per_class=20, test_per_class=70,
                             size=12, suffix=".jpg")
    data = load_dataset("imagefolder", str(root), val_fraction=0.1, cache_dir=str(work / "cache"))
    checkpoint = _train_checkpoint(data, work / "checkpoint")
    model, test_loss, test_acc = results.test_split_score(str(checkpoint), data)
    uri = f"sqlite:///{work}/mlflow.db"
    record = SearchRecord(uri, "ship", str(work / "search"), "ship")
    summary = {"metric": "val_acc", "best_value": 1.0, "test_acc": test_acc, "test_loss": test_loss,
               "best_trial_id": "t0", "best_config": {}, "checkpoint": str(checkpoint)}
    complete_parent_run(record, summary, model, register=REGISTERED)
    mlflow.set_tracking_uri(uri)
    files = sorted(root.glob("test/*/*.jpg"))
    return SimpleNamespace(
        work=work, uri=uri, run_id=record.parent_id, test_acc=test_acc, classes=data.classes,
        model_uri=f"runs:/{record.parent_id}/{MODEL_NAME}",
        # What users hold: PIL's pixels of each JPEG, stacked, and the class folder's name.
        images=np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files]),
        labels=[f.parent.name for f in files],
    )


def _accuracy(predicted, labels) -> float:
    return float(np.mean([p == t for p, t in zip(predicted, labels)]))


def test_pyfunc_takes_jpeg_pixels_and_scores_the_test_accuracy(shipped):
    out = mlflow.pyfunc.load_model(shipped.model_uri).predict(shipped.images)
    assert len(out) == len(shipped.labels) >= 200
    assert set(out["class"]) <= set(shipped.classes)
    assert abs(_accuracy(out["class"], shipped.labels) - shipped.test_acc) <= 0.005
    assert shipped.test_acc > 0.5  # it learnt something: the answers mean something
    probs = out[[f"p_{c}" for c in shipped.classes]].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-5)
    np.testing.assert_allclose(out["probability"], probs.max(1))


def test_pyfunc_resizes_images_of_another_size(shipped):
    bigger = np.stack([np.asarray(Image.fromarray(i).resize((30, 30))) for i in shipped.images[:20]])
    out = mlflow.pyfunc.load_model(shipped.model_uri).predict(bigger)
    assert _accuracy(out["class"], shipped.labels[:20]) >= 0.5


def test_wrong_dtype_or_shape_is_refused_clearly(shipped):
    model = mlflow.pyfunc.load_model(shipped.model_uri)
    with pytest.raises(Exception, match="dtype"):
        model.predict(shipped.images.astype(np.float32) / 255)
    with pytest.raises(Exception, match="shape"):
        model.predict(shipped.images.transpose(0, 3, 1, 2).copy())  # NCHW, not NHWC


def test_signature_and_input_example_state_the_input(shipped):
    info = mlflow.models.get_model_info(shipped.model_uri)
    spec = info.signature.inputs.inputs[0]
    assert spec.type == np.dtype(np.uint8) and spec.shape == (-1, -1, -1, 3)
    assert info.signature.outputs.input_names() == ["class", "probability",
                                                    *(f"p_{c}" for c in shipped.classes)]
    assert info.flavors["python_function"]["loader_module"] == "core.served"
    assert info.saved_input_example_info is not None


def test_pytorch_flavour_takes_0_to_1_nchw_with_pruning_made_permanent(shipped):
    model = mlflow.pytorch.load_model(shipped.model_uri)
    assert not any(hasattr(m, "weight_orig") or m._forward_pre_hooks for m in model.modules())
    assert sparsity_of(model) == pytest.approx(PRUNE_RATIO, abs=0.01)
    with torch.no_grad():  # no statistics from elsewhere: pixels / 255 is all it takes
        logits = model(torch.from_numpy(shipped.images).permute(0, 3, 1, 2).float() / 255)
    predicted = [shipped.classes[i] for i in logits.argmax(1)]
    assert abs(_accuracy(predicted, shipped.labels) - shipped.test_acc) <= 0.005


def test_model_card_on_the_parent_run(shipped):
    run = MlflowClient(shipped.uri).get_run(shipped.run_id)
    m = run.data.metrics
    assert 0 < m["model_params_nonzero"] < 0.7 * m["model_params_total"]  # pruned
    assert m["model_weights_file_bytes"] > 10_000
    assert 0 < m["model_latency_ms_batch1"] < m["model_latency_ms_batch128"]
    card = mlflow.artifacts.load_dict(f"runs:/{shipped.run_id}/model_card.json")
    assert card["classes"] == shipped.classes and len(card["mean"]) == len(card["std"]) == 3
    text = mlflow.artifacts.load_text(f"runs:/{shipped.run_id}/model_card.md")
    assert "CPU latency, batch 128" in text and "class0" in text


def test_registered_champion_is_served_and_answers_as_pyfunc(shipped):
    version = MlflowClient(shipped.uri).get_model_version_by_alias(REGISTERED, "champion")
    assert str(version.version) == "1"
    with serving(f"models:/{REGISTERED}@champion", shipped.uri, shipped.work / "serve.log") as url:
        answer = ask(url, shipped.images)
        assert answer.ok, answer.text[:500]
        served = [row["class"] for row in answer.json()["predictions"]]
        local = mlflow.pyfunc.load_model(shipped.model_uri).predict(shipped.images)
        assert served == list(local["class"])
        assert abs(_accuracy(served, shipped.labels) - shipped.test_acc) <= 0.005
        # JSON has no dtype: the server casts 0..1 floats to uint8 zeros and ones; refused.
        floats = ask(url, shipped.images[:2] / 255)
        assert floats.status_code == 400 and "expected pixels 0..255" in floats.text
