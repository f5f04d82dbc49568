"""The numeric precision and memory layout a trial trains and evaluates in, on its device.

`auto` picks bf16 autocast where the device runs it fast (a CUDA GPU with bf16; a CPU with AMX or
AVX512-BF16, detected at run time) and fp32 elsewhere. The layout is channels-last: on this
project's CPUs it was 1.27x (fp32) and 1.38x (bf16) faster than NCHW for ResNet-18 at width 0.25
with one thread. On a CPU, a trial first probes its own model in channels-last in a child process
(core/layout_probe.py: some shapes crash oneDNN on some CPUs) and trains NCHW where the probe fails,
with the reason in `Mode.why`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from core.hparams import PRECISIONS

LAYOUTS = ("channels_last", "nchw")

# CPU flags (as Linux's /proc/cpuinfo names them) of instructions that make bf16 matmuls and
# convolutions fast in oneDNN; without them bf16 is emulated and slower than fp32.
FAST_BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


@dataclass(frozen=True)
class Mode:
    """How one trial computes: `precision` is fp32 or bf16 (autocast), `layout` of the activations."""

    precision: str
    layout: str
    why: str = ""  # where channels-last was refused: why (core/layout_probe.py)

    def __post_init__(self):
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision {self.precision!r}: expected fp32 or bf16")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout {self.layout!r}: expected one of {', '.join(LAYOUTS)}")

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return torch.bfloat16 if self.precision == "bf16" else None

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.layout == "channels_last" else torch.contiguous_format

    def __str__(self) -> str:
        return f"{self.precision} {self.layout}"


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The instruction-set flags of this machine's first CPU (empty where there is no cpuinfo)."""
    flags = _cpuinfo_field(cpuinfo, ("flags", "Features"))
    return set(flags.split()) if flags else set()


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """This machine's CPU as cpuinfo names it ("AMD EPYC", ...), else the platform's word for it."""
    import platform

    return _cpuinfo_field(cpuinfo, ("model name",)) or platform.processor()


def _cpuinfo_field(cpuinfo: Path, names: tuple[str, ...]) -> str | None:
    """The value of the first line of cpuinfo that starts with one of `names` (None: no such line,
    or no cpuinfo)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(names):
            return line.split(":", 1)[1].strip()
    return None


def cpu_has_fast_bf16(flags: set[str] | None = None) -> bool:
    """Whether this CPU runs bf16 convolutions natively (AMX or AVX512-BF16)."""
    flags = cpu_flags() if flags is None else flags
    return any(f in flags for f in FAST_BF16_CPU_FLAGS)


def device_has_fast_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_has_fast_bf16()
    return False


def resolve_mode(precision: str, device: torch.device) -> Mode:
    """The Mode a trial on `device` uses for the `precision` setting (auto, fp32 or bf16)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        precision = "bf16" if device_has_fast_bf16(device) else "fp32"
    return Mode(precision, "channels_last")


def safe_on_cpu(mode: Mode, model_spec: dict, shape: tuple[int, int, int], batch: int,
                threads: int) -> Mode:
    """`mode`, or NCHW where channels-last failed the probe of `model_spec` (the trial's model, as
    built and as channel pruning will leave it) on this CPU."""
    from core.layout_probe import channels_last_is_safe

    if mode.layout != "channels_last":
        return mode
    answer = channels_last_is_safe(model_spec, shape, batch, mode.precision, threads)
    return mode if answer.safe else Mode(mode.precision, "nchw", answer.why)
