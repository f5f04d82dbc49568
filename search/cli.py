"""`tune-run`: the command line.

    tune-run SPACE [flags]            run the search of a space file
    tune-run SPACE --dry-run          print the resolved search and sample configurations
    tune-run SPACE --resume           continue the search of SPACE where it stopped
    tune-run --resume NAME            continue a search by its experiment name
    tune-run sync NAME                rebuild or complete a search's MLflow record from Ray's files
    tune-run report NAME              print a search's leaderboard; log its report to the parent run
    tune-run ls                       every search of the storage folder, with its state
    tune-run stop NAME                end a running search cleanly, from any terminal (resumable)
    tune-run predict NAME FILES...    the top 3 classes of image files, by a search's best model
    tune-run ui                       the MLflow UI on 127.0.0.1:5000

Bad input exits with code 2 and one line on stderr, before anything is started or written.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from search.door.domains import describe as describe_domain
from search.door.domains import domain_choices, is_grid
from search.door.spec import SETTINGS, SearchSpec, load_spec
from search.errors import SpecError
from search.record import DEFAULT_TRACKING_URI, resolve_tracking_uri
from search.redact import first_line, redact, redact_text

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130

# Flags that override a space file's settings, by setting name.
OVERRIDE_FLAGS = ("name", "num_samples", "max_epochs", "search", "gpus_per_trial", "cpus_per_trial",
                  "max_concurrent", "data_dir", "storage", "tracking_uri", "seed", "register",
                  "precision", "scheduler", "max_latency_ms")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2."""

    def error(self, message: str) -> None:
        print(f"tune-run: error: {message} (see tune-run --help)", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


def _setting_type(name: str):
    kind = SETTINGS[name].kind
    if SETTINGS[name].choices is not None or kind is str:
        return str
    return kind


def parser() -> OneLineParser:
    p = OneLineParser(prog="tune-run", description="Hyperparameter search of image classifiers "
                      "on Ray Tune with ASHA, tracked in MLflow.")
    p.add_argument("space", nargs="?", help="search-space file, e.g. spaces/resnet18.py")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="NAME",
                   help="continue an interrupted search (of SPACE, or by experiment NAME)")
    p.add_argument("--no-retry-errored", action="store_true",
                   help="on --resume, leave trials that had errored as they are")
    p.add_argument("--dry-run", action="store_true",
                   help="print the resolved search and a few sampled configurations; start nothing")
    p.add_argument("--quick", action="store_true",
                   help="a CPU-sized real search: data subset, narrow model, few trials and epochs")
    p.add_argument("--verbose", action="store_true",
                   help="also show Ray's and MLflow's own output (tables, progress, warnings)")
    p.add_argument("--address", default=os.environ.get("RAY_ADDRESS"),
                   help="join this Ray cluster (default: RAY_ADDRESS, else start a local Ray)")
    for name in OVERRIDE_FLAGS:
        h = SETTINGS[name]
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=_setting_type(name),
                       default=None, help=h.help)
    return p


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The flags given, each checked against the settings table and named as a flag if wrong."""
    given = {name: getattr(args, name) for name in OVERRIDE_FLAGS if getattr(args, name) is not None}
    if given.get("tracking_uri") is None and os.environ.get("MLFLOW_TRACKING_URI"):
        given["tracking_uri"] = os.environ["MLFLOW_TRACKING_URI"]
    for name, value in given.items():
        problem = SETTINGS[name].check(value)
        if problem:
            raise SpecError(f"--{name.replace('_', '-')}: {problem}")
    return given


def sync_parser() -> OneLineParser:
    p = OneLineParser(prog="tune-run sync", description="Rebuild or complete the MLflow record of "
                      "a search from its Ray Tune experiment folder (idempotent).")
    return _saved_search_arguments(p)


def report_parser() -> OneLineParser:
    p = OneLineParser(prog="tune-run report", description="Print a search's leaderboard and "
                      "rebuild its report (leaderboard, plots, hyperparameter importance) from its "
                      "Ray Tune experiment folder, logged to its parent run under report/.")
    p.add_argument("--out", default=None,
                   help="folder of the report's files (default: the experiment folder's report/)")
    return _saved_search_arguments(p)


def _saved_search_arguments(p: OneLineParser) -> OneLineParser:
    p.add_argument("name", help="the search's experiment name")
    p.add_argument("--storage", default=None, help=SETTINGS["storage"].help)
    p.add_argument("--tracking-uri", default=None, help=SETTINGS["tracking_uri"].help)
    return p


def ls_parser() -> OneLineParser:
    p = OneLineParser(prog="tune-run ls", description="Every search of a storage folder: its state "
                      "(running, unfinished, finished), trials, epochs, best metric, last activity, "
                      "and how to resume the unfinished ones.")
    p.add_argument("--storage", default=None, help=SETTINGS["storage"].help)
    return p


def stop_parser() -> OneLineParser:
    p = OneLineParser(prog="tune-run stop", description="End a running search from another terminal "
                      "or machine, cleanly: its driver saves every trial's state and ends them where "
                      "they are; `tune-run --resume NAME` continues it.")
    p.add_argument("name", help="the search's experiment name")
    p.add_argument("--storage", default=None, help=SETTINGS["storage"].help)
    p.add_argument("--wait", type=float, default=300.0, metavar="SECONDS",
                   help="how long to wait for the driver to end (default: 300; 0: do not wait)")
    return p


def predict_parser() -> OneLineParser:
    p = OneLineParser(prog="tune-run predict", description="Print the top 3 classes, with their "
                      "probabilities, of each image file (any size), by a search's best model as "
                      "logged to MLflow.")
    _saved_search_arguments(p)
    p.add_argument("files", nargs="+", metavar="FILE", help="image files (JPEG, PNG, ...)")
    return p


def ui_parser() -> OneLineParser:
    p = OneLineParser(prog="tune-run ui", description="Run the MLflow UI on a tracking store.")
    p.add_argument("--tracking-uri", default=None, help="the store to show (default: "
                   f"MLFLOW_TRACKING_URI, else {DEFAULT_TRACKING_URI})")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=5000, help="port (default: 5000)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    subcommands = {"sync": (sync_parser, _sync), "report": (report_parser, _report),
                   "ui": (ui_parser, _ui), "ls": (ls_parser, _ls),
                   "predict": (predict_parser, _predict), "stop": (stop_parser, _stop)}
    command = argv[0] if argv and argv[0] in subcommands else None
    make_parser, handle = subcommands.get(command, (parser, _run))
    args = make_parser().parse_args(argv[1:] if command else argv)
    try:
        return handle(args)
    except SpecError as e:
        print(f"tune-run: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("tune-run: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # the one guard: a bug or an outside failure, never a traceback dump
        log = _write_traceback(argv)
        print(f"tune-run: failed: {first_line(e)} (full traceback: {log})", file=sys.stderr)
        return EXIT_FAILED


def _write_traceback(argv: list[str]) -> Path:
    """Writes the current exception's traceback (secrets redacted) to a log file; returns it."""
    import tempfile
    import time
    import traceback

    folder = Path(tempfile.gettempdir()) / "tune-run-logs"
    folder.mkdir(exist_ok=True)
    log = folder / f"error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    log.write_text(redact_text(f"tune-run {' '.join(argv)}\n\n{traceback.format_exc()}"))
    return log


def _run(args: argparse.Namespace) -> int:
    from core.data import DataError

    overrides = _overrides(args)
    spec = _spec(args, overrides)
    if args.dry_run:
        from search.door.preflight import run_checks

        checks = run_checks(spec, args.address)
        print(describe(spec))
        print("  checks passed (nothing was started or written):")
        for check in checks:
            print(f"    {check.name}: {check.detail}")
        return 0
    from search.runner import experiment_state, progress_text, run_search

    state = experiment_state(spec)
    resume = bool(args.resume)
    if resume and state == "finished":
        print(f"tune-run: search {spec.name!r} has already finished "
              f"({spec.experiment_path}); nothing to resume")
        return 0
    if resume and state == "new":
        raise SpecError(f"--resume: no search named {spec.name!r} in {spec.experiment_path.parent}")
    if not resume and state != "new":
        source = args.space or f"--resume {spec.name}"
        raise SpecError(
            f"search {spec.name!r} already exists at {spec.experiment_path} ({state}: "
            f"{progress_text(spec)}); resume it with `tune-run {source} --resume` or start a new "
            f"one with `tune-run {source} --name {spec.name}-2`"
        )
    try:
        outcome = run_search(spec, resume=resume and state == "unfinished", address=args.address,
                             retry_errored=not args.no_retry_errored, verbose=args.verbose)
    except DataError as e:
        raise SpecError(str(e)) from None
    finally:
        _shutdown_ray()
    if not outcome.finished:
        by = f", by `tune-run stop` from {outcome.stopped_by.get('by', '?')}" if outcome.stopped_by else ""
        print(f"Search {spec.name!r} stopped before the end ({outcome.left}{by}); resume it with:",
              file=sys.stderr)
        print(outcome.resume_command)
        return EXIT_INTERRUPTED
    _print_results(spec, outcome.results)
    return 0


def _sync(args: argparse.Namespace) -> int:
    from search.runner import sync_search

    spec = _saved_spec(args)
    trials = sync_search(spec)
    print(f"synced {trials} trials of {spec.name!r} to MLflow experiment {spec.experiment!r}")
    return 0


def _saved_spec(args: argparse.Namespace) -> SearchSpec:
    from search.runner import load_saved_spec

    overrides = {k: v for k, v in (("storage", args.storage),
                                   ("tracking_uri", args.tracking_uri or
                                    os.environ.get("MLFLOW_TRACKING_URI"))) if v}
    return load_saved_spec(_checked_name(args.name, "name"),
                           overrides.get("storage", SETTINGS["storage"].default), overrides,
                           to_train=False)


def _report(args: argparse.Namespace) -> int:
    from search.record.tracking import SearchRecord
    from search.report.leaderboard import REPORT_DIR, leaderboard_markdown, log_report

    spec = _saved_spec(args)
    out = Path(args.out) if args.out else spec.experiment_path / REPORT_DIR
    record = SearchRecord(spec.tracking_uri, spec.experiment, spec.experiment_uri, spec.name)
    report = log_report(spec, record, out)
    print(f"Trials of {spec.name!r} by {spec.metric} ({spec.mode}):")
    print(leaderboard_markdown(report.rows))
    if report.pareto:
        from search.scheduling.pareto import front_table, spec_objectives

        print("\nPareto front (at each trial's last epoch; trials stopped early are not eligible):")
        print(leaderboard_markdown(front_table(report.pareto, spec_objectives(spec))))
    print(f"\n{len(report.files)} report files in {out}, logged to MLflow run "
          f"{record.parent_id} (experiment {spec.experiment!r}) under {REPORT_DIR}/")
    return 0


def _ls(args: argparse.Namespace) -> int:
    from search.place.experiment_folder import ago, resume_command, search_states
    from search.place.storage import pull_all, tune_storage_path
    from search.report.leaderboard import leaderboard_markdown

    location = args.storage or SETTINGS["storage"].default
    storage = tune_storage_path(location)  # the folder, or the s3:// URI
    found = search_states(pull_all(location))  # S3: read from a fresh local copy
    if not found:
        print(f"no searches in {storage}")
        return 0
    print(f"Searches in {storage}, the most recently active first:")
    print(leaderboard_markdown([{
        "search": s.name, "state": s.state, "trials done": f"{s.trials_done}/{s.trials_total}",
        "epochs": s.epochs, "best": f"{s.metric} {s.best:.4g}" if s.best is not None else "",
        "last activity": ago(s.last_activity),
    } for s in found]))
    unfinished = [s for s in found if s.state == "unfinished"]
    if unfinished:
        print("\nResume:")
    for s in unfinished:
        print(f"  {resume_command(s.name, storage)}")
    return 0


def _stop(args: argparse.Namespace) -> int:
    from search.place.experiment_folder import (
        DRIVER,
        STOP_REQUEST,
        request_stop,
        resume_command,
        search_state,
    )
    from search.place.storage import fetch, pull, push, tune_storage_path

    name = _checked_name(args.name, "name")
    location = args.storage or SETTINGS["storage"].default
    storage = tune_storage_path(location)
    state = search_state(pull(location, name))
    if state is None:
        raise SpecError(f"name: no search named {name!r} in {storage} (`tune-run ls --storage "
                        f"{storage}` lists them)")
    if state.state != "running":
        raise SpecError(f"name: search {name!r} is not running ({state.state}); nothing to stop"
                        + (f"; resume it with `{resume_command(name, storage)}`"
                           if state.state == "unfinished" else ""))
    request_stop(state.path)
    push(location, name, STOP_REQUEST)
    print(f"asked search {name!r} to stop", flush=True)
    deadline = time.time() + args.wait
    while args.wait and time.time() < deadline:
        time.sleep(1.0)
        if not fetch(location, name, DRIVER) or search_state(state.path).state != "running":
            print(f"search {name!r} stopped; resume it with `{resume_command(name, storage)}`")
            return 0
    if args.wait:
        print(f"tune-run: search {name!r} was asked to stop but its driver still runs after "
              f"{args.wait:g} s (it ends the trials at their next report)", file=sys.stderr)
        return EXIT_FAILED
    return 0


def _predict(args: argparse.Namespace) -> int:
    from search.predict import answer_line, predict_files

    for path, ranked in predict_files(_saved_spec(args), args.files):
        print(answer_line(path, ranked))
    return 0


def ui_command(tracking_uri: str, host: str, port: int) -> list[str]:
    """The `mlflow ui` command line (this Python's mlflow)."""
    if not 0 < port < 65536:
        raise SpecError(f"--port: {port} is not a port; use 1 to 65535")
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri,
            "--host", host, "--port", str(port)]


def _ui(args: argparse.Namespace) -> int:
    import subprocess

    uri = resolve_tracking_uri(args.tracking_uri)
    if uri.startswith(("http://", "https://")):
        print(f"{redact(uri)} is a tracking server: it serves the MLflow UI itself; open it there")
        return 0
    command = ui_command(uri, args.host, args.port)
    host = f"[{args.host}]" if ":" in args.host else args.host  # an IPv6 address
    print(f"MLflow UI of {redact(uri)} at http://{host}:{args.port} (Ctrl-C stops it)", flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"tune-run: the UI has no login; anyone who can reach {args.host} can see it",
              file=sys.stderr)
    return subprocess.run(command, check=False).returncode


def _checked_name(name: str, flag: str) -> str:
    from search.door.spec import NAME_PATTERN

    if not NAME_PATTERN.fullmatch(name):
        raise SpecError(f"{flag}: {name!r} is not an experiment name (letters, digits, . _ -)")
    return name


def _spec(args: argparse.Namespace, overrides: dict[str, Any]) -> SearchSpec:
    if isinstance(args.resume, str) and not args.space:
        from search.runner import load_saved_spec

        name = _checked_name(args.resume, "--resume")
        return load_saved_spec(name, overrides.get("storage", SETTINGS["storage"].default),
                               overrides)
    if not args.space:
        raise SpecError("no space file given; usage: tune-run SPACE [flags], e.g. "
                        "tune-run spaces/digits.py")
    if args.quick and "name" not in overrides:
        overrides["name"] = f"{Path(args.space).stem}-quick"
    test_faults = os.environ.get("TUNE_RUN_TEST_FAULTS") == "1"
    return load_spec(args.space, overrides, quick=args.quick, allow_faults=test_faults)


def _shutdown_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def _print_results(spec: SearchSpec, results) -> None:
    from search.report.leaderboard import leaderboard_markdown

    print()
    print(f"Best trials of {spec.name!r} by {spec.metric} ({spec.mode}):")
    print(results.table())
    print()
    if results.front:
        print(f"Pareto front ({len(results.front)} trials, at their last epoch; trials stopped "
              "early are not eligible):")
        print(leaderboard_markdown(results.front))
        print()
    print(f"Best configuration ({results.best_trial_id}"
          + (f": {results.why}" if results.front else "") + f"): {results.best_config}")
    print(f"{spec.metric} = {results.best_value:.4f}; on the test split: accuracy "
          f"{results.test_acc:.4f}, loss {results.test_loss:.4f}")
    print(f"Review it: tune-run ui --tracking-uri {redact(resolve_tracking_uri(spec.tracking_uri))}")


def describe(spec: SearchSpec, samples: int = 3) -> str:
    """The resolved search as text: dimensions, fixed values, scheduler, search, resources, budget."""

    s = spec.settings
    lines = [f"search {s['name']!r} from {spec.source}" + (" (--quick)" if spec.quick else "")]
    lines.append(f"  data: {s['dataset']}" + (f" from {s['data_dir']}" if s["data_dir"] else "")
                 + (f", {s['subset']} training images" if s["subset"] else "")
                 + (f", resized to {s['image_size']} px" if s["image_size"] else "")
                 + f", {s['val_fraction']:.0%} held out for validation")
    lines.append(f"  model: {s['model']}")
    lines.append("  dimensions:")
    for key in spec.dimensions:
        lines.append(f"    {key}: {describe_domain(spec.space[key])}")
    fixed = {k: v for k, v in spec.space.items() if k not in spec.dimensions}
    if fixed:
        lines.append("  fixed: " + ", ".join(f"{k}={v!r}" for k, v in fixed.items()))
    if s["scheduler"] != "fifo":
        form = ("trials pause at each rung; the top 1/reduction_factor are promoted"
                if s["scheduler"] == "asha" else "Ray's stopping form")
        lines.append(f"  scheduler: ASHA on epochs ({form}), grace period {s['grace_period']}, "
                     f"reduction factor {s['reduction_factor']:g}, max {s['max_epochs']} epochs")
    else:
        lines.append(f"  scheduler: FIFO (no early stopping), {s['max_epochs']} epochs")
    lines.append(f"  search algorithm: {s['search']} (seed {s['seed']})")
    if s["objectives"] and len(s["objectives"]) > 1:
        names = ", ".join(f"{m} ({mode})" for m, mode in s["objectives"].items())
        ranks = "Pareto rank" if s["promote_by"] == "pareto" else s["metric"]
        lines.append(f"  objectives: {names}: the Pareto front of trials that run all epochs; "
                     f"early stopping ranks by {ranks}")
    else:
        lines.append(f"  metric: {s['metric']} ({s['mode']})")
    if s["max_latency_ms"] is not None:
        lines.append(f"  best model: the most {s['metric']} on the front within latency_ms "
                     f"{s['max_latency_ms']:g}")
    lines.append(f"  precision: {s['precision']}" + (" (bf16 autocast where the device runs it fast, "
                 "else fp32), channels-last" if s["precision"] == "auto" else ", channels-last"))
    lines.append(f"  resources per trial: {s['cpus_per_trial']:g} CPU, {s['gpus_per_trial']:g} GPU "
                 "(GPUs only where the cluster has them)"
                 + (f", at most {s['max_concurrent']} at once" if s["max_concurrent"] else ""))
    lines.append(f"  trial budget: {s['num_samples']} trials x up to {s['max_epochs']} epochs")
    lines.append(f"  results: {spec.experiment_path}; MLflow experiment {s['experiment']!r} at "
                 f"{redact(s['tracking_uri']) or f'the MLflow default ({DEFAULT_TRACKING_URI})'}")
    lines.append("  sampled configurations:")
    for i in range(samples):
        config = {k: _sample(spec.space[k], i) for k in spec.dimensions}
        lines.append(f"    {config}")
    return "\n".join(lines)


def _sample(value: Any, i: int) -> Any:
    import numpy as np

    if is_grid(value):
        grid = domain_choices(value)
        return grid[i % len(grid)]
    sampled = value.sample(random_state=np.random.default_rng(i))
    return sampled.item() if hasattr(sampled, "item") else sampled


if __name__ == "__main__":
    sys.exit(main())
