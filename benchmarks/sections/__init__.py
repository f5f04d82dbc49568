"""Every benchmark section, in the order the driver runs them, and the results file each writes into.

A section module declares its `SECTIONS` (benchmarks/harness.py's `Section`: name, results file,
targets, FULL and QUICK sizes, run, report) and imports Ray, MLflow and search/ only inside its
functions, so that this registry, `--list` and the GPU section import with torch and core/ alone.
"""

from __future__ import annotations

from benchmarks.harness import Section
from benchmarks.sections import (
                                 cluster_data,
                                 data_memory,
                                 gpu,
                                 models,
                                 orchestration,
                                 pruning,
                                 resume_chaos,
                                 search,
                                 searches,
                                 startup,
                                 throughput,
)

SECTIONS: tuple[Section, ...] = (
    *throughput.SECTIONS,  # compute, trial, baseline
    *models.SECTIONS,
    *searches.SECTIONS,  # searches, precision
    *orchestration.SECTIONS,  # overhead, memory
    *pruning.SECTIONS,  # pruning, pareto
    *cluster_data.SECTIONS,
    *data_memory.SECTIONS,
    *resume_chaos.SECTIONS,
    *startup.SECTIONS,
    *gpu.SECTIONS,
    *search.SECTIONS,
)
BY_NAME = {s.name: s for s in SECTIONS}

# Each results file's title, and the JSON of its raw numbers beside it (names kept from before the
# driver, so that the history of each file reads on).
RESULTS_FILES: dict[str, tuple[str, str]] = {
    "RESULTS.md": ("tune-run benchmarks", "results.json"),
    "RESULTS-pruning.md": ("Channel pruning, measured", "RESULTS-pruning.json"),
    "RESULTS-cluster-data.md": ("How the data set reaches the nodes (section cluster-data)",
                                "RESULTS-cluster-data.json"),
    "RESULTS-resume-chaos.md": ("Interrupted and resumed searches (section resume-chaos)",
                                "RESULTS-resume-chaos.json"),
    "RESULTS-gpu.md": ("tune-run on one GPU", "RESULTS-gpu.json"),
    "RESULTS-startup.md": ("Start-up of a tiny search (section startup)", "RESULTS-startup.json"),
    "RESULTS-data-memory.md": ("A trial's memory against the data set's size (section data-memory)",
                               "RESULTS-data-memory.json"),
    "RESULTS-models.md": ("Each kind of model's trial against its bare train step (section models)",
                          "RESULTS-models.json"),
    "RESULTS-search.md": ("Searches replayed in virtual time on learning curves (section search)",
                          "results-search.json"),
}
