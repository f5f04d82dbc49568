"""When Ray saves its experiment snapshot: after every checkpoint of a trial, as before.

Ray copies its experiment state, and the trials' result.json files, from the driver's staging
folder into the experiment folder with each snapshot. It forces one after every trial checkpoint
only while `CheckpointConfig(num_to_keep=...)` is set; tune-run keeps every checkpoint for Ray and
deletes them itself (search/place/checkpoint_keeper.py), which would leave the snapshot to Ray's
period of 10 s or more. The folder would then lag the search, and Ray relies on it: a trial that
continues after a pause first reads its result.json back from the folder, and an older copy there
replaced epochs it had logged (seen as a promoted trial whose result.json began at epoch 2).
"""

from __future__ import annotations

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler


def snapshot_at_each_checkpoint(tune_controller) -> None:
    """Has Ray force its snapshot after every trial checkpoint, as num_to_keep=1 did.

    Ray 2.60 sets this cadence from num_to_keep alone (TuneController._create_checkpoint_manager)
    and has no other setting for it; this is the one place tune-run sets it.
    """
    controller = getattr(tune_controller, "_tune_controller", tune_controller)
    controller._checkpoint_manager._sync_every_n_trial_checkpoints = 1


class SnapshotFIFO(FIFOScheduler):
    """Ray's FIFO scheduler, with the snapshot after every checkpoint."""

    def on_trial_add(self, tune_controller, trial) -> None:
        snapshot_at_each_checkpoint(tune_controller)
        super().on_trial_add(tune_controller, trial)


class SnapshotASHA(ASHAScheduler):
    """Ray's stopping ASHA, with the snapshot after every checkpoint."""

    def on_trial_add(self, tune_controller, trial) -> None:
        snapshot_at_each_checkpoint(tune_controller)
        super().on_trial_add(tune_controller, trial)
