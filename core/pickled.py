"""The pickle module a shipped model of a user's own architecture is saved with: cloudpickle's
Pickler (it writes the user's classes and functions by value, where they are registered so), the
standard Unpickler (what torch.load and MLflow's loader call; cloudpickle has none of its own)."""

from pickle import HIGHEST_PROTOCOL, Unpickler, load, loads  # noqa: F401

from cloudpickle import Pickler, dump, dumps  # noqa: F401
