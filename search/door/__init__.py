"""The door: everything a search is checked against before anything starts or is written.

It owns the space file (loaded as a Python module, its `settings`, `space` and `quick`), the Ray
Tune domains in it (each checked against its hyperparameter's range), the validated `SearchSpec` that
the rest of the search is built from, and the pre-start checks of the outside systems (tracking URI,
storage, data folder, cluster address). A refusal is a `search.errors.SpecError`: one line, exit
code 2, nothing created. It touches no outside system for good, only to probe it.
"""
