"""Which precision a run trains in: `trainer.precision` = fp32 | bf16 | auto.

`fp32` and `bf16` (bf16 autocast) are used as given. `auto` picks bf16 where the hardware runs
it natively and it was measured faster than fp32, and fp32 everywhere else
(benchmarks/README.md, "bf16 autocast on CPU"):

* CUDA: bf16 on compute capability 8.0 or newer (Ampere, Hopper, ...), where bf16 is native.
  Older GPUs only emulate it.
* CPU: bf16 only where oneDNN runs it on native bf16 instructions: AMX-BF16 (Intel Xeon 4th
  generation and newer) or AVX512-BF16 (AMD Zen 4 and newer, Intel Cooper Lake). Without them
  oneDNN emulates bf16 with fp32 arithmetic plus conversions (a Zen 3 trained the standard net
  5x slower). Even then, a model with a depthwise/grouped convolution (`groups > 1`) whose
  effective kernel is larger than 3x3 (dilated, or a larger kernel) keeps fp32: such layers
  run 1.3-2.3x slower in bf16, and on a Zen 4 they brought bf16 down to 0.92-1.13x of fp32
  (`depthwise_dilated`: 1.11x at its defaults, 0.97-1.01x with a third stage; a Sapphire
  Rapids measured it 0.89x). 3x3 undilated depthwise convs cost little, and
  `depthwise_separable` trained 1.5x faster in bf16, so they do not veto it. The rule reads
  the built module, not the model's name, so a user's own model gets the same answer as the
  model files. ARM CPUs with BF16 are native but not measured: fp32 there until they are.
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


def _effective_kernel(conv: nn.modules.conv._ConvNd) -> int:
    return max(d * (k - 1) + 1 for k, d in zip(conv.kernel_size, conv.dilation, strict=True))


def slow_bf16_convs_on_cpu(model: nn.Module) -> list[str]:
    """The layers that make bf16 slower than fp32 on a CPU: depthwise/grouped convolutions
    (groups > 1) whose effective kernel is larger than 3 (a kernel above 3, or any dilation).
    oneDNN's bf16 kernels for them are slower than its fp32 ones; 3x3 undilated ones cost a
    little and the rest of the net gains more."""
    return [name or type(m).__name__ for name, m in model.named_modules()
            if isinstance(m, nn.modules.conv._ConvNd) and m.groups > 1
            and _effective_kernel(m) > 3]


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
        return "fp32", (f"auto: fp32, depthwise/grouped convs larger than 3x3 ({slow[0]}{more}) "
                        f"run slower in bf16 on CPU (measured)")
    return "bf16", f"auto: bf16, native bf16 on this CPU ({isa})"
