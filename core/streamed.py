"""Images that stay in host memory and reach the GPU a batch at a time.

A trial on a GPU normally copies its whole uint8 data set to the device once and indexes batches
there. A data set read from the node's mapped cache (core/decoded_cache.py) is one that was too big
to ship through the object store, and a copy of it per trial would fill the GPU as trials share it.
`StreamedImages` keeps such arrays where they are (the page cache holds one copy per node) and
gathers each batch into pinned host memory, copied on a side stream while the previous batch
computes, so the copy costs no step time once the GPU is the bottleneck.
"""

from __future__ import annotations

import warnings
from typing import Iterator

import numpy as np
import torch

# The share of a GPU's free memory a data set may take before it is streamed instead of copied.
COPY_SHARE = 0.25


def host_tensor(x: np.ndarray) -> torch.Tensor:
    """The array as a CPU tensor, without a copy (mapped and object-store arrays are read-only)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(x)


def should_stream(x: np.ndarray, device: torch.device) -> bool:
    """Whether `x` should stay on the host: on a GPU, for a mapped array (the data set was too big
    to ship) or one over COPY_SHARE of the GPU's free memory. On a CPU nothing is ever copied."""
    if device.type != "cuda":
        return False
    if isinstance(x, np.memmap):
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return x.nbytes > COPY_SHARE * free


class StreamedImages:
    """(N, C, H, W) uint8 images on the host, handed out as device batches (see the module)."""

    def __init__(self, x: np.ndarray, device: torch.device):
        self.host = host_tensor(x)
        self.device = device
        self.shape = self.host.shape
        self._cuda = device.type == "cuda"
        self._stream = torch.cuda.Stream(device) if self._cuda else None

    def __len__(self) -> int:
        return self.shape[0]

    def batches(self, rows: list[torch.Tensor]) -> Iterator[torch.Tensor]:
        """The images at each of `rows` (CPU index tensors), on the device, in order; the copy
        of the next batch is under way while the caller computes on this one."""
        if not rows:
            return
        buffers = [self._buffer(max(len(r) for r in rows)) for _ in range(2)]
        done: list[torch.cuda.Event | None] = [None, None]
        pending = self._start(rows[0], buffers[0], done, 0)
        for k in range(len(rows)):
            batch, event = pending
            if k + 1 < len(rows):
                pending = self._start(rows[k + 1], buffers[(k + 1) % 2], done, (k + 1) % 2)
            yield self._ready(batch, event)

    def slices(self, size: int) -> Iterator[torch.Tensor]:
        """Consecutive batches of `size` images (evaluation), on the device."""
        yield from self.batches([torch.arange(i, min(i + size, len(self)))
                                 for i in range(0, len(self), size)])

    def _buffer(self, n: int) -> torch.Tensor:
        buffer = torch.empty((n, *self.shape[1:]), dtype=self.host.dtype)
        return buffer.pin_memory() if self._cuda else buffer

    def _start(self, rows: torch.Tensor, buffer: torch.Tensor, done: list, slot: int):
        """Gathers `rows` into the pinned `buffer` and starts its copy to the device."""
        if done[slot] is not None:
            done[slot].synchronize()  # the buffer's last copy has left it
        out = buffer[:len(rows)]
        torch.index_select(self.host, 0, rows, out=out)
        if not self._cuda:
            return out.clone(), None
        with torch.cuda.stream(self._stream):
            batch = out.to(self.device, non_blocking=True)
            event = torch.cuda.Event()
            event.record(self._stream)
        done[slot] = event
        return batch, event

    def _ready(self, batch: torch.Tensor, event) -> torch.Tensor:
        if event is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_event(event)
            batch.record_stream(current)  # made on the side stream, used on this one
        return batch
