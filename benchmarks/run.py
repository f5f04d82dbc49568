"""tune-run's benchmarks in one command: any subset of the sections, side by side on this machine.

    .venv/bin/python -m benchmarks.run --list
    .venv/bin/python -m benchmarks.run --data-dir /work/shared/datasets/cifar10 [--sections a,b] [--quick]

Each section (benchmarks/sections/) writes into its results file here: RESULTS.md (the CPU suite),
RESULTS-pruning.md, RESULTS-cluster-data.md, RESULTS-resume-chaos.md, RESULTS-gpu.md,
RESULTS-search.md; beside each,
its raw numbers as JSON. Every results file has one header, one table of the targets of its sections
(each met or not) and a part per section, rendered by benchmarks/harness.py. Without --sections the
default sections run (`--list` marks them). --quick shrinks every section to seconds to check that
it works (its numbers mean nothing) and writes RESULTS-quick.md etc. instead. Run it on a quiet
machine: the sections time CPU work and another busy process skews every number.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from benchmarks.harness import HERE, Context, Report, Section, Skipped, render, run_meta
from benchmarks.sections import BY_NAME, RESULTS_FILES, SECTIONS

PROG = "python -m benchmarks.run"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("--list", action="store_true", help="list the sections and their targets; run none")
    p.add_argument("--sections", help="comma-separated sections to run (default: those --list marks "
                   "as default)")
    p.add_argument("--quick", "--smoke", action="store_true", dest="quick",
                   help="tiny sizes, seconds per section: checks that it works, measures nothing")
    p.add_argument("--data-dir", type=Path,
                   help="CIFAR-10 as train/<class>/*.jpg and test/<class>/*.jpg (sections that need it)")
    p.add_argument("--out", type=Path, default=HERE, help="folder of the results files (default: "
                   "benchmarks/)")
    p.add_argument("--merge", action="store_true", help="keep, from each results file's JSON, the "
                   "sections not run this time")
    p.add_argument("--render", type=Path, metavar="JSON", help="measure nothing: write the results "
                   "file beside an earlier run's JSON again (after a change to a section's report)")
    p.add_argument("--budget-s", type=float, help="section gpu: total seconds to size its parts to "
                   "(default 420; 60 with --quick)")
    p.add_argument("--base-commit", help="section startup: the commit to compare this checkout with "
                   "(default: the code before round 3's start-up work)")
    p.add_argument("--allow-cpu", action="store_true", help="section gpu: run on the CPU when there "
                   "is no GPU")
    p.add_argument("--surrogate", type=Path, help="section search: a surrogate's folder (model.onnx, "
                   "config_space.json, encoding.json, scenario.json; default the shared LCBench)")
    p.add_argument("--tasks", help="section search: comma-separated instances (default: all)")
    p.add_argument("--seeds", type=int, help="section search: seeds per task (default 10)")
    p.add_argument("--first-seed", type=int, help="section search: the first seed (default 0)")
    p.add_argument("--workers", help="section search: comma-separated numbers of workers "
                   "(default 1,4)")
    return p


def list_sections() -> str:
    lines = []
    for results, (title, _) in RESULTS_FILES.items():
        lines.append(f"{results} ({title}):")
        for s in (s for s in SECTIONS if s.results == results):
            flags = ", ".join([*(["default"] if s.default else []), *(f"needs --{n.replace('_', '-')}"
                                                                      for n in s.needs)])
            lines.append(f"  {s.name:<14} {s.about}" + (f" [{flags}]" if flags else ""))
            lines += [f"  {'':<14}   target: {t.what}" for t in s.targets]
    return "\n".join(lines)


def output_names(results: str, quick: bool) -> tuple[str, str]:
    """(markdown, JSON) file names of `results`; a quick run's have -quick before the suffix."""
    md, js = results, RESULTS_FILES[results][1]
    if quick:
        md, js = (f"{Path(n).stem}-quick{Path(n).suffix}" for n in (md, js))
    return md, js


def report_of(section: Section, raw: dict) -> Report:
    """The section's report, or one saying why it could not be written (the others still are)."""
    try:
        return section.report(raw)
    except Exception as e:
        traceback.print_exc()
        return Report(section.name, [f"The report of `{section.name}` failed: "
                                     f"{type(e).__name__}: {e}"])


def render_file(results: str, raw: dict) -> str:
    sections = [s for s in SECTIONS if s.results == results and s.name in raw]
    return render(RESULTS_FILES[results][0], raw, [report_of(s, raw) for s in sections])


def _plain(sizes):
    return dataclasses.asdict(sizes) if dataclasses.is_dataclass(sizes) else sizes


def run_file(results: str, sections: list[Section], args, argv: list[str]) -> tuple[dict | None, list]:
    """Runs `sections` (all of one results file) in order; returns their raw numbers with the run's
    metadata (None when every one was skipped), and the sections that failed."""
    raw = run_meta(["-m", "benchmarks.run", *argv], args.quick) | {"sizes": {}, "sections": []}
    failed, start = [], time.perf_counter()
    options = {"budget_s": args.budget_s, "allow_cpu": args.allow_cpu, "base_commit": args.base_commit,
               "surrogate": args.surrogate, "tasks": args.tasks, "seeds": args.seeds,
               "first_seed": args.first_seed, "workers": args.workers, "out": args.out}
    for section in sections:
        sizes = section.quick if args.quick else section.full
        work = Path(tempfile.mkdtemp(prefix=f"tune-run-bench-{section.name}-"))
        print(f"=== {section.name}: {section.about}", flush=True)
        ctx = Context(args.quick, sizes, args.data_dir, work, raw, options)
        began = time.perf_counter()
        try:
            raw[section.name] = section.run(ctx)
        except Skipped as e:
            print(f"=== {section.name}: skipped: {e}", flush=True)
            continue
        except Exception:
            traceback.print_exc()
            failed.append(section.name)
            print(f"=== {section.name}: FAILED (see the traceback above)", flush=True)
            continue
        finally:
            shutil.rmtree(work, ignore_errors=True)
        raw["sizes"][section.name] = _plain(sizes)
        raw["sections"].append(section.name)
        print(f"=== {section.name}: done in {time.perf_counter() - began:.0f} s\n"
              f"{json.dumps(raw[section.name], default=str)[:2000]}\n", flush=True)
    if not raw["sections"]:
        return None, failed
    raw["total_seconds"] = time.perf_counter() - start
    return raw, failed


def merge_earlier(raw: dict, path: Path) -> dict:
    """`raw` with the sections of the earlier JSON at `path` that this run did not run."""
    if not path.exists():
        return raw
    earlier = json.loads(path.read_text())
    kept = {}
    for name in earlier.get("sections", []):
        if name not in raw and name in BY_NAME:
            raw[name] = earlier[name]
            raw["sizes"][name] = earlier.get("sizes", {}).get(name)
            kept[name] = earlier.get("kept", {}).get(name, earlier["date"])
    raw["kept"] = kept
    raw["sections"] = [s.name for s in SECTIONS if s.name in raw]
    return raw


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = parser()
    args = p.parse_args(argv)
    if args.list:
        print(list_sections())
        return 0
    if args.render:
        raw = json.loads(args.render.read_text())
        results = next((md for md, (_, js) in RESULTS_FILES.items()
                        if args.render.name in (js, output_names(md, True)[1])), None)
        if results is None:
            p.error(f"--render: {args.render.name} is none of the results files' JSON "
                    f"({', '.join(js for _, js in RESULTS_FILES.values())})")
        md = output_names(results, raw.get("quick") or raw.get("smoke"))[0]
        markdown = render_file(results, raw)
        (args.render.parent / md).write_text(markdown)
        print(markdown)
        return 0

    wanted = args.sections.split(",") if args.sections else [s.name for s in SECTIONS if s.default]
    unknown = [name for name in wanted if name not in BY_NAME]
    if unknown:
        p.error(f"--sections: unknown {', '.join(unknown)}; expected some of {', '.join(BY_NAME)}")
    selected = [s for s in SECTIONS if s.name in wanted]
    if any("data_dir" in s.needs for s in selected):
        needing = ", ".join(s.name for s in selected if "data_dir" in s.needs)
        if args.data_dir is None:
            p.error(f"--data-dir is required by {needing}")
        if not (args.data_dir / "train").is_dir():
            p.error(f"--data-dir: {args.data_dir} has no train/ folder")
    if args.data_dir is not None:
        args.data_dir = args.data_dir.resolve()

    all_failed = []
    args.out.mkdir(parents=True, exist_ok=True)
    for results in RESULTS_FILES:
        sections = [s for s in selected if s.results == results]
        if not sections:
            continue
        raw, failed = run_file(results, sections, args, argv)
        all_failed += failed
        if raw is None:
            continue
        md, js = output_names(results, args.quick)
        if args.merge:
            raw = merge_earlier(raw, args.out / js)
        (args.out / js).write_text(json.dumps(raw, indent=2, default=str) + "\n")
        markdown = render_file(results, raw)
        (args.out / md).write_text(markdown)
        print(markdown)
        print(f"wrote {args.out / md} and {js}", flush=True)
    if all_failed:
        print(f"failed: {', '.join(all_failed)}", file=sys.stderr)
    return 1 if all_failed else 0


if __name__ == "__main__":
    sys.exit(main())
