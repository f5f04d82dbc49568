"""A trial's checkpoints are deleted only when neither the driver nor the saved experiment state
can ask for them again (the latest, and the best by the metric, in either)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from pyarrow import fs as pafs
from ray.train._internal.checkpoint_manager import _CheckpointManager
from ray.train._internal.session import _TrainingResult
from ray.tune import Checkpoint, CheckpointConfig
from ray.tune.trainable.metadata import _TrainingRunMetadata

from search.place.checkpoint_keeper import CheckpointKeeper, checkpoint_names

VAL_ACC = [0.5, 0.7, 0.6, 0.4, 0.3]


def _checkpoints(trial_dir: Path) -> list[_TrainingResult]:
    results = []
    for i, acc in enumerate(VAL_ACC):
        folder = trial_dir / f"checkpoint_{i:06d}"
        folder.mkdir(parents=True)
        (folder / "trial.pt").write_bytes(b"x")
        results.append(_TrainingResult(Checkpoint.from_directory(str(folder)),
                                       {"val_acc": acc, "training_iteration": i + 1}))
    return results


def _manager(results: list[_TrainingResult], metric: str | None) -> _CheckpointManager:
    config = CheckpointConfig(num_to_keep=None, checkpoint_score_attribute=metric,
                              checkpoint_score_order="max")
    manager = _CheckpointManager(config)
    for result in results:
        manager.register_checkpoint(result)
    return manager


def _save_state(experiment: Path, trial_id: str, manager: _CheckpointManager, name: str) -> None:
    metadata = _TrainingRunMetadata()
    metadata.checkpoint_manager = manager
    state = {"trial_data": [[json.dumps({"trial_id": trial_id}), metadata.get_json_state()]]}
    (experiment / f"experiment_state-{name}.json").write_text(json.dumps(state))


def _trial(experiment: Path, trial_dir: Path, manager: _CheckpointManager) -> SimpleNamespace:
    """The parts of Ray's Trial the keeper reads."""
    storage = SimpleNamespace(storage_filesystem=pafs.LocalFileSystem(),
                              trial_fs_path=str(trial_dir), experiment_fs_path=str(experiment))
    return SimpleNamespace(trial_id="t1", storage=storage,
                           run_metadata=SimpleNamespace(checkpoint_manager=manager))


def test_a_checkpoint_the_saved_state_restores_from_outlives_newer_ones(tmp_path):
    trial_dir = tmp_path / "trial_t1"
    results = _checkpoints(trial_dir)
    # The folder's saved state was written at checkpoint 2; the driver has since registered 3 and 4.
    _save_state(tmp_path, "t1", _manager(results[:3], "val_acc"), "2026-12-01_10-00-00")
    keeper = CheckpointKeeper("val_acc", "max")
    trial = _trial(tmp_path, trial_dir, _manager(results, "val_acc"))
    keeper.on_checkpoint(5, [trial], trial, results[-1].checkpoint)
    # 1: best (both views); 2: the saved state's latest; 4: the driver's latest.
    assert checkpoint_names(pafs.LocalFileSystem(), str(trial_dir)) == [
        "checkpoint_000001", "checkpoint_000002", "checkpoint_000004"]

    # Once a newer state is saved, what only the old one pointed at goes.
    _save_state(tmp_path, "t1", _manager(results, "val_acc"), "2026-12-01_10-05-00")
    keeper.on_experiment_end([trial])
    assert checkpoint_names(pafs.LocalFileSystem(), str(trial_dir)) == [
        "checkpoint_000001", "checkpoint_000004"]


def test_a_trial_judged_on_its_last_epoch_keeps_only_its_latest(tmp_path):
    trial_dir = tmp_path / "trial_t1"
    results = _checkpoints(trial_dir)
    _save_state(tmp_path, "t1", _manager(results, None), "2026-12-01_10-00-00")
    trial = _trial(tmp_path, trial_dir, _manager(results, None))
    CheckpointKeeper(None, "max").on_experiment_end([trial])
    assert checkpoint_names(pafs.LocalFileSystem(), str(trial_dir)) == ["checkpoint_000004"]


def test_a_newer_checkpoint_than_any_registered_is_never_deleted(tmp_path):
    trial_dir = tmp_path / "trial_t1"
    results = _checkpoints(trial_dir)
    (trial_dir / "checkpoint_000005").mkdir()  # the worker is writing it; not reported yet
    trial = _trial(tmp_path, trial_dir, _manager(results, "val_acc"))
    CheckpointKeeper("val_acc", "max").on_checkpoint(5, [trial], trial, results[-1].checkpoint)
    assert checkpoint_names(pafs.LocalFileSystem(), str(trial_dir)) == [
        "checkpoint_000001", "checkpoint_000004", "checkpoint_000005"]
