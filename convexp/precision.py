"""Which precision a run trains in: `trainer.precision` = fp32 | bf16 | auto.

`fp32` and `bf16` (bf16 autocast) are used as given. `auto` picks bf16 where the hardware runs
it natively and it was measured faster than fp32, and fp32 everywhere else (measurements:
benchmarks/README.md, the Zen 4 results):

* CUDA: bf16 on compute capability 8.0 or newer (Ampere, Hopper, ...), where bf16 is native.
  Older GPUs only emulate it.
* CPU: bf16 only where oneDNN runs it on native bf16 instructions: AMX-BF16 (Intel Xeon 4th
  generation and newer) or AVX512-BF16 (AMD Zen 4 and newer, Intel Cooper Lake). Without them
  oneDNN emulates bf16 with fp32 arithmetic plus conversions (a Zen 3 trained the standard net
  5x slower). On a Zen 4 (2 threads) bf16 trained every model file 1.37-1.55x faster, but a
  model keeps fp32 if it has a depthwise/grouped convolution (`groups > 1`) that oneDNN runs
  slower in bf16: one with a kernel above 3x3 (5x5 depthwise nets: 0.93x-1.06x), or a dilated
  one other than convexp's `DilatedDepthwiseConv2d` on its fast backward (convexp/ops.py):
  plain `nn.Conv2d` dilated depthwise nets ran 0.92-1.13x, and `depthwise_dilated` 0.89x on a
  Sapphire Rapids, before that backward existed. 3x3 depthwise convs, undilated or on the
  fast backward, do not veto bf16 (`depthwise_separable` 1.54x, `depthwise_dilated` 1.44x).
  The rule reads the built module, not the model's name, so a user's own model gets the same
  answer as the model files. ARM CPUs with BF16 are native but not measured: fp32 there.
* MPS and anything else: fp32.
"""

from __future__ import annotations

import os
import platform

import torch
from torch import nn

from convexp.errors import ConfigError

SETTINGS = ("auto", "fp32", "bf16")


# --- what the hardware does natively ---------------------------------------------------------


def _onednn_runs_bf16() -> bool:
    """oneDNN's own answer. On x86 it is true on any AVX-512 (BW/VL/DQ) CPU, including ones
    that only emulate bf16, so it is necessary but not sufficient there."""
    try:
        return bool(torch.backends.mkldnn.is_available()
                    and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:
        return False


def _cpu_capabilities() -> dict:
    try:
        return dict(torch.cpu.get_capabilities())
    except Exception:
        return {}


def _onednn_isa_capped() -> bool:
    """ONEDNN_MAX_CPU_ISA (or DNNL_MAX_CPU_ISA) below the bf16 ISAs makes oneDNN emulate."""
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "")
    cap = cap.strip().upper()
    return bool(cap) and cap != "ALL" and "BF16" not in cap and "AMX" not in cap


def cpu_bf16_isa() -> str | None:
    """The native bf16 instructions oneDNN uses on this CPU: "AMX-BF16", "AVX512-BF16" or
    "ARM-BF16"; None where bf16 would only be emulated (or the check itself fails)."""
    if not _onednn_runs_bf16() or _onednn_isa_capped():
        return None
    caps = _cpu_capabilities()
    if caps.get("amx_bf16") and caps.get("amx_tile"):
        return "AMX-BF16"
    if caps.get("avx512_bf16"):
        return "AVX512-BF16"
    if platform.machine().lower() in ("aarch64", "arm64"):
        # On ARM, oneDNN's check is the BF16 extension itself (cpuinfo_has_arm_bf16).
        return "ARM-BF16"
    return None


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 natively (emulated bf16 does not count)."""
    device = torch.device(device)
    if device.type == "cuda":
        try:
            if not torch.cuda.is_available():
                return False
            major, _ = torch.cuda.get_device_capability(device)
            return major >= 8 and bool(torch.cuda.is_bf16_supported(including_emulation=False))
        except Exception:
            return False
    if device.type == "cpu":
        return cpu_bf16_isa() is not None
    return False  # mps and the rest: not measured, fp32


# --- what the model does ---------------------------------------------------------------------


def _fast_dilated_depthwise(conv: nn.Module) -> bool:
    """Whether `conv` is convexp's DilatedDepthwiseConv2d and takes its fast CPU backward in
    training (convexp/ops.py), which is fast in bf16 too. Asked of the module itself, on a
    one-pixel CPU input that needs a gradient; any failure counts as no."""
    try:
        from convexp.ops import DilatedDepthwiseConv2d

        if not isinstance(conv, DilatedDepthwiseConv2d):
            return False
        with torch.enable_grad():
            probe = torch.empty(1, conv.in_channels, 1, 1, requires_grad=True)
            return bool(conv.fast_path_applies(probe))
    except Exception:
        return False


def slow_bf16_convs_on_cpu(model: nn.Module) -> list[str]:
    """The layers that make bf16 slower than fp32 on a CPU: depthwise/grouped convolutions
    (groups > 1) with a kernel larger than 3, or dilated, except dilated depthwise convs that
    take convexp's fast backward (convexp/ops.py). oneDNN's bf16 kernels for these are slower
    than its fp32 ones; for 3x3 undilated ones the rest of the net gains more."""
    slow = []
    for name, m in model.named_modules():
        if not isinstance(m, nn.modules.conv._ConvNd) or m.groups == 1:
            continue
        large = max(m.kernel_size) > 3
        dilated = any(d > 1 for d in m.dilation)
        if large or (dilated and not _fast_dilated_depthwise(m)):
            slow.append(name or type(m).__name__)
    return slow


# --- the rule --------------------------------------------------------------------------------


def _value(setting) -> str:
    return str(getattr(setting, "value", setting)).strip().lower()


def resolve_precision(setting, device: torch.device, model: nn.Module) -> tuple[str, str]:
    """The precision that will run ("bf16" | "fp32") for `trainer.precision=setting` on
    `device` with the built `model`, and a one-line reason for the log."""
    setting = _value(setting)
    if setting not in SETTINGS:
        raise ConfigError(
            f"trainer.precision={setting!r}: expected one of {', '.join(SETTINGS)}")
    if setting != "auto":
        return setting, f"{setting} (trainer.precision={setting})"
    device = torch.device(device)
    if device.type not in ("cpu", "cuda"):
        return "fp32", f"auto: fp32, bf16 is not measured on {device.type}"
    if not native_bf16(device):
        if device.type == "cuda":
            return "fp32", "auto: fp32, no native bf16 on this GPU (compute capability < 8.0)"
        return "fp32", "auto: fp32, no native bf16 on this CPU (bf16 would be emulated, slower)"
    if device.type == "cuda":
        return "bf16", "auto: bf16, native bf16 on this GPU (compute capability >= 8.0)"
    isa = cpu_bf16_isa() or "native bf16"
    if isa == "ARM-BF16":
        return "fp32", ("auto: fp32, bf16 is not measured on ARM CPUs "
                        "(trainer.precision=bf16 to try it)")
    slow = slow_bf16_convs_on_cpu(model)
    if slow:
        more = f" and {len(slow) - 1} more" if len(slow) > 1 else ""
        return "fp32", (f"auto: fp32, depthwise/grouped convs with a kernel above 3x3 or a "
                        f"dilation ({slow[0]}{more}) run slower in bf16 on CPU (measured)")
    return "bf16", f"auto: bf16, native bf16 on this CPU ({isa})"
