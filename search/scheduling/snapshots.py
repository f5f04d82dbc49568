"""When Ray saves its experiment snapshot, and what it saves: after every trial checkpoint, with
every trial's ended status.

Ray copies its experiment state, and the trials' result.json files, from the driver's staging
folder into the experiment folder with each snapshot. It forces one after every trial checkpoint
only while `CheckpointConfig(num_to_keep=...)` is set; tune-run keeps every checkpoint for Ray and
deletes them itself (search/place/checkpoint_keeper.py), which would leave the snapshot to Ray's
period of 10 s or more. The folder would then lag the search, and Ray relies on it: a trial that
continues after a pause first reads its result.json back from the folder, and an older copy there
replaced epochs it had logged (seen as a promoted trial whose result.json began at epoch 2).

Ray 2.60 also leaves out of the snapshot the ended status of a trial that has no actor when it
ends (`TuneController._schedule_trial_stop` returns before marking it): a paused trial stopped at a
rung, or a trial whose worker process died. The saved state then keeps it PAUSED or RUNNING, and a
finished search looks unfinished (seen as "stopped before the end (1 pending)" after a trial's
process died twice). No public API marks it, and no Ray issue about it was found (searched
ray-project/ray's issues for stopping a paused trial and its saved status).
"""

from __future__ import annotations

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler


def snapshot_at_each_checkpoint(tune_controller) -> None:
    """Has Ray force its snapshot after every trial checkpoint, as num_to_keep=1 did.

    Ray 2.60 sets this cadence from num_to_keep alone (TuneController._create_checkpoint_manager)
    and has no other setting for it; this module is the one place tune-run reaches into Ray's
    controller for its snapshot.
    """
    controller = getattr(tune_controller, "_tune_controller", tune_controller)
    controller._checkpoint_manager._sync_every_n_trial_checkpoints = 1


def save_with_next_snapshot(tune_controller, trial) -> None:
    """Has Ray write the trial's status (as it is when the snapshot is taken) into its next one."""
    controller = getattr(tune_controller, "_tune_controller", tune_controller)
    controller._mark_trial_to_checkpoint(trial)


class SnapshotErrors:
    """A scheduler mixin: an errored trial's status reaches the snapshot (Ray sets ERROR right
    after this hook, and the snapshot serialises the trial when it is taken)."""

    def on_trial_error(self, tune_controller, trial) -> None:
        save_with_next_snapshot(tune_controller, trial)
        super().on_trial_error(tune_controller, trial)


class SnapshotFIFO(SnapshotErrors, FIFOScheduler):
    """Ray's FIFO scheduler, with the snapshot after every checkpoint and every error."""

    def on_trial_add(self, tune_controller, trial) -> None:
        snapshot_at_each_checkpoint(tune_controller)
        super().on_trial_add(tune_controller, trial)


class SnapshotASHA(SnapshotErrors, ASHAScheduler):
    """Ray's stopping ASHA, with the snapshot after every checkpoint and every error."""

    def on_trial_add(self, tune_controller, trial) -> None:
        snapshot_at_each_checkpoint(tune_controller)
        super().on_trial_add(tune_controller, trial)
