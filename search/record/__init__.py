"""The record: everything MLflow.

It owns the MLflow record of a search (one parent run, one nested child run per trial, every call
through `MlflowClient`), the best model as an MLflow model with two flavours, and its model card;
and the local SQLite store, whole or absent however the process is killed (`sqlite_store`).
No other package imports mlflow.
"""

from __future__ import annotations

import os

# MLflow's own default store (mlflow.store.tracking.DEFAULT_TRACKING_URI), a file in the working
# folder; here so that the door, `ui` and the messages name it without importing mlflow.
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def resolve_tracking_uri(given: str | None) -> str:
    """The store a search is recorded in: `given`, else MLFLOW_TRACKING_URI, else the default (not
    MLflow's fallback to ./mlruns where that folder exists, which no message would name)."""
    return given or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
