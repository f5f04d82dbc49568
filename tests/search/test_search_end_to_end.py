"""A small search through the real CLI, real Ray Tune and a real MLflow SQLite store."""

from __future__ import annotations

import re
import subprocess
import sys

import mlflow
import mlflow.pytorch
import numpy as np
import pytest
import torch

from core.data import load_dataset
from tests.conftest import REPO, search_runs
from tests.search.conftest import MAX_EPOCHS

pytestmark = pytest.mark.slow

def _runs(uri):
    return search_runs(uri, "e2e")


def test_one_parent_and_one_child_run_per_trial(finished_search):
    _, uri, _ = finished_search
    _, parents, children = _runs(uri)
    assert len(parents) == 1
    trial_ids = [c.data.tags["tune_run.trial_id"] for c in children]
    assert len(trial_ids) == 8 and len(set(trial_ids)) == 8
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert all(r.info.status == "FINISHED" for r in parents + children)


def test_every_epoch_is_logged_once_with_step_equal_to_epoch(finished_search):
    _, uri, _ = finished_search
    client, _, children = _runs(uri)
    for child in children:
        epochs = int(child.data.tags["tune_run.epochs"])
        for key in ("train_loss", "val_loss", "val_acc", "lr", "sparsity", "images_per_s"):
            steps = [m.step for m in client.get_metric_history(child.info.run_id, key)]
            assert steps == list(range(1, epochs + 1)), (key, steps)
        # No Ray bookkeeping among the metrics.
        assert not {"pid", "timestamp", "done", "time_since_restore"} & set(child.data.metrics)
        assert child.data.params["optimizer"] in ("sgd", "adamw")
        assert child.data.params["width"] == "0.0625"


def test_asha_stopped_some_trials_early_and_tagged_them(finished_search):
    _, uri, _ = finished_search
    _, _, children = _runs(uri)
    early = [c for c in children if c.data.tags["tune_run.status"] == "stopped_early"]
    full = [c for c in children if c.data.tags["tune_run.status"] == "completed"]
    assert early and full
    for c in early:
        assert int(c.data.tags["tune_run.stopped_at_epoch"]) < MAX_EPOCHS
    for c in full:
        assert c.data.tags["tune_run.epochs"] == str(MAX_EPOCHS)


def test_parent_run_holds_the_search_and_a_best_model_that_scores_as_reported(
        finished_search, image_folder):
    work, uri, stdout = finished_search
    client, parents, children = _runs(uri)
    parent = parents[0]
    assert parent.data.params["num_samples"] == "8"
    assert parent.data.params["space_file"].endswith("tiny.py")
    best_id = parent.data.tags["tune_run.best_trial_id"]
    best_child = next(c for c in children if c.data.tags["tune_run.trial_id"] == best_id)
    best_val = max(m.value for m in client.get_metric_history(best_child.info.run_id, "val_acc"))
    assert parent.data.metrics["best_val_acc"] == pytest.approx(best_val)
    assert [a.path for a in client.list_artifacts(parent.info.run_id, "space")] == ["space/tiny.py"]

    mlflow.set_tracking_uri(uri)
    model = mlflow.pytorch.load_model(f"runs:/{parent.info.run_id}/best_model")
    data = load_dataset("imagefolder", str(image_folder), cache_dir=str(work / "cache"))
    with torch.no_grad():  # float 0..1 (N, C, H, W): the normalisation is inside the model
        logits = model(torch.from_numpy(data.test_x).float() / 255)
    accuracy = float((logits.argmax(1).numpy() == data.test_y).mean())
    assert accuracy == pytest.approx(parent.data.metrics["test_acc"])
    assert f"on the test split: accuracy {accuracy:.4f}" in stdout


def test_ray_results_agree_with_mlflow(finished_search):
    work, uri, _ = finished_search
    client, _, children = _runs(uri)
    import json

    for child in children:
        trial_id = child.data.tags["tune_run.trial_id"]
        folder = next((work / "results" / "tiny").glob(f"*{trial_id}*"))
        rows = [json.loads(line) for line in (folder / "result.json").read_text().splitlines()]
        logged = client.get_metric_history(child.info.run_id, "val_acc")
        assert np.allclose([m.value for m in logged], [r["val_acc"] for r in rows])


def test_each_trial_keeps_its_latest_and_its_best_checkpoints_only(finished_search):
    work, _, _ = finished_search
    import json

    folders = [f for f in (work / "results" / "tiny").iterdir() if (f / "result.json").exists()]
    assert len(folders) == 8
    for folder in folders:
        rows = [json.loads(line) for line in (folder / "result.json").read_text().splitlines()]
        saved = [r for r in rows if r.get("checkpoint_dir_name")]
        top = max(r["val_acc"] for r in saved)
        best = {r["checkpoint_dir_name"] for r in saved if r["val_acc"] == top}
        kept = {p.name for p in folder.glob("checkpoint_*")}
        assert kept == best | {saved[-1]["checkpoint_dir_name"]}, (folder.name, kept)


def test_the_console_tells_the_search_in_plain_lines_without_noise(finished_search):
    _, _, output = finished_search
    lines = output.splitlines()
    # Not a terminal: no Ray tables or boxes, no worker output, no traceback, no terminal codes.
    for noise in ("Traceback", "SystemExit", "Trial status", "Checkpoint successfully", "╭",
                  "Warning", "WARNING", "\x1b["):
        assert noise not in output, (noise, output[-3000:])
    assert sum(bool(re.search(r"\] t\d\d started", line)) for line in lines) == 8
    assert sum(bool(re.search(r"\] t\d\d ended: ", line)) for line in lines) == 8
    epoch_lines = [re.search(r"(t\d\d) epoch (\d+)/", line) for line in lines]
    epochs = [m.groups() for m in epoch_lines if m]
    assert len(epochs) == len(set(epochs)) >= 8  # at most one line per trial and epoch
    assert any("stopped at epoch" in line and "the rung's cut" in line for line in lines)
    assert any(line.startswith("[") and "search ended: 8 of 8 trials ended" in line
               for line in lines)
    assert len(lines) <= 60, output


def test_ls_shows_the_finished_search(finished_search):
    work, _, _ = finished_search
    proc = subprocess.run([sys.executable, "-m", "search.cli", "ls", "--storage",
                           str(work / "results")], capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.startswith("| tiny "))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[1:3] == ["finished", "8/8"] and re.fullmatch(r"val_acc [01](\.\d+)?", cells[4])
    assert "Resume" not in proc.stdout


def test_runs_have_descriptions_a_reviewer_reads_first(finished_search):
    _, uri, _ = finished_search
    _, parents, children = _runs(uri)
    note = parents[0].data.tags["mlflow.note.content"]
    assert note.startswith("Search of `tiny.py` on imagefolder: 8 trials")
    assert "**Top 5** by val_acc" in note and "**Best configuration**" in note
    assert "**Test accuracy** of its best checkpoint" in note and "`learning_curves.png`" in note
    for child in children:
        said = child.data.tags["mlflow.note.content"]
        assert said.startswith(("**Completed**", "**Stopped by ASHA at rung")), said
