"""FeatureTaps and feature_shapes on small hand-built models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from searchkd.errors import SearchKDError
from searchkd.features import FeatureTaps, feature_shapes


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_taps_capture_module_outputs() -> None:
    model = _mlp()
    x = torch.randn(5, 3)
    with FeatureTaps(model, ["0", "1"]) as taps:
        out = model(x)
        assert list(taps.features) == ["0", "1"]
        hidden = model[0](x)
        torch.testing.assert_close(taps.features["0"], hidden)
        torch.testing.assert_close(taps.features["1"], hidden.relu())
        torch.testing.assert_close(out, model[2](hidden.relu()))


def test_taps_keep_graph_for_student_and_detach_for_teacher() -> None:
    model = _mlp()
    with FeatureTaps(model, ["1"]) as taps:
        model(torch.randn(2, 3))
        taps.features["1"].sum().backward()
    assert model[0].weight.grad is not None
    with FeatureTaps(model, ["1"], detach=True) as taps:
        model(torch.randn(2, 3))
        assert not taps.features["1"].requires_grad


def test_taps_refresh_each_forward() -> None:
    model = _mlp()
    with FeatureTaps(model, ["2"]) as taps:
        model(torch.zeros(1, 3))
        first = taps.features["2"]
        model(torch.ones(1, 3))
        assert not torch.equal(first, taps.features["2"])


def test_nested_paths() -> None:
    model = nn.Sequential(nn.Sequential(nn.Linear(2, 2), nn.Tanh()), nn.Linear(2, 1))
    x = torch.randn(3, 2)
    with FeatureTaps(model, ["0.1"]) as taps:
        model(x)
        torch.testing.assert_close(taps.features["0.1"], model[0](x))


def test_hooks_removed_by_remove_and_by_context_exit() -> None:
    model = _mlp()
    taps = FeatureTaps(model, ["0", "2"])
    assert _hooks(model) == 3  # one recorder per tap + the root pre-hook that clears
    taps.remove()
    taps.remove()  # idempotent
    assert _hooks(model) == 0
    with FeatureTaps(model, ["1"]):
        assert _hooks(model) == 2
    assert _hooks(model) == 0
    with pytest.raises(RuntimeError), FeatureTaps(model, ["1"]):
        raise RuntimeError("boom")
    assert _hooks(model) == 0


def test_missing_path_is_one_line_listing_top_level_modules() -> None:
    model = _mlp()
    with pytest.raises(SearchKDError) as err:
        FeatureTaps(model, ["0", "stage9"])
    message = str(err.value)
    assert "\n" not in message
    assert "'stage9'" in message and "0, 1, 2" in message
    assert _hooks(model) == 0  # nothing half-registered


def test_missing_nested_path_lists_children_of_deepest_existing_parent() -> None:
    model = nn.Sequential(nn.Sequential(nn.Linear(2, 2), nn.Tanh()), nn.Linear(2, 1))
    with pytest.raises(SearchKDError, match=r"no module '0\.7'; '0' has 0, 1$"):
        FeatureTaps(model, ["0.7"])


def test_non_tensor_output_is_a_user_error() -> None:
    class Pair(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x, x

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pair = Pair()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.pair(x)[0]

    model = Net()
    with FeatureTaps(model, ["pair"]), pytest.raises(SearchKDError, match="outputs tuple"):
        model(torch.zeros(1))


def test_feature_shapes_runs_eval_no_grad_and_restores_flags() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 8, 3, stride=2, padding=1),
        nn.BatchNorm2d(8),
    )
    model.train()
    model[4].eval()  # a deliberately frozen BN must stay frozen
    before = model[1].running_mean.clone()
    shapes = feature_shapes(model, ["2", "4"], (1, 3, 8, 8))
    assert shapes == {"2": torch.Size([1, 4, 8, 8]), "4": torch.Size([1, 8, 4, 4])}
    assert list(shapes) == ["2", "4"]
    assert model.training and model[1].training and not model[4].training
    torch.testing.assert_close(model[1].running_mean, before)  # eval: stats untouched
    assert _hooks(model) == 0


def test_feature_shapes_bad_path_restores_flags() -> None:
    model = _mlp().train()
    with pytest.raises(SearchKDError):
        feature_shapes(model, ["nope"], (1, 3))
    assert model.training
