"""A learning-curve surrogate read from its folder: any scenario in YAHPO Gym's ONNX layout.

A folder holds `model.onnx`, `config_space.json` (ConfigSpace's JSON), `encoding.json` (categorical
values to the integers the model takes) and `scenario.json` (the model's inputs and outputs in
order, the instance parameter, the fidelity, the metric and its mode, the time output). Every name
comes from those files: nothing here knows LCBench.

onnxruntime is imported only when a curve is first asked for (a benchmark dependency, the `bench`
extra; tune-run itself never needs it), so the space and the scenario read without it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

MIN_EPOCH_SECONDS = 1e-3  # a surrogate's cumulative time can dip; an epoch still costs something


@dataclass(frozen=True)
class Curve:
    """A configuration's whole learning curve: `values[e]` is the metric after epoch e + 1,
    `seconds[e]` what epoch e + 1 took (not cumulative)."""

    values: tuple[float, ...]
    seconds: tuple[float, ...]

    @property
    def epochs(self) -> int:
        return len(self.values)


class Surrogate:
    """The surrogate of one scenario folder; `curve(instance, config)` answers a whole curve in one
    model call and keeps it (a replay asks for the same configuration at every rung)."""

    def __init__(self, folder: Path | str):
        self.folder = Path(folder)
        self.scenario = json.loads((self.folder / "scenario.json").read_text())
        self.config_space = json.loads((self.folder / "config_space.json").read_text())
        self.encoding: dict[str, dict[str, int]] = json.loads((self.folder / "encoding.json").read_text())
        self.hyperparameters = {h["name"]: h for h in self.config_space["hyperparameters"]}
        for key in ("instance", "fidelity", "metric", "time"):
            if key not in self.scenario:
                raise ValueError(f"{self.folder}/scenario.json: no {key!r}")
        self.metric: str = self.scenario["metric"]
        self.mode: str = self.scenario.get("mode", "max")
        self._cache: dict[tuple, Curve] = {}

    @property
    def instances(self) -> list[str]:
        """The instances (tasks) the surrogate answers for, as config_space.json lists them."""
        return [str(c) for c in self.hyperparameters[self.scenario["instance"]]["choices"]]

    @property
    def max_epochs(self) -> int:
        return int(self.hyperparameters[self.scenario["fidelity"]]["upper"])

    @property
    def min_epochs(self) -> int:
        return int(self.hyperparameters[self.scenario["fidelity"]]["lower"])

    @property
    def searched(self) -> list[dict]:
        """The hyperparameters a search sets: all but the instance and the fidelity."""
        skip = (self.scenario["instance"], self.scenario["fidelity"])
        return [h for name, h in self.hyperparameters.items() if name not in skip]

    def curve(self, instance: str, config: dict[str, Any]) -> Curve:
        key = (instance, *sorted((k, config[k]) for k in self._searched_names))
        if key not in self._cache:
            self._cache[key] = self.curves(instance, [config])[0]
        return self._cache[key]

    def forget(self) -> None:
        """Drops the curves kept so far (a long benchmark asks for millions)."""
        self._cache.clear()

    @cached_property
    def _searched_names(self) -> list[str]:
        return [h["name"] for h in self.searched]

    def curves(self, instance: str, configs: list[dict[str, Any]]) -> list[Curve]:
        """The curves of `configs` on `instance`, all in one model call (not cached)."""
        epochs = np.arange(1, self.max_epochs + 1)
        rows = [dict(config, **{self.scenario["instance"]: instance, self.scenario["fidelity"]: e})
                for config in configs for e in epochs]
        out = self._predict(rows).reshape(len(configs), len(epochs), -1)  # (configs, epochs, outputs)
        outputs = self.scenario["outputs"]
        metric, time = out[..., outputs.index(self.metric)], out[..., outputs.index(self.scenario["time"])]
        if self.scenario.get("time_is_cumulative", True):
            time = np.diff(time, axis=1, prepend=0.0)
        time = np.maximum(time, MIN_EPOCH_SECONDS)
        return [Curve(tuple(map(float, m)), tuple(map(float, t))) for m, t in zip(metric, time)]

    def final_values(self, instance: str, configs: list[dict[str, Any]]) -> np.ndarray:
        """The metric of each configuration at the last epoch, in one model call: (N,)."""
        rows = [dict(c, **{self.scenario["instance"]: instance,
                           self.scenario["fidelity"]: self.max_epochs}) for c in configs]
        return self._predict(rows)[:, self.scenario["outputs"].index(self.metric)]

    def _predict(self, rows: list[dict[str, Any]]) -> np.ndarray:
        feeds = {}
        for input_name, names in self.scenario["inputs"].items():
            dtype = self._input_types[input_name]
            feeds[input_name] = np.array([[self._encode(name, row[name], dtype) for name in names]
                                          for row in rows], dtype=dtype)
        return self._session.run(None, feeds)[0]

    def _encode(self, name: str, value: Any, dtype) -> float | int:
        """A value as the model takes it: categoricals through encoding.json where it maps them."""
        if name in self.encoding:
            return self.encoding[name][str(value)]
        return value

    @cached_property
    def _session(self):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1  # replays run one process per core
        options.inter_op_num_threads = 1
        return onnxruntime.InferenceSession(str(self.folder / "model.onnx"), options,
                                            providers=["CPUExecutionProvider"])

    @cached_property
    def _input_types(self) -> dict[str, type]:
        kinds = {"tensor(int32)": np.int32, "tensor(int64)": np.int64, "tensor(float)": np.float32,
                 "tensor(double)": np.float64}
        return {i.name: kinds[i.type] for i in self._session.get_inputs()}


def ray_space(hyperparameters: list[dict]) -> dict[str, Any]:
    """ConfigSpace's JSON hyperparameters as Ray Tune domains, as a space file would write them."""
    from ray import tune

    return {h["name"]: _domain(h, tune) for h in hyperparameters}


def _domain(h: dict, tune):
    kind, log = h["type"], h.get("log", False)
    if kind == "uniform_float":
        return (tune.loguniform if log else tune.uniform)(h["lower"], h["upper"])
    if kind == "uniform_int":  # Ray's integer domains leave out their upper bound
        return (tune.lograndint if log else tune.randint)(h["lower"], h["upper"] + 1)
    if kind in ("categorical", "ordinal"):
        return tune.choice(list(h.get("choices") or h["sequence"]))
    if kind == "constant":
        return h["value"]
    raise ValueError(f"hyperparameter {h['name']!r}: type {kind!r}; expected uniform_float, "
                     "uniform_int, categorical, ordinal or constant")


def configuration_space(hyperparameters: list[dict], seed: int):
    """These hyperparameters as a ConfigSpace space (DEHB, SMAC), read by ConfigSpace's own JSON
    reader (which names a default `default_value`)."""
    from io import StringIO

    from ConfigSpace import ConfigurationSpace

    renamed = [{("default_value" if k == "default" else k): v for k, v in h.items()}
               for h in hyperparameters]
    text = json.dumps({"hyperparameters": renamed, "conditions": [], "forbiddens": [],
                       "json_format_version": 0.4})
    space = ConfigurationSpace.from_json(StringIO(text))
    space.seed(seed)
    return space
