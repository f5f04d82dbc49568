"""Which of a trial's checkpoints may be deleted, and when: the one deleter of checkpoint folders.

Ray's own `CheckpointConfig(num_to_keep=K)` deletes a trial's older checkpoint the moment a newer one
is registered, while the experiment state that would stop pointing at it reaches the experiment
folder up to tens of seconds later. A driver killed in that window leaves a state whose trial
restores from a folder that is gone ("Could not recover from checkpoint as it does not exist on
storage anymore"), seen in about half the runs of a test that kills a search twice. Here Ray keeps
every checkpoint, and this callback deletes one only when neither this driver nor the experiment
state saved in the folder could still ask for it: it is not the latest, nor tied for the best by the
metric, in either.
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath

from pyarrow import fs as pafs
from ray.tune import Callback

from trainables.metrics import finite_float

CHECKPOINT_PREFIX = "checkpoint_"
STATE_PATTERN = "experiment_state-"


class CheckpointKeeper(Callback):
    """After each checkpoint of a trial, and at the end, deletes the checkpoints nobody can ask for
    again.

    `metric` is None where a trial's model is its last epoch's (only the latest is kept); else the
    checkpoints best by `metric` in `mode` are kept as well, for the best model at the end.
    """

    def __init__(self, metric: str | None, mode: str):
        self.metric, self.mode = metric, mode
        self._saved: tuple[str, int, int] | None = None  # the saved state read last: name, size, mtime
        self._saved_keep: dict[str, set[str]] = {}  # trial id -> checkpoint names it points at

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        self._sweep(trial)

    def on_experiment_end(self, trials, **info):
        # Ray saves the final experiment state just before: what it no longer points at can go.
        for trial in trials:
            if trial.run_metadata.checkpoint_manager is not None:
                self._sweep(trial)

    def _sweep(self, trial) -> None:
        fs, trial_path = trial.storage.storage_filesystem, trial.storage.trial_fs_path
        keep = self._kept_by(trial.run_metadata.checkpoint_manager)
        keep |= self._saved_state_keeps(fs, trial.storage.experiment_fs_path).get(trial.trial_id, set())
        newest = max(keep, default="")
        for name in checkpoint_names(fs, trial_path):
            if name < newest and name not in keep:  # never one being written after the latest
                try:
                    fs.delete_dir(f"{trial_path}/{name}")
                except OSError:  # a storage hiccup costs disk, not the search; the next sweep retries
                    pass

    def _kept_by(self, manager) -> set[str]:
        """Names of the checkpoints a trial's checkpoint manager could restore or pick as best."""
        results = list(manager.best_checkpoint_results)
        keep = {_name(manager.latest_checkpoint_result)} - {None}
        scores = [(_score(r, self.metric), r) for r in results] if self.metric else []
        finite = [(s, r) for s, r in scores if s is not None]
        if finite:
            best = (max if self.mode == "max" else min)(s for s, _ in finite)
            keep |= {_name(r) for s, r in finite if s == best}
        return keep

    def _saved_state_keeps(self, fs, experiment_path: str) -> dict[str, set[str]]:
        """trial id -> the checkpoints the experiment state saved in the folder points at; read
        again only when the newest state file has changed."""
        states = [i for i in fs.get_file_info(pafs.FileSelector(experiment_path))
                  if i.type == pafs.FileType.File and i.base_name.startswith(STATE_PATTERN)
                  and i.base_name.endswith(".json")]
        if not states:
            return {}
        newest = max(states, key=lambda i: i.base_name)  # Ray restores from the newest name
        stamp = (newest.base_name, newest.size, newest.mtime_ns or 0)
        if stamp != self._saved:
            keeps = self._read_saved_keeps(fs, newest.path)
            if keeps is None:  # being written: keep what the last reading said
                return self._saved_keep
            self._saved, self._saved_keep = stamp, keeps
        return self._saved_keep

    def _read_saved_keeps(self, fs, path: str) -> dict[str, set[str]] | None:
        from ray.tune.trainable.metadata import _TrainingRunMetadata

        try:
            with fs.open_input_stream(path) as f:
                saved = json.loads(f.read().decode())
        except (OSError, ValueError):
            return None
        keeps = {}
        for trial_state, run_metadata in saved.get("trial_data", []):
            trial_id = json.loads(trial_state)["trial_id"]
            manager = _TrainingRunMetadata.from_json_state(run_metadata).checkpoint_manager
            keeps[trial_id] = self._kept_by(manager)
        return keeps


def checkpoint_names(fs, trial_path: str) -> list[str]:
    """The names of a trial's checkpoint folders (checkpoint_000003, ...), oldest first."""
    try:
        infos = fs.get_file_info(pafs.FileSelector(trial_path))
    except (FileNotFoundError, OSError):
        return []
    return sorted(i.base_name for i in infos
                  if i.type == pafs.FileType.Directory and i.base_name.startswith(CHECKPOINT_PREFIX))


def _name(result) -> str | None:
    return PurePosixPath(result.checkpoint.path).name if result is not None else None


def _score(result, metric: str) -> float | None:
    return finite_float(result.metrics.get(metric))
