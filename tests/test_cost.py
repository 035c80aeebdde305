import pytest
import torch
from torch import nn

from searchkd.cost import CostModel, TorchLatencyMeter, count_macs, count_params
from searchkd.meters import Timing


def tiny() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),  # 8*3*9 MACs per pixel
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )


def test_macs_count_conv_and_linear_only():
    # conv: 10x10 output pixels * 8 out * 3 in * 9 taps; linear: 8*10; BN and pooling not counted
    assert count_macs(tiny(), (3, 10, 10)) == 100 * 8 * 3 * 9 + 80


def test_depthwise_macs():
    model = nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False)
    assert count_macs(model, (16, 8, 8)) == 64 * 16 * 9


def test_attention_is_counted():
    class Attn(nn.Module):
        def forward(self, x):
            q = x.view(1, 2, 5, 4)  # batch, heads, tokens, dim
            return nn.functional.scaled_dot_product_attention(q, q, q)

    assert count_macs(Attn(), (40,)) == 2 * 5 * 5 * (4 + 4)


def test_params_and_training_flag_restored():
    model = tiny().train()
    assert count_params(model) == 8 * 3 * 9 + 16 + 8 * 10 + 10
    count_macs(model, (3, 10, 10))
    assert model.training


def test_latency_meter_records_median_and_spread_and_restores_threads():
    threads = torch.get_num_threads()
    meter = TorchLatencyMeter(timing=Timing(warmup=1, runs=3, repeats=3))
    latency = meter.measure(tiny().train(), (3, 16, 16))
    assert latency.median_ms > 0
    assert latency.spread_ms >= 0
    assert latency.meter == "torch-cpu:1t"
    assert torch.get_num_threads() == threads


def test_cost_model_caches_by_architecture():
    builds = []

    def build(arch):
        builds.append(arch)
        return nn.Sequential(nn.Flatten(), nn.Linear(12, arch["width"]))

    costs = CostModel(
        build, (3, 2, 2), TorchLatencyMeter(timing=Timing(warmup=0, runs=2, repeats=1))
    )
    assert costs.counts({"width": 4}) == (48, 52)
    assert costs.counts({"width": 4}) == (48, 52)
    first = costs.latency({"width": 4})
    assert costs.latency({"width": 4}) is first  # timed once; re-timing only adds noise
    assert len(builds) == 2  # one build for the counts, one for the latency
    assert costs.counts({"width": 5})[0] == 60
    assert len(builds) == 3


def test_closed_form_macs_skip_fvcore():
    costs = CostModel(lambda arch: nn.Linear(12, 4), (12,), closed_form_macs=lambda arch: 7)
    assert costs.counts({"any": 1}) == (7, 52)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_meter():
    latency = TorchLatencyMeter("cuda", Timing(warmup=1, runs=3, repeats=2)).measure(
        tiny(), (3, 16, 16)
    )
    assert latency.meter.startswith("torch-cuda")


def test_memory_is_estimated_for_a_forward_the_meta_device_cannot_run():
    """A forward that makes a tensor on a fixed device (NNI's NAS-Bench-201 space does)
    fails on the meta device; its activations are then counted on the CPU."""
    from searchkd.cost import estimate_memory

    class FixedDevice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)

        def forward(self, x):
            return self.conv(x) + torch.zeros(1, device="cpu")

    estimate = estimate_memory(FixedDevice, (1, 8, 8))
    assert estimate.params == 4 * 9 + 4
    assert estimate.activations_per_image == 4 * 8 * 8
