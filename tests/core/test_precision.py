"""`auto` picks bf16 where the device runs it fast, fp32 elsewhere; channels-last everywhere."""

from __future__ import annotations

import pytest
import torch

from core.precision import Mode, cpu_flags, cpu_has_fast_bf16, resolve_mode


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 amx_tile\n\n"
                    "processor\t: 1\nflags\t\t: fpu\n")
    assert cpu_flags(info) == {"fpu", "sse", "avx512f", "avx512_bf16", "amx_tile"}
    assert cpu_flags(tmp_path / "missing") == set()


@pytest.mark.parametrize("flags,fast", [
    ({"avx512f", "amx_bf16", "amx_tile"}, True),  # Sapphire Rapids and later
    ({"avx512f", "avx512_bf16"}, True),  # Cooper Lake, Zen 4
    ({"avx512f", "avx2"}, False),  # bf16 would be emulated: slower than fp32
    (set(), False),
])
def test_fast_bf16_needs_amx_or_avx512_bf16(flags, fast):
    assert cpu_has_fast_bf16(flags) is fast


def test_auto_follows_this_cpu():
    mode = resolve_mode("auto", torch.device("cpu"))
    assert mode.precision == ("bf16" if cpu_has_fast_bf16() else "fp32")
    assert mode.layout == "channels_last"


def test_explicit_precisions_are_kept():
    assert resolve_mode("fp32", torch.device("cpu")) == Mode("fp32", "channels_last")
    assert resolve_mode("bf16", torch.device("cpu")) == Mode("bf16", "channels_last")


def test_mode_gives_autocast_dtype_and_memory_format():
    assert Mode("bf16", "channels_last").autocast_dtype is torch.bfloat16
    assert Mode("fp32", "nchw").autocast_dtype is None
    assert Mode("fp32", "nchw").memory_format is torch.contiguous_format
    assert Mode("fp32", "channels_last").memory_format is torch.channels_last


@pytest.mark.parametrize("bad", ["fp16", "auto ", "", "BF16"])
def test_unknown_precision_is_refused(bad):
    with pytest.raises(ValueError, match="expected one of auto, fp32, bf16"):
        resolve_mode(bad, torch.device("cpu"))
