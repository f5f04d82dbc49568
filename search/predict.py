"""`tune-run predict NAME FILES...`: the top classes of image files, by a search's best model.

The model is the one logged to the search's parent run, loaded as `mlflow.pyfunc.load_model` loads it,
so what this prints is what the served model answers: each file is read at its own size and the model
resizes it as the training images were.
"""

from __future__ import annotations

from core.images import ImageError, fit, open_image
from search.door.spec import SearchSpec
from search.errors import SpecError
from search.record import resolve_tracking_uri
from search.record.tracking import SearchRecord
from search.redact import redact
from search.report.results import MODEL_NAME

TOP = 3


def predict_files(spec: SearchSpec, files: list[str],
                  top: int = TOP) -> list[tuple[str, list[tuple[str, float]]]]:
    """For each file, its `top` classes with their probabilities, best first.

    Raises SpecError (one line) when the search has no best model in its MLflow store or a file
    cannot be read as an image; every file is read before any is predicted."""
    record = SearchRecord.find(spec.tracking_uri, spec.experiment, spec.experiment_uri,
                               spec.name)
    if record is None or not record.has_tag("tune_run.best_model", MODEL_NAME):
        raise SpecError(
            f"search {spec.name!r} has no best model in MLflow store "
            f"{redact(record.tracking_uri if record else resolve_tracking_uri(spec.tracking_uri))}: "
            "it has not finished, or it was recorded elsewhere (give --tracking-uri)")
    try:
        images = [open_image(f) for f in files]
    except ImageError as e:
        raise SpecError(str(e)) from None
    model = record.load_pyfunc(MODEL_NAME)
    channels = model.metadata.get_input_schema().inputs[0].shape[-1]
    answers = []
    for path, image in zip(files, images):
        chw = fit(image, None, channels)  # its own size: the model resizes it
        row = model.predict(chw.transpose(1, 2, 0)[None]).iloc[0]  # one (1, H, W, C) image
        probs = {k.removeprefix("p_"): float(v) for k, v in row.items() if k.startswith("p_")}
        ranked = sorted(probs.items(), key=lambda kv: -kv[1])[:top]
        answers.append((path, ranked))
    return answers


def answer_line(path: str, ranked: list[tuple[str, float]]) -> str:
    """'cat.jpg: cat 0.812, dog 0.121, frog 0.031'"""
    return f"{path}: " + ", ".join(f"{name} {p:.3f}" for name, p in ranked)
