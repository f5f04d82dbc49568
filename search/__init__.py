"""tune-run's search: a space file in, a tracked Ray Tune search and its best model out.

The flow reads one way: `door` (space file -> validated spec) -> `scheduling` (Tuner, promotion ASHA,
searcher) -> `trainables/` (the Ray Tune function) -> `core/` (plain PyTorch). Beside it, `place`
keeps the search (storage, Ray's experiment folder), `record` is MLflow, and `report` tells the
search from Ray's files. On top, `cli` (the command line), `runner` (one search from start to the
best model), `console` (what a person watching sees) and `predict`. Below everything, `errors` (the
one error of bad input) and `redact` (secrets out of what is printed).
"""
