"""Faults injected on purpose by tests through the `_fault` key of a trial's config.

`{"_fault": {"kind": "raise" | "nan" | "exit" | "oom", "epoch": N}}` makes the trial fail that way at epoch
N (only the first time, if "once_file" names a file that does not exist yet: the fault creates it);
`{"kind": "slow", "seconds": S}` makes every epoch S seconds longer, so a test can interrupt a
search mid-trial. Real searches never set the key: space files may only when the environment has
TUNE_RUN_TEST_FAULTS=1.
"""

from __future__ import annotations

import os
import time

import torch

from core.hparams import FAULT_KEY


class InjectedFault(RuntimeError):
    pass


def inject_fault(config: dict, epoch: int, model: torch.nn.Module) -> None:
    fault = config.get(FAULT_KEY)
    if not fault:
        return
    kind = fault["kind"]
    if kind == "slow":
        time.sleep(fault["seconds"])
        return
    if fault.get("epoch") != epoch:
        return
    once_file = fault.get("once_file")
    if once_file:
        if os.path.exists(once_file):
            return
        open(once_file, "w").close()
    if kind == "raise":
        raise InjectedFault(f"injected fault at epoch {epoch}")
    if kind == "exit":
        os._exit(13)
    if kind == "oom":  # what CUDA raises when a batch does not fit
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    if kind == "nan":  # the loss turns NaN, as after a too-large learning rate
        with torch.no_grad():
            next(model.parameters()).fill_(float("nan"))
        return
    raise ValueError(f"_fault kind {kind!r}: expected raise, nan, exit, oom or slow")
