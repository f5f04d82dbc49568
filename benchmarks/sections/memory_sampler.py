"""Memory of a whole local Ray search (section `memory`): the driver and every process it started,
sampled in a thread.

RSS counts a shared page once in every process that maps it, so the sum of RSS counts the object
store's copy of the data set once per trial that reads it; PSS divides each shared page among the
processes that map it, so the sum of PSS is the physical memory of the search. Both are reported.
"""

from __future__ import annotations

import os
import statistics
import threading
import time

# Ray puts its vendored psutil on sys.path; psutil is no dependency of tune-run's own.
import ray  # noqa: F401

# isort: split
import psutil

MB = 1024 * 1024


def _kind(process: psutil.Process, driver_pid: int) -> str:
    if process.pid == driver_pid:
        return "driver"
    command = " ".join(process.cmdline())  # Ray workers set their title with setproctitle
    if command.startswith("ray::ImplicitFunc"):
        return "trial_workers"  # Tune runs a function trainable as an ImplicitFunc actor
    if command.startswith("ray::IDLE") or "ray/_private/workers/" in command:  # or starting up
        return "idle_workers"
    return "ray_system"  # gcs_server, raylet, monitors, dashboard and runtime-env agents


def object_store_used(driver: psutil.Process | None = None) -> int | None:
    """Bytes of memory the local object store occupies: the blocks allocated in its /dev/shm file.

    The raylet holds the store's (deleted) plasma file open; tmpfs allocates a block when a page
    is first written, so this is the store's high-water mark. None when no store file is found.
    """
    used = None
    for p in (driver or psutil.Process()).children(recursive=True):
        try:
            if "raylet" not in " ".join(p.cmdline()[:1]):
                continue
            for fd in os.listdir(f"/proc/{p.pid}/fd"):
                path = f"/proc/{p.pid}/fd/{fd}"
                if "plasma" in os.readlink(path):
                    used = (used or 0) + os.stat(path).st_blocks * 512
        except (psutil.Error, OSError):
            continue
    return used


def store_pages_mapped(pid: int) -> int:
    """Bytes of the object store's file that process `pid` has in memory: data it reads in place."""
    total, in_store = 0, False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            if line[0] in "0123456789abcdef" and "-" in line.split(" ", 1)[0]:  # a mapping's header
                in_store = "plasma" in line
            elif in_store and line.startswith("Rss:"):
                total += int(line.split()[1]) * 1024  # kB
    return total


class MemorySampler:
    """Samples the memory of this process and its descendants in a thread.

    Every `interval` s: each process's RSS (cheap), for the peak of the RSS sum. Every
    `full_interval` s: each process's PSS and USS (a kernel walk of its page tables, ~1-20 ms a
    process, so less often), each trial worker's pages of the object store, and the store's size.
    The sampler's own CPU time is kept, since it competes with the trials for the cores.
    """

    def __init__(self, interval: float = 0.2, full_interval: float = 2.0):
        self.interval, self.full_interval = interval, full_interval
        self.peak_rss = self.peak_pss = 0
        self.rss_at_peak: dict[str, int] = {}
        self.pss_at_peak: dict[str, int] = {}
        self.trial_workers_at_peak = 0
        # trial worker pid -> its peak rss, pss, uss and store pages mapped
        self.worker_peaks: dict[int, dict[str, int]] = {}
        self.worker_uss: dict[int, list[int]] = {}  # every USS sample of each trial worker
        self.peak_store: int | None = None
        self.samples = self.full_samples = 0
        self._kinds: dict[int, str] = {}  # pid -> kind, once it can no longer change
        self.cpu_seconds = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _processes(self) -> list[tuple[psutil.Process, str]]:
        driver = psutil.Process()
        found = []
        for p in [driver, *driver.children(recursive=True)]:
            kind = self._kinds.get(p.pid)
            if kind is None:
                try:
                    kind = _kind(p, driver.pid)
                except psutil.Error:
                    continue  # ended between listing and reading
                if kind in ("driver", "trial_workers"):  # others may yet become trials
                    self._kinds[p.pid] = kind
            found.append((p, kind))
        return found

    def sample(self) -> None:
        rss: dict[str, int] = {}
        for p, kind in self._processes():
            try:
                rss[kind] = rss.get(kind, 0) + p.memory_info().rss
            except psutil.Error:
                continue
        self.samples += 1
        if sum(rss.values()) > self.peak_rss:
            self.peak_rss, self.rss_at_peak = sum(rss.values()), rss

    def full_sample(self) -> None:
        pss: dict[str, int] = {}
        trial_workers = 0
        for p, kind in self._processes():
            try:
                info = p.memory_full_info()  # reads /proc/PID/smaps_rollup
                mapped = store_pages_mapped(p.pid) if kind == "trial_workers" else 0
            except (psutil.Error, OSError):
                continue
            pss[kind] = pss.get(kind, 0) + info.pss
            if kind == "trial_workers":
                trial_workers += 1
                peaks = self.worker_peaks.setdefault(p.pid, dict.fromkeys(
                    ("rss", "pss", "uss", "store_mapped"), 0))
                for key, value in (("rss", info.rss), ("pss", info.pss), ("uss", info.uss),
                                   ("store_mapped", mapped)):
                    peaks[key] = max(peaks[key], value)
                self.worker_uss.setdefault(p.pid, []).append(info.uss)
        self.full_samples += 1
        if sum(pss.values()) > self.peak_pss:
            self.peak_pss, self.pss_at_peak = sum(pss.values()), pss
            self.trial_workers_at_peak = trial_workers
        used = object_store_used()
        if used is not None:
            self.peak_store = max(self.peak_store or 0, used)

    def _run(self) -> None:
        start_cpu, next_full = time.thread_time(), 0.0
        while True:
            self.sample()
            if time.monotonic() >= next_full:
                self.full_sample()
                next_full = time.monotonic() + self.full_interval
            self.cpu_seconds = time.thread_time() - start_cpu
            if self._stop.wait(self.interval):
                return

    def summary(self) -> dict:
        """Peaks in MB, with what each kind of process held at the moment of each peak."""
        return {
            "peak_rss_mb": self.peak_rss / MB,
            "peak_pss_mb": self.peak_pss / MB,
            "rss_at_peak_mb": {k: v / MB for k, v in sorted(self.rss_at_peak.items())},
            "pss_at_peak_mb": {k: v / MB for k, v in sorted(self.pss_at_peak.items())},
            "trial_workers_at_peak": self.trial_workers_at_peak,
            # Each trial worker's own peaks. USS: its private memory (no shared page at all);
            # store_mapped: the object store's pages it maps, i.e. data read in place, not copied.
            # uss_median: its typical private memory while it trains (the peak adds evaluation's
            # 1024-image batches and the allocator's high-water mark, which vary run to run).
            "trial_worker_peaks_mb": [
                {k: v / MB for k, v in peaks.items()}
                | {"uss_median": statistics.median(self.worker_uss[pid]) / MB}
                for pid, peaks in self.worker_peaks.items()],
            "peak_object_store_mb": None if self.peak_store is None else self.peak_store / MB,
            "samples": self.samples, "full_samples": self.full_samples,
            "sampler_cpu_seconds": self.cpu_seconds,
        }
