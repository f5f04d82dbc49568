"""The report: a search told from Ray's result files, which are its source of truth.

It owns the leaderboard, plots and hyperparameter importance (`leaderboard`), the end of a search
(the best configuration and its checkpoint on the test split, `results`) and the rebuilt or completed
MLflow record (`sync`). It writes to MLflow only through `search.record`, and reads Ray's files only
through `search.place`.
"""
