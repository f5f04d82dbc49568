"""Scheduling: which trials run, and for how long.

It owns the Ray Tune `Tuner` (resources, restore), promotion ASHA (the paper's asynchronous successive
halving by promotion), the objectives of a search (one metric or a Pareto front) and the searcher
that proposes configurations (random, grid or Optuna's TPE). It alone builds Ray Tune's scheduler and
search algorithm objects.
"""
