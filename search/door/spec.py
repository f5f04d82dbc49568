"""Space files in, a validated search spec out.

A space file is a plain Python module with two dicts: `settings` (the search: data set, model, metric,
trial budget, ASHA, search algorithm, resources) and `space` (hyperparameters: Ray Tune domains or
fixed values). An optional `quick` dict holds the overrides of `--quick` (keys of either).
Everything is checked here, once, before anything is started or written.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray.tune.search.sample import Domain

from core.augment import AUGMENTS
from core.data import DATASETS
from core.hparams import FAULT_KEY, HPARAMS, PRECISIONS, HParam, suggest
from core.sources import TORCHVISION_FORMATS
from search.door.domains import MODEL_SEARCHERS, domain_problem, is_dimension, largest_value
from search.errors import SpecError
from search.record import DEFAULT_TRACKING_URI
from trainables.metrics import METRICS

# Promotion ASHA (search/scheduling/promotion.py) by default; Ray's stopping ASHA; or no early stopping.
SCHEDULERS = ("asha", "asha_stopping", "fifo")

# Random search (which crosses grids), or one that samples every value from its model.
SEARCHERS = ("random", *MODEL_SEARCHERS)

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")

# The one table of search settings; CLI flags override these by the same names.
SETTINGS: dict[str, HParam] = {h.name: h for h in (
    HParam("name", None, "experiment name (default: the space file's name)", kind=str, optional=True),
    HParam("dataset", "cifar10", "data set: an image folder, CSV manifests, a torchvision format "
           "or scikit-learn's digits (core/sources.py)", choices=DATASETS),
    HParam("data_dir", None, "folder of the data set", kind=str, optional=True),
    HParam("train_csv", None, "dataset csv: a CSV of path,label rows (paths relative to it), "
           "relative to the space file's folder", kind=str, optional=True),
    HParam("val_csv", None, "dataset csv: the validation rows (default: a stratified share of "
           "train_csv's, val_fraction)", kind=str, optional=True),
    HParam("test_csv", None, "dataset csv: the test rows (default: a stratified share of "
           "train_csv's)", kind=str, optional=True),
    HParam("download", False, "let torchvision fetch a torchvision data set (cifar10, cifar100, "
           "mnist, fashion_mnist, svhn) into data_dir where the machine is online",
           choices=(False, True)),
    HParam("augment", None, "batched training augmentation: crop_flip (pad and random crop, "
           "flip; the default for images up to 64 px), resized_crop_flip (random-resized crop at "
           "scale 0.35..1, flip; the default above 64 px) or none", kind=str, optional=True,
           choices=AUGMENTS),
    HParam("image_size", None, "resize every image once, as the data set is decoded: shorter side "
           "to this many pixels, then a centre crop (default: the data's own size, which all images "
           "must then share)", kind=int, low=1, high=4096, optional=True),
    HParam("data_share", 0.25, "the largest share of a node's object store that the decoded data "
           "set may fill to be shipped from the driver; a bigger one is read from data_dir and "
           "decoded by each node itself", low=0.0, high=1.0, low_open=True),
    HParam("model", "resnet18", "the built-in resnet18, a torchvision classification model "
           "(mobilenet_v3_small, ...), timm/<name>, or file.py:function (core/models.py)", kind=str),
    HParam("metric", "val_acc", "metric that ranks trials", choices=METRICS),
    HParam("mode", "max", "whether the metric is maximised or minimised", choices=("max", "min")),
    HParam("objectives", None, "several metrics at once, e.g. {\"val_acc\": \"max\", "
           "\"latency_ms\": \"min\"}: the search finds their Pareto front; the first one is "
           "the metric of early stopping", kind=dict, optional=True),
    HParam("promote_by", "first", "with several objectives and scheduler asha, what a rung ranks "
           "trials by: the first objective, or pareto (Pareto rank over all objectives, so fast "
           "trials go on too)", choices=("first", "pareto")),
    HParam("max_latency_ms", None, "the best model is the most accurate on the front whose "
           "latency_ms (batch 1, one CPU thread) is within this", low=0.0, low_open=True,
           optional=True),
    HParam("num_samples", 8, "number of trials (times each grid point)", kind=int, low=1, high=100000),
    HParam("max_epochs", 10, "epochs of a trial that is never stopped early", kind=int,
           low=1, high=100000),
    HParam("scheduler", "asha", "early stopping: asha (trials pause at rungs, the best are "
           "promoted), asha_stopping (Ray's form: trials stop at rungs), or fifo (none)",
           choices=SCHEDULERS),
    HParam("grace_period", 1, "ASHA: epochs before a trial can be stopped", kind=int,
           low=1, high=100000),
    HParam("reduction_factor", 3.0, "ASHA: 1/fraction of trials kept at each rung",
           low=1.0, high=100.0, low_open=True),
    HParam("search", "random", "search algorithm: random, optuna (TPE on finished trials), or "
           "multifidelity (TPE on ASHA's rungs as they fill: search/scheduling/multifidelity.py)",
           choices=SEARCHERS),
    HParam("cpus_per_trial", 1.0, "CPUs reserved by each trial", low=0.0, high=1024.0,
           low_open=True),
    HParam("gpus_per_trial", 0.0, "GPUs per trial when the cluster has GPUs (fractions share one)",
           low=0.0, high=64.0),
    HParam("max_concurrent", 0, "most trials at once (0: as many as resources allow)", kind=int,
           low=0, high=100000),
    HParam("subset", None, "use only this many training images", kind=int, low=1, high=10**9,
           optional=True),
    HParam("val_fraction", 0.1, "share of train held out for validation", low=0.0, high=0.9,
           low_open=True),
    HParam("seed", 0, "seed of the search algorithm and the data split", kind=int,
           low=0, high=2**31 - 1),
    HParam("max_failures", 2, "retries of a crashed trial, from its last checkpoint", kind=int,
           low=0, high=1000),
    HParam("storage", "tune-results", "folder of Ray Tune's experiment folders, or "
           "s3://bucket/prefix (endpoint and credentials from the AWS_* variables)", kind=str),
    HParam("tracking_uri", None, "MLflow tracking URI (default: MLFLOW_TRACKING_URI, else "
           f"{DEFAULT_TRACKING_URI})",
           kind=str, optional=True),
    HParam("experiment", "tune-run", "MLflow experiment holding the search's parent run", kind=str),
    HParam("compile", False, "torch.compile the model on GPUs", choices=(False, True)),
    HParam("precision", "auto", "auto (bf16 where the device runs it fast, else fp32), fp32 or bf16",
           choices=PRECISIONS),
    HParam("register", None, "register the best model in MLflow's Model Registry under this name",
           kind=str, optional=True),
)}


CSV_SETTINGS = ("train_csv", "val_csv", "test_csv")


@dataclass
class SearchSpec:
    """A validated search: every setting filled in, and the Ray Tune param_space."""

    source: Path
    settings: dict[str, Any]
    space: dict[str, Any]
    quick: bool = False
    dimensions: list[str] = field(default_factory=list)  # names of the searched hyperparameters
    origin: str = ""  # the space file as the user named it (source may be the saved copy)

    def __getattr__(self, name: str) -> Any:  # spec.max_epochs reads settings["max_epochs"]
        try:
            return self.__dict__["settings"][name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def data_options(self) -> dict[str, Any]:
        """core/data.py's keyword options of this search's data set (CSV files, download)."""
        return {k: self.settings[k] for k in (*CSV_SETTINGS, "download")}

    @property
    def experiment_path(self) -> Path:
        """The experiment folder on this machine (for S3 storage, its local copy)."""
        from search.place.storage import local_root

        return local_root(self.settings["storage"]) / self.settings["name"]

    @property
    def experiment_uri(self) -> str:
        """Where Ray keeps the experiment folder: an s3:// URI, or the local folder's path."""
        from search.place.storage import experiment_uri

        return experiment_uri(self.settings["storage"], self.settings["name"])


def load_spec(path: str | Path, overrides: dict[str, Any] | None = None, quick: bool = False,
              allow_faults: bool = False, check_model: bool = True,
              origin: str | None = None) -> SearchSpec:
    """Imports a space file and validates it with CLI `overrides` (None values are ignored).

    Raises SpecError naming the file and field on any problem.
    """
    path = Path(path)
    module = _import(path)
    settings = _dict_attr(module, path, "settings", required=False)
    space = _dict_attr(module, path, "space", required=True)
    if quick:
        quick_overrides = _dict_attr(module, path, "quick", required=False)
        for key, value in quick_overrides.items():
            (settings if key in SETTINGS else space)[key] = value
    settings |= {k: v for k, v in (overrides or {}).items() if v is not None}
    return build_spec(path, settings, space, quick=quick, allow_faults=allow_faults,
                      check_model=check_model, origin=origin)


def build_spec(source: Path, settings: dict[str, Any], space: dict[str, Any], quick: bool = False,
               allow_faults: bool = False, check_model: bool = True,
               origin: str | None = None) -> SearchSpec:
    """Validates `settings` and `space` (already in Python) into a SearchSpec. `check_model` False:
    a saved search read again to report on, whose model is not built (its file may be gone).
    `origin`: the space file as the user wrote it, when `source` is its saved copy (the paths in
    the space are relative to the user's file)."""
    where = str(source)
    full = _check_settings(where, settings, default_name=source.stem)
    for setting in CSV_SETTINGS:
        if full[setting]:
            if full["dataset"] != "csv":
                raise SpecError(f"{where}: settings.{setting}: only dataset 'csv' reads CSV "
                                f"manifests (dataset is {full['dataset']!r}); set dataset: 'csv'")
            full[setting] = str(_beside(source, full[setting]))
    if full["download"] and full["dataset"] not in TORCHVISION_FORMATS:
        raise SpecError(f"{where}: settings.download: torchvision fetches only "
                        f"{', '.join(TORCHVISION_FORMATS)}; dataset {full['dataset']!r} is read "
                        "from data_dir as it is")
    own_parameters: set[str] = set()
    if not check_model:  # it passed the door when it started: its own parameters are as saved
        own_parameters = {k for k in space if k not in HPARAMS and k != FAULT_KEY}
    elif full["model"] != "resnet18":  # another kind imports torch (and its library or file)
        from search.door.models import check_model_name, own_model_parameters, resolve_model_name

        full["model"] = resolve_model_name(where, full["model"], source)
        check_model_name(where, full["model"])
        own_parameters = own_model_parameters(full["model"])
    dims = _check_space(where, space, full, allow_faults, own_parameters)
    if space.get("weights") is not None and check_model:
        from search.door.models import resolve_weights_paths

        space = dict(space, weights=resolve_weights_paths(where, space["weights"],
                                                          Path(origin or source)))
    if check_model and full["model"] != "resnet18":
        from search.door.models import check_model_options

        check_model_options(where, full["model"], space)
    return SearchSpec(source, full, dict(space), quick, dims, origin=origin or str(source))


def _beside(space_file: Path, path: str) -> Path:
    """`path` made absolute: relative to the space file's folder (a trial runs elsewhere)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else space_file.resolve().parent / p


def _import(path: Path):
    if not path.is_file():
        raise SpecError(f"{path}: no such space file")
    if path.suffix != ".py":
        raise SpecError(f"{path}: a space file is a Python module ending in .py")
    module_name = f"tune_run_space_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    writes_bytecode = sys.dont_write_bytecode
    sys.dont_write_bytecode = True  # leave no __pycache__ beside the user's file
    hard_exit = os._exit
    os._exit = _refuse_exit  # a space file must not end tune-run without a word
    try:
        spec.loader.exec_module(module)
    except (SystemExit, _SpaceFileExited) as e:
        code = e.code if isinstance(e, SystemExit) else e.args[0]
        raise SpecError(f"{path}{_user_line(e, path)}: the space file ends the program while "
                        f"being loaded (exit code {code}); a space file only defines dicts") from None
    except SyntaxError as e:
        raise SpecError(f"{path}:{e.lineno}: syntax error: {e.msg}") from None
    except Exception as e:  # the file is user code: any error it raises is bad input
        line = _user_line(e, path)
        raise SpecError(f"{path}{line}: {type(e).__name__}: {e}") from None
    finally:
        os._exit = hard_exit
        sys.dont_write_bytecode = writes_bytecode
        sys.modules.pop(module_name, None)
    return module


class _SpaceFileExited(Exception):
    """A space file called os._exit while being loaded."""


def _refuse_exit(code: int = 0) -> None:
    raise _SpaceFileExited(code)


def _user_line(e: BaseException, path: Path) -> str:
    tb, line = e.__traceback__, ""
    while tb is not None:
        if Path(tb.tb_frame.f_code.co_filename).resolve() == path.resolve():
            line = f":{tb.tb_lineno}"
        tb = tb.tb_next
    return line


def _dict_attr(module, path: Path, name: str, required: bool) -> dict[str, Any]:
    value = getattr(module, name, None)
    if value is None:
        if required:
            raise SpecError(f"{path}: no `{name}` dict; define {name} = {{...}} at module level")
        return {}
    if not isinstance(value, dict):
        raise SpecError(f"{path}: `{name}` must be a dict, got {type(value).__name__}")
    return dict(value)


def _check_settings(where: str, settings: dict[str, Any], default_name: str) -> dict[str, Any]:
    for key in settings:
        if key not in SETTINGS:
            hint = suggest(key, list(SETTINGS)) or _hparam_hint(key)
            raise SpecError(f"{where}: settings.{key}: unknown setting{hint}")
    full = {name: h.default for name, h in SETTINGS.items()} | settings
    full["name"] = full["name"] or default_name
    for name, value in full.items():
        problem = SETTINGS[name].check(value)
        if problem:
            raise SpecError(f"{where}: settings.{name}: {problem}")
    if not NAME_PATTERN.fullmatch(full["name"]):
        raise SpecError(
            f"{where}: settings.name: {full['name']!r} must be letters, digits, '.', '_' or '-' "
            "(no path), starting with a letter or digit"
        )
    if full["scheduler"] != "fifo" and full["grace_period"] > full["max_epochs"]:
        raise SpecError(
            f"{where}: settings.grace_period: {full['grace_period']} is more than max_epochs "
            f"({full['max_epochs']}); set it to at most max_epochs"
        )
    _check_objectives(where, full, settings)
    return {name: SETTINGS[name].take(value) for name, value in full.items()}


def _check_objectives(where: str, full: dict[str, Any], given: dict[str, Any]) -> None:
    """Objectives: known metrics, each max or min; the first becomes `metric` and `mode` (what
    early stopping ranks by), so a different `metric` or `mode` beside them is a contradiction."""
    objectives = full["objectives"]
    if objectives is None:
        if full["promote_by"] == "pareto":
            raise SpecError(f"{where}: settings.promote_by: 'pareto' needs several objectives; "
                            "set objectives, e.g. {\"val_acc\": \"max\", \"latency_ms\": \"min\"}")
        return
    if not objectives:
        raise SpecError(f"{where}: settings.objectives: empty; name at least one metric, e.g. "
                        "{\"val_acc\": \"max\", \"latency_ms\": \"min\"}")
    for metric, mode in objectives.items():
        if metric not in METRICS:
            raise SpecError(f"{where}: settings.objectives: {metric!r} is not a reported metric; "
                            f"use one of {', '.join(METRICS)}{suggest(metric, METRICS)}")
        if mode not in ("max", "min"):
            raise SpecError(f"{where}: settings.objectives.{metric}: {mode!r} must be 'max' or 'min'")
    first, first_mode = next(iter(objectives.items()))
    if full["promote_by"] == "pareto" and (len(objectives) < 2 or full["scheduler"] != "asha"):
        raise SpecError(f"{where}: settings.promote_by: 'pareto' ranks rungs over several "
                        "objectives of scheduler 'asha'; name two or more objectives and use "
                        "scheduler 'asha', or promote_by 'first'")
    for name, value in (("metric", first), ("mode", first_mode)):
        if name in given and given[name] != value:
            raise SpecError(f"{where}: settings.{name}: {given[name]!r} differs from the first "
                            f"objective's {value!r}; drop `{name}` (the first objective is it)")
    full["metric"], full["mode"] = first, first_mode
    full["objectives"] = dict(objectives)


def _hparam_hint(key: str) -> str:
    return f"; {key!r} is a hyperparameter: put it in `space`" if key in HPARAMS else ""


def _check_space(where: str, space: dict[str, Any], settings: dict[str, Any],
                 allow_faults: bool, own_parameters: set[str] = frozenset()) -> list[str]:
    """`own_parameters`: the keyword options a user's model function declares beyond tune-run's
    hyperparameters; the space may set or search them, and they reach that function as they are."""
    dims = []
    for key, value in space.items():
        if key == FAULT_KEY and allow_faults:
            continue
        if key in own_parameters:
            if is_dimension(value):
                dims.append(key)
            continue
        if key not in HPARAMS:
            hint = suggest(key, list(HPARAMS)) or (
                f"; {key!r} is a setting: put it in `settings`" if key in SETTINGS else "")
            raise SpecError(f"{where}: space.{key}: unknown hyperparameter{hint}")
        if is_dimension(value):
            dims.append(key)
        problem = _check_value(HPARAMS[key], value, settings)
        if problem:
            raise SpecError(f"{where}: space.{key}: {problem}")
    if not dims:
        raise SpecError(
            f"{where}: space: no search dimension; make at least one hyperparameter a Ray Tune "
            "domain, e.g. \"lr\": tune.loguniform(1e-3, 1e-1)"
        )
    return dims


def _check_value(h: HParam, value: Any, settings: dict[str, Any]) -> str | None:
    """What is wrong with a fixed value or a domain of hyperparameter `h`, or None."""
    if isinstance(value, (Domain, dict)):
        problem = domain_problem(h, value, settings["search"])
    else:
        problem = h.check(value)
    largest = largest_value(value)
    if problem is None and h.name == "warmup_epochs" and largest is not None \
            and largest >= settings["max_epochs"]:
        return f"{largest:g} must be less than settings.max_epochs ({settings['max_epochs']})"
    return problem


