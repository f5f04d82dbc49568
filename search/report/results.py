"""The end of a search: the leaderboard, the best configuration, and its checkpoint on the test split."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from ray.tune import ResultGrid

from core.augment import BatchAugment
from core.data import Dataset
from core.train import evaluate
from search.door.spec import SearchSpec
from search.place.storage import checkpoint_location, local_folder
from search.record.model_card import ship_best_model
from search.record.tracking import SearchRecord
from search.report.leaderboard import leaderboard_markdown, leaderboard_rows, trial_histories
from search.scheduling.pareto import (
    Objective,
    best_row,
    front_table,
    judged_on_last_epoch,
    pareto_rows,
    spec_objectives,
)
from trainables.checkpoints import model_from_checkpoint, served_model
from trainables.metrics import finite

MODEL_NAME = "best_model"


@dataclass
class SearchResults:
    metric: str
    rows: list[dict[str, Any]]  # one per trial, best first: trial_id, epochs, metric, dimensions
    best_trial_id: str
    best_config: dict[str, Any]
    best_value: float
    test_acc: float
    test_loss: float
    checkpoint: str  # the best trial's best checkpoint: its folder, or its s3:// URI
    dimensions: list[str] = field(default_factory=list)
    front: list[dict[str, Any]] = field(default_factory=list)  # Pareto front (several objectives)
    why: str = ""  # why this trial is the best

    def summary(self) -> dict[str, Any]:
        """What the parent run records; also written to the experiment folder when it finishes."""
        return {"best_trial_id": self.best_trial_id, "best_config": self.best_config,
                "metric": self.metric, "best_value": self.best_value, "test_acc": self.test_acc,
                "test_loss": self.test_loss, "checkpoint": self.checkpoint,
                "trials": len(self.rows), "front": self.front, "why": self.why}

    def table(self, top: int = 10) -> str:
        columns = ["trial", "status", "epochs", self.metric, *self.dimensions]
        return leaderboard_markdown([{c: r.get(c) for c in columns} for r in self.rows[:top]])


def test_split_score(checkpoint_dir: str, data: Dataset) -> tuple[torch.nn.Module, float, float]:
    """The checkpoint's model, and its loss and accuracy on the test split (on the CPU)."""
    model = model_from_checkpoint(checkpoint_dir)
    augment = BatchAugment(data.mean, data.std, padding=0, hflip=False)
    x, y = torch.from_numpy(data.test_x.copy()), torch.from_numpy(data.test_y.copy())
    loss, acc = evaluate(model, x, y, augment)
    return model, loss, acc


def summarise(spec: SearchSpec, grid: ResultGrid,
              data: Dataset) -> tuple[SearchResults, torch.nn.Module]:
    """The leaderboard, and the best checkpoint's model scored on the test split."""
    histories = trial_histories(spec)
    rows = [r for r in leaderboard_rows(spec, histories) if r[spec.metric] is not None]
    if not rows:
        raise RuntimeError(f"no trial reported {spec.metric}; see the errors above")
    choice = choose_best(spec, rows, histories)
    best = next(r for r in grid if r.metrics.get("trial_id") == choice.trial_id)
    kept = best.checkpoint if choice.last_epoch else best_checkpoint(best, spec.metric, spec.mode)
    checkpoint = checkpoint_location(kept)
    model, test_loss, test_acc = test_split_score(local_folder(checkpoint), data)
    results = SearchResults(spec.metric, rows, choice.trial_id, _hparams(best.config),
                            choice.value, test_acc, test_loss, checkpoint, spec.dimensions,
                            choice.front, choice.why)
    return results, model


def best_checkpoint(result, metric: str, mode: str):
    """The trial's checkpoint best by `metric` (the earliest of a tie, as Ray picks), its latest if
    none has a finite value. Ray's own `get_best_checkpoint` compares NaN too, and then its answer
    depends on the order (a first epoch that diverged can win)."""
    scored = [(c, m[metric]) for c, m in result.best_checkpoints if finite(m.get(metric))]
    if not scored:
        return result.checkpoint
    pick = max if mode == "max" else min
    return pick(scored, key=lambda pair: pair[1])[0]


@dataclass(frozen=True)
class BestChoice:
    trial_id: str
    value: float  # of spec.metric: at the best epoch, or at the last where trials are judged there
    why: str
    last_epoch: bool  # whether its model is its last epoch's
    front: list[dict[str, Any]] = field(default_factory=list)  # the Pareto front's rows


def choose_best(spec: SearchSpec, rows: list[dict[str, Any]],
                histories: list) -> BestChoice:
    """The trial whose model ships. Single objective: the leaderboard's first. Several objectives,
    channel pruning or a latency budget: the best front trial in the first objective at its last
    epoch, within `max_latency_ms` if set (search/scheduling/pareto.py); where no trial qualifies, the
    leaderboard's first, saying why."""
    if not (judged_on_last_epoch(spec) or spec.max_latency_ms is not None):
        return BestChoice(rows[0]["trial"], rows[0][spec.metric], f"best {spec.metric}", False)
    objectives = spec_objectives(spec)
    if spec.max_latency_ms is not None and "latency_ms" not in (o.metric for o in objectives):
        objectives = [*objectives, Objective("latency_ms", "min")]  # the budget needs it
    standing = pareto_rows(spec, histories, objectives)
    front = front_table(standing, objectives)
    row, why = best_row(standing, objectives, spec.max_latency_ms)
    if row is None:
        fallback = rows[0]
        return BestChoice(fallback["trial"], fallback[spec.metric],
                          f"{why}; taking the best {spec.metric} instead", True, front)
    return BestChoice(row["trial"], row[spec.metric], why, True, front)


def _hparams(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if not k.startswith("_")}


def complete_parent_run(record: SearchRecord, summary: dict[str, Any], model: torch.nn.Module,
                        register: str | None = None) -> None:
    """Records the search's outcome on its parent run, once: what is there already is kept.
    With `register`, the best model also becomes a version of that registered model, with the
    alias `champion`."""
    record.log_outcome({f"best_{summary['metric']}": summary["best_value"],
                        "test_acc": summary["test_acc"], "test_loss": summary["test_loss"]},
                       summary["best_trial_id"], summary["best_config"])
    if not record.has_tag("tune_run.best_model", MODEL_NAME):
        ship_best_model(record, MODEL_NAME, served_model(model, local_folder(summary["checkpoint"])))
    if register and not record.has_tag("tune_run.registered_model", register):
        record.register_best_model(register, MODEL_NAME)
    record.finish(record.parent_id, "FINISHED")
