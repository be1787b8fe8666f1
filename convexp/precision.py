"""Which precision a run trains in: `trainer.precision` fp32 | bf16 | auto.

fp32 and bf16 are used as given. `auto` picks bf16 autocast only where it was measured faster
than fp32 (benchmarks/README.md); the rule is work in progress.
"""

from __future__ import annotations

import torch
from torch import nn

SETTINGS = ("auto", "fp32", "bf16")


def _cpu_capabilities() -> dict:
    try:
        return dict(torch.cpu.get_capabilities())
    except Exception:
        return {}


def cpu_bf16_isa() -> str | None:
    """The native bf16 instructions of this CPU that oneDNN uses, or None."""
    caps = _cpu_capabilities()
    if caps.get("amx_bf16") and caps.get("amx_tile"):
        return "AMX-BF16"
    if caps.get("avx512_bf16"):
        return "AVX512-BF16"
    return None


def native_bf16(device: torch.device) -> bool:
    device = torch.device(device)
    if device.type == "cuda":
        try:
            major, _ = torch.cuda.get_device_capability(device)
            return major >= 8 and bool(torch.cuda.is_bf16_supported(including_emulation=False))
        except Exception:
            return False
    if device.type == "cpu":
        return cpu_bf16_isa() is not None
    return False


def has_grouped_conv(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.conv._ConvNd) and m.groups > 1 for m in model.modules())


def resolve_precision(setting, device: torch.device, model: nn.Module) -> tuple[str, str]:
    setting = str(getattr(setting, "value", setting))
    if setting in ("fp32", "bf16"):
        return setting, f"{setting} (trainer.precision={setting})"
    device = torch.device(device)
    if not native_bf16(device):
        return "fp32", f"auto: fp32, no native bf16 on this {device.type}"
    if device.type == "cpu" and has_grouped_conv(model):
        return "fp32", "auto: fp32, depthwise/grouped convs run slower in bf16 on CPU (measured)"
    if device.type == "cpu" and cpu_bf16_isa() != "AMX-BF16":
        return "fp32", "auto: fp32, bf16 without AMX measured slower on CPU"
    return "bf16", f"auto: bf16, native bf16 on this {device.type}"
