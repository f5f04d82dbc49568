"""The record: everything MLflow.

It owns the MLflow record of a search (one parent run, one nested child run per trial, every call
through `MlflowClient`), the best model as an MLflow model with two flavours, and its model card.
No other package imports mlflow.
"""
