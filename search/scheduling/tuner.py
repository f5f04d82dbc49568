"""Ray Tune orchestration: the Tuner (ASHA, search algorithm, resources), new or restored."""

from __future__ import annotations

import logging
import os

import ray
from ray import tune
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.basic_variant import BasicVariantGenerator

from core.data import Dataset
from search.door.spec import SearchSpec
from search.errors import SpecError
from search.place.checkpoint_keeper import CheckpointKeeper
from search.place.cluster import data_source
from search.place.result_log import WholeResultLog
from search.place.storage import tune_storage_path
from search.scheduling.multifidelity import MultiFidelitySearcher
from search.scheduling.pareto import (
    FinalResultsOptuna,
    judged_on_last_epoch,
    rung_objectives,
    spec_objectives,
)
from search.scheduling.promotion import PausedTrialsWait, PromotionASHA, spec_rungs
from search.scheduling.snapshots import SnapshotASHA, SnapshotFIFO
from trainables.classifier import TrialSettings, train_classifier
from trainables.metrics import EPOCH


def start_ray(address: str | None, verbose: bool = False):
    """Joins the cluster at `address` (or RAY_ADDRESS), else starts a local Ray; returns Ray's
    context, or None if Ray was already running.

    A local Ray keeps Ray's token authentication and runs no dashboard. The trial workers' own
    output (Ray's "Checkpoint successfully created", their stderr) reaches this console only with
    `verbose`; it stays in Ray's log files, and an error of a trial is told by the console.
    """
    # Ray warns at every forced experiment snapshot; with a checkpoint per epoch that is noise.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if ray.is_initialized():
        return None
    if address:
        return ray.init(address=address, log_to_driver=verbose, logging_level=_log_level(verbose))
    # address="local": always a new Ray of this search's own, never one that `ray start` or an
    # earlier run left on this machine (ray.init() would join it, or hang on its stale address).
    return ray.init(address="local", include_dashboard=False, log_to_driver=verbose,
                    logging_level=_log_level(verbose))


def _log_level(verbose: bool) -> int:
    return logging.INFO if verbose else logging.ERROR  # ray.init resets Ray's logger to this


def trial_resources(spec: SearchSpec) -> dict[str, float]:
    """CPUs and GPUs of each trial; GPUs only when the cluster has some."""
    cluster_gpus = ray.cluster_resources().get("GPU", 0)
    gpus = spec.gpus_per_trial if cluster_gpus > 0 else 0
    if gpus > cluster_gpus > 0:
        raise SpecError(f"--gpus-per-trial: {gpus:g} is more than the cluster's {cluster_gpus:g} GPUs")
    return {"cpu": spec.cpus_per_trial, "gpu": gpus}


def make_trainable(spec: SearchSpec, data: Dataset):
    settings = TrialSettings(model=spec.model, max_epochs=spec.max_epochs, compile=spec.compile,
                             precision=spec.precision, augment=spec.augment)
    source = data_source(spec, data)
    if source is None:
        # with_parameters puts the data set in the object store once; each node pulls one copy
        # and its trials share it.
        trainable = tune.with_parameters(train_classifier, data=data, settings=settings)
    else:  # too big to go through the driver: each node reads data_dir itself
        trainable = tune.with_parameters(train_classifier, data=None, settings=settings,
                                         source=source)
    return tune.with_resources(trainable, trial_resources(spec))


def make_scheduler(spec: SearchSpec):
    if spec.scheduler == "fifo":
        return SnapshotFIFO()
    if spec.scheduler == "asha":
        return PromotionASHA(max_epochs=spec.max_epochs, grace_period=spec.grace_period,
                             reduction_factor=spec.reduction_factor,
                             max_concurrent=spec.max_concurrent or cluster_slots(spec),
                             also=rung_objectives(spec))
    # Ray's stopping form. Epochs are the time unit: the trainable reports once per epoch.
    return SnapshotASHA(time_attr=EPOCH, max_t=spec.max_epochs,
                         grace_period=spec.grace_period, reduction_factor=spec.reduction_factor)


def cluster_slots(spec: SearchSpec) -> int:
    """How many trials the cluster can train at once with each trial's CPUs and GPUs."""
    cluster, need = ray.cluster_resources(), trial_resources(spec)
    slots = int(cluster.get("CPU", 1) // need["cpu"])
    if need["gpu"]:
        slots = min(slots, int(cluster.get("GPU", 0) // need["gpu"]))
    return max(1, slots)


def make_search_alg(spec: SearchSpec):
    limit = spec.max_concurrent or None
    # Promotion ASHA starts trials itself, up to the limit; a paused trial must not hold a slot.
    promotion = spec.scheduler == "asha"
    if spec.search == "random":
        return BasicVariantGenerator(random_state=spec.seed,
                                     max_concurrent=0 if promotion else limit or 0)
    searcher = _model_searcher(spec)
    if not limit:
        return searcher
    return (PausedTrialsWait if promotion else ConcurrencyLimiter)(searcher, max_concurrent=limit)


def _model_searcher(spec: SearchSpec):
    if spec.search == "multifidelity":
        # It learns from each rung as trials reach it, and from the last epoch.
        return MultiFidelitySearcher(spec_objectives(spec), (*spec_rungs(spec), spec.max_epochs),
                                     seed=spec.seed)
    if spec.search == "optuna":
        from optuna.samplers import TPESampler

        # TPE takes one objective or several; only trials that ran all their epochs teach it.
        return FinalResultsOptuna(spec_objectives(spec), spec.max_epochs,
                                  sampler=TPESampler(seed=spec.seed))
    raise SpecError(f"settings.search: {spec.search!r}: expected random, optuna or multifidelity")


def new_tuner(spec: SearchSpec, data: Dataset, callbacks: list[tune.Callback],
              verbose: bool = False, scheduler=None) -> tune.Tuner:
    """A Tuner for a new search; `scheduler` (else `make_scheduler(spec)`) is the one it runs."""
    return tune.Tuner(
        make_trainable(spec, data),
        param_space=spec.space,
        tune_config=tune.TuneConfig(
            metric=spec.metric, mode=spec.mode, num_samples=spec.num_samples,
            scheduler=scheduler or make_scheduler(spec), search_alg=make_search_alg(spec),
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=spec.name,
            storage_path=tune_storage_path(spec.storage),  # a local folder, or s3://bucket/prefix
            # WholeResultLog: in place of Ray's default result.json writer
            callbacks=[*callbacks, checkpoint_keeper(spec), WholeResultLog()],
            checkpoint_config=kept_checkpoints(spec),
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            verbose=_ray_verbosity(verbose),
        ),
    )


def kept_checkpoints(spec: SearchSpec) -> tune.CheckpointConfig:
    """Ray keeps every checkpoint: `checkpoint_keeper` deletes the ones nobody can ask for again
    (Ray's own num_to_keep deletes one before the saved experiment state stops pointing at it)."""
    if judged_on_last_epoch(spec):
        return tune.CheckpointConfig(num_to_keep=None)
    return tune.CheckpointConfig(num_to_keep=None, checkpoint_score_attribute=spec.metric,
                                 checkpoint_score_order=spec.mode)


def checkpoint_keeper(spec: SearchSpec) -> CheckpointKeeper:
    """Each trial keeps its latest checkpoint, for resume, and its best by the metric, for the
    best model; a trial judged by its last epoch (several objectives, or channels removed as it
    trains: the model shrinks after its best epoch) keeps its latest only."""
    return CheckpointKeeper(None if judged_on_last_epoch(spec) else spec.metric, spec.mode)


def _ray_verbosity(verbose: bool) -> int:
    # Ray's status tables and per-trial result boxes; the console (search/console.py) replaces them.
    return 1 if verbose else 0


def restored_tuner(spec: SearchSpec, data: Dataset, callbacks: list[tune.Callback],
                   retry_errored: bool = True, verbose: bool = False,
                   scheduler=None) -> tune.Tuner:
    """The search's Tuner from its experiment folder: finished trials stay finished, running ones
    continue from their last checkpoint, the search algorithm's state comes back, and
    `scheduler` (else `make_scheduler(spec)`) rebuilds ASHA's rungs from the trials' results."""
    tuner = tune.Tuner.restore(
        spec.experiment_uri, make_trainable(spec, data),
        resume_unfinished=True, resume_errored=retry_errored, param_space=spec.space,
    )
    # Ray brings back the callbacks and the scheduler pickled when the search started (Ray saves
    # no scheduler state; ours rebuild from the result files). Use this run's: its tracking URI
    # and code may differ, and the console follows the scheduler it was given.
    run_config, tune_config = _restored_configs(tuner)
    run_config.callbacks = [*callbacks, checkpoint_keeper(spec), WholeResultLog()]
    run_config.checkpoint_config = kept_checkpoints(spec)
    run_config.verbose = _ray_verbosity(verbose)
    tune_config.scheduler = scheduler or make_scheduler(spec)
    return tuner


def _restored_configs(tuner: tune.Tuner) -> tuple[tune.RunConfig, tune.TuneConfig]:
    """The RunConfig and TuneConfig a restored Tuner will run with, to be changed in place.

    Ray 2.60 has no public getter or setter for them: `Tuner.restore` takes neither, and Ray's
    issue ray-project/ray#41364 ("add to the Tuner class interface a mean to get back the
    tune_config and run_config from a restored tuner", open) names this very workaround. The one
    place tune-run reaches into the Tuner.
    """
    internal = tuner._local_tuner
    return internal.get_run_config(), internal._tune_config
