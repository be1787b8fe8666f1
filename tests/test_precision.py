"""trainer.precision: fp32 and bf16 pass through; `auto` picks bf16 only where the hardware runs
it natively and it was measured faster (convexp/precision.py); bf16 autocast trains on real
MNIST batches without NaN."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from convexp import precision as P
from convexp.data import BUNDLED_MNIST, IMAGES_MAGIC, LABELS_MAGIC, read_idx
from convexp.errors import ConfigError
from convexp.ops import DilatedDepthwiseConv2d

CPU = torch.device("cpu")
CUDA = torch.device("cuda")


def dense_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=2, dilation=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 7 * 7, 10),
    )


def depthwise_net(kernel_size: int = 3, dilation=1, groups: int = 8) -> nn.Module:
    """A user's own depthwise-separable net (not a registered model file)."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
        nn.Sequential(nn.Conv2d(8, 8, kernel_size, padding="same", dilation=dilation,
                                groups=groups),
                      nn.Conv2d(8, 16, 1)),
        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )


def convexp_dilated_depthwise_net() -> nn.Module:
    """The same net with convexp's dilated depthwise conv (fast backward, convexp/ops.py)."""
    net = depthwise_net(dilation=2)
    net[2][0] = DilatedDepthwiseConv2d(8, 8, 3, padding=2, dilation=2, groups=8)
    return net


def mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))


MODELS = {
    "dense": dense_net,
    "depthwise": depthwise_net,
    "depthwise_dilated": lambda: depthwise_net(dilation=2),
    "depthwise_dilated_fast": convexp_dilated_depthwise_net,
    "depthwise_5x5": lambda: depthwise_net(kernel_size=5),
    "grouped_dilated": lambda: depthwise_net(dilation=(1, 2), groups=2),
    "mlp": mlp,
}
# groups > 1 with a kernel above 3, or dilated without convexp's fast dilated depthwise
# backward: measured slower in bf16 on CPU
SLOW_ON_CPU = {"depthwise_dilated", "depthwise_5x5", "grouped_dilated"}


def fake_cpu(monkeypatch, isa: str | None) -> None:
    monkeypatch.setattr(P, "cpu_bf16_isa", lambda: isa)


def fake_cuda(monkeypatch, capability: tuple[int, int]) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: capability[0] >= 8 or including_emulation)


# --- settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize("setting", ["fp32", "bf16"])
@pytest.mark.parametrize("device", ["cpu", "cuda", "mps"])
@pytest.mark.parametrize("model", sorted(MODELS))
def test_fixed_settings_pass_through(setting, device, model):
    precision, reason = P.resolve_precision(setting, torch.device(device), MODELS[model]())
    assert precision == setting
    assert isinstance(reason, str) and "\n" not in reason and setting in reason


def test_enum_settings_are_accepted():
    class Setting:  # what a typed config's enum field holds: a member with .value
        value = "bf16"

    assert P.resolve_precision(Setting(), CPU, dense_net())[0] == "bf16"


def test_unknown_setting_is_a_config_error():
    with pytest.raises(ConfigError, match="trainer.precision"):
        P.resolve_precision("fp16", CPU, dense_net())


# --- auto on this machine's CPU ----------------------------------------------------------------


@pytest.mark.parametrize("model", sorted(MODELS))
def test_auto_on_this_cpu_follows_native_bf16(model):
    precision, reason = P.resolve_precision("auto", CPU, MODELS[model]())
    isa = P.cpu_bf16_isa()
    assert P.native_bf16(CPU) == (isa is not None)
    if not P.native_bf16(CPU) or isa == "ARM-BF16" or model in SLOW_ON_CPU:
        assert precision == "fp32"
    else:
        assert precision == "bf16" and isa in reason
    assert reason.startswith(f"auto: {precision}, ") and "\n" not in reason


def test_native_bf16_is_a_bool_on_every_device():
    for device in ("cpu", "cuda", "mps", "meta"):
        assert isinstance(P.native_bf16(torch.device(device)), bool)
    assert P.native_bf16(torch.device("mps")) is False


# --- auto: the rule, on simulated hardware -----------------------------------------------------


@pytest.mark.parametrize("isa", ["AVX512-BF16", "AMX-BF16"])
@pytest.mark.parametrize("model", sorted(MODELS))
def test_auto_on_a_native_bf16_cpu(monkeypatch, isa, model):
    fake_cpu(monkeypatch, isa)
    precision, reason = P.resolve_precision("auto", CPU, MODELS[model]())
    if model in SLOW_ON_CPU:
        assert precision == "fp32"
        assert "depthwise/grouped convs" in reason and "(2.0)" in reason  # names the layer
    else:
        assert (precision, reason) == ("bf16", f"auto: bf16, native bf16 on this CPU ({isa})")


def test_auto_reads_the_module_not_its_name(monkeypatch):
    """A dilated (or larger than 3x3) depthwise conv anywhere in a user's module keeps fp32
    on a CPU; the same architecture with a 3x3 undilated one, or convexp's dilated depthwise
    conv, gets bf16."""
    fake_cpu(monkeypatch, "AVX512-BF16")

    class MyNet(nn.Module):
        def __init__(self, dilation):
            super().__init__()
            self.stem = nn.Conv2d(1, 16, 3)
            self.body = nn.ModuleList([nn.Conv2d(16, 16, 3, dilation=dilation, groups=16)])

    assert P.slow_bf16_convs_on_cpu(MyNet(2)) == ["body.0"]
    assert P.resolve_precision("auto", CPU, MyNet(2))[0] == "fp32"
    assert P.slow_bf16_convs_on_cpu(MyNet(1)) == []
    assert P.resolve_precision("auto", CPU, MyNet(1))[0] == "bf16"
    assert P.resolve_precision("auto", CPU, nn.Conv1d(4, 4, 3, dilation=3, groups=4))[0] == "fp32"
    assert P.resolve_precision("auto", CPU, nn.Conv2d(4, 4, (1, 5), groups=2))[0] == "fp32"
    assert P.resolve_precision("auto", CPU, nn.Conv2d(4, 4, 5, dilation=2))[0] == "bf16"  # dense
    fast = DilatedDepthwiseConv2d(16, 16, 3, padding=2, dilation=2, groups=16)
    assert P.resolve_precision("auto", CPU, fast)[0] == "bf16"
    for slow in (DilatedDepthwiseConv2d(16, 16, 5, padding=4, dilation=2, groups=16),  # 5x5
                 DilatedDepthwiseConv2d(8, 16, 3, padding=2, dilation=2, groups=8)):  # x2
        assert P.resolve_precision("auto", CPU, slow)[0] == "fp32"


def test_a_failing_fast_path_check_counts_as_slow(monkeypatch):
    fake_cpu(monkeypatch, "AVX512-BF16")

    def broken(self, x):
        raise RuntimeError("changed")

    monkeypatch.setattr(DilatedDepthwiseConv2d, "fast_path_applies", broken)
    fast = DilatedDepthwiseConv2d(16, 16, 3, padding=2, dilation=2, groups=16)
    assert P.resolve_precision("auto", CPU, fast)[0] == "fp32"


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("model", sorted(MODELS))
def test_auto_without_native_bf16_is_fp32(monkeypatch, device, model):
    monkeypatch.setattr(P, "native_bf16", lambda device: False)
    fake_cpu(monkeypatch, "AMX-BF16")  # ignored: native_bf16 decides
    fake_cuda(monkeypatch, (9, 0))
    precision, reason = P.resolve_precision("auto", torch.device(device), MODELS[model]())
    assert precision == "fp32" and "no native bf16" in reason


@pytest.mark.parametrize("model", sorted(MODELS))
def test_auto_on_cuda_with_native_bf16(monkeypatch, model):
    fake_cuda(monkeypatch, (9, 0))
    assert P.native_bf16(CUDA) is True
    assert P.native_bf16(torch.device("cuda:0")) is True
    precision, reason = P.resolve_precision("auto", CUDA, MODELS[model]())
    assert precision == "bf16" and "GPU" in reason


@pytest.mark.parametrize("capability", [(7, 5), (6, 1)])
def test_auto_on_cuda_with_emulated_bf16_is_fp32(monkeypatch, capability):
    fake_cuda(monkeypatch, capability)
    assert P.native_bf16(CUDA) is False
    assert P.resolve_precision("auto", CUDA, dense_net())[0] == "fp32"


def test_cuda_check_failing_is_not_native(monkeypatch):
    def broken(device=None):
        raise RuntimeError("no driver")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", broken)
    assert P.native_bf16(CUDA) is False


def test_auto_on_mps_is_fp32():
    assert P.resolve_precision("auto", torch.device("mps"), dense_net())[0] == "fp32"


def test_auto_on_arm_bf16_is_fp32_until_measured(monkeypatch):
    fake_cpu(monkeypatch, "ARM-BF16")
    assert P.native_bf16(CPU) is True
    precision, reason = P.resolve_precision("auto", CPU, dense_net())
    assert precision == "fp32" and "ARM" in reason


# --- what counts as native on a CPU ------------------------------------------------------------


def fake_x86(monkeypatch, onednn: bool, **caps) -> None:
    monkeypatch.setattr(P, "_onednn_runs_bf16", lambda: onednn)
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: caps)
    monkeypatch.setattr(P.platform, "machine", lambda: "x86_64")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)


AVX512 = {"avx512_f": True, "avx512_bw": True, "avx512_vl": True, "avx512_dq": True}


def test_amx_and_avx512_bf16_are_native(monkeypatch):
    fake_x86(monkeypatch, True, **AVX512, avx512_bf16=True, amx_tile=True, amx_bf16=True)
    assert P.cpu_bf16_isa() == "AMX-BF16"
    fake_x86(monkeypatch, True, **AVX512, avx512_bf16=True)  # Zen 4, Cooper Lake
    assert P.cpu_bf16_isa() == "AVX512-BF16" and P.native_bf16(CPU)


def test_avx512_without_bf16_is_emulated_not_native(monkeypatch):
    """oneDNN reports bf16 support on any AVX-512 CPU (e.g. Skylake), where it only emulates
    it: that does not count."""
    fake_x86(monkeypatch, True, **AVX512)
    assert P.cpu_bf16_isa() is None and not P.native_bf16(CPU)
    fake_x86(monkeypatch, False, avx2=True)  # e.g. Zen 3: oneDNN has no bf16 at all
    assert not P.native_bf16(CPU)
    assert P.resolve_precision("auto", CPU, dense_net())[0] == "fp32"


def test_bf16_instructions_without_onednn_are_not_used(monkeypatch):
    fake_x86(monkeypatch, False, **AVX512, avx512_bf16=True)
    assert not P.native_bf16(CPU)


def test_onednn_isa_cap_disables_native_bf16(monkeypatch):
    fake_x86(monkeypatch, True, **AVX512, avx512_bf16=True)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE")
    assert not P.native_bf16(CPU)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
    assert P.native_bf16(CPU)


def test_private_api_failures_mean_not_native(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("private API changed")

    monkeypatch.setattr(torch.backends.mkldnn, "is_available", broken)
    assert P._onednn_runs_bf16() is False and not P.native_bf16(CPU)
    monkeypatch.undo()
    monkeypatch.setattr(P, "_onednn_runs_bf16", lambda: True)
    monkeypatch.setattr(torch.cpu, "get_capabilities", broken)
    monkeypatch.setattr(P.platform, "machine", lambda: "x86_64")
    assert P.cpu_bf16_isa() is None


# --- the model files -----------------------------------------------------------------------


def test_model_files_on_a_native_bf16_cpu(monkeypatch):
    """Built from their configs: every model file gets bf16 (depthwise_dilated's dilated
    depthwise convs take convexp's fast backward); a depthwise file with 5x5 kernels, fp32."""
    from convexp.api import compose_config
    from convexp.models import build_model

    fake_cpu(monkeypatch, "AVX512-BF16")
    expected = {"book_cnn": "bf16", "standard": "bf16", "dilated": "bf16",
                "depthwise_separable": "bf16", "depthwise_dilated": "bf16"}
    for name, precision in expected.items():
        model = build_model(compose_config([f"model={name}"]).model)
        assert P.resolve_precision("auto", CPU, model)[0] == precision, name
    undilated = build_model(compose_config(["model=depthwise_dilated", "model.dilation=1"]).model)
    assert P.resolve_precision("auto", CPU, undilated)[0] == "bf16"
    for name in ("depthwise_separable", "depthwise_dilated"):
        k5 = build_model(compose_config([f"model={name}", "model.kernel_size=5"]).model)
        assert P.resolve_precision("auto", CPU, k5)[0] == "fp32", name


# --- numerics: bf16 autocast trains ------------------------------------------------------------


def mnist_batches(n: int = 384) -> tuple[torch.Tensor, torch.Tensor]:
    images = read_idx(next(BUNDLED_MNIST.glob("train-images-idx3-ubyte*")), IMAGES_MAGIC)[:n]
    labels = read_idx(next(BUNDLED_MNIST.glob("train-labels-idx1-ubyte*")), LABELS_MAGIC)[:n]
    x = torch.from_numpy(images.copy()).float().div_(255).sub_(0.1307).div_(0.3081)
    return x.unsqueeze(1), torch.from_numpy(labels.astype("int64"))


def separable_net(dilation: int, depthwise=nn.Conv2d) -> nn.Module:
    """The skeleton of the depthwise model files: conv blocks with BatchNorm and pooling."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.MaxPool2d(2),
        depthwise(16, 16, 3, padding=dilation, dilation=dilation, groups=16, bias=False),
        nn.Conv2d(16, 32, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 10),
    )


@pytest.mark.parametrize(
    "make_net", [dense_net, lambda: separable_net(2),
                 lambda: separable_net(2, depthwise=DilatedDepthwiseConv2d)],
    ids=["dense", "depthwise_dilated", "convexp_dilated_depthwise"])
@pytest.mark.slow
def test_bf16_autocast_trains_on_mnist_without_nan(make_net):
    """The runner's bf16 path (autocast on the forward, fp32 loss and fp32 weights) on real
    MNIST batches: finite losses and weights, and the loss falls."""
    torch.manual_seed(0)
    net = make_net().to(memory_format=torch.channels_last)
    images, labels = mnist_batches()
    images = images.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(2):
        for i in range(0, len(labels), 64):
            x, y = images[i:i + 64], labels[i:i + 64]
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = net(x)
            assert logits.dtype == torch.bfloat16
            loss = F.cross_entropy(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in net.parameters())
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < 0.6 * first, (first, last)


# --- every auto setting resolved in one place, for the job and the bench (issue 17.6) ---------


def trainer_cfg(precision="auto", compile=None):
    from omegaconf import OmegaConf

    return OmegaConf.create({"precision": precision, "compile": compile})


@pytest.mark.parametrize("model", sorted(MODELS))
def test_resolve_auto_is_the_precision_rule_then_compile(model):
    from convexp.auto import resolve_auto

    net = MODELS[model]()
    auto = resolve_auto(trainer_cfg(), CPU, net)
    assert (auto.precision, auto.precision_why) == P.resolve_precision("auto", CPU, net)
    assert auto.compile is False and "eager" in auto.compile_why  # null: eager on the CPU
    for setting in (True, False):
        forced = resolve_auto(trainer_cfg("fp32", setting), CPU, net)
        assert (forced.precision, forced.compile) == ("fp32", setting)
        assert f"trainer.compile={setting}" in forced.compile_why


def test_resolve_auto_on_cuda_compiles_in_bf16(monkeypatch):
    from convexp.auto import resolve_auto

    fake_cuda(monkeypatch, (9, 0))
    auto = resolve_auto(trainer_cfg(), CUDA, dense_net())
    assert (auto.precision, auto.compile) == ("bf16", True)
    assert "CUDA" in auto.compile_why


def test_bench_runner_takes_the_resolved_settings(monkeypatch, tmp_path):
    """The bench builds its runner from resolve_auto, as the job does: on a (simulated)
    native-bf16 CPU it runs bf16, and trainer.compile=true compiles."""
    from convexp.api import compose_config
    from convexp.bench import make_runner
    from convexp.data import load_dataset
    from convexp.models import build_model

    fake_cpu(monkeypatch, "AVX512-BF16")
    cfg = compose_config(["model=standard", "data.train_size=256", "data.val_size=64",
                          "data.test_size=64", "trainer.compile=true"])
    data = load_dataset(cfg.data, cfg.seed)
    runner = make_runner(cfg, build_model(cfg.model), data, CPU, tmp_path)
    assert (runner.precision, runner.compiled) == ("bf16", True)


@pytest.mark.slow
def test_job_records_the_resolved_settings(monkeypatch, tmp_path):
    """A job resolves trainer.precision=auto once, trains with it, and records it in
    summary.json and its checkpoint's config (so a resumed run keeps it)."""
    from convexp.api import train
    from convexp.checkpoint import load_checkpoint

    fake_cpu(monkeypatch, "AVX512-BF16")
    run_dir = tmp_path / "run"
    summary = train(["model=book_cnn", "debug=fast", "trainer.progress=false",
                     "data.train_size=256", "data.val_size=64", "data.test_size=64",
                     "data.batch_size=64"], run_dir)
    assert summary["status"] == "completed"
    assert (summary["precision"], summary["compiled"]) == ("bf16", False)
    config = load_checkpoint(str(run_dir))["config"]
    assert (config["trainer"]["precision"], config["trainer"]["compile"]) == ("bf16", None)
