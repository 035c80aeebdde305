"""Distillation losses on hand-computed cases, their gradients, registry and config errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from searchkd.distill import (
    LOSSES,
    AttentionTransfer,
    CombinedLoss,
    DistillLoss,
    HintLoss,
    Outputs,
    attention_map,
    auto_pairs,
    build_loss,
    make_loss,
    register,
)
from searchkd.errors import SearchKDError

LN3 = math.log(3.0)


def _out(logits: list[list[float]] | torch.Tensor, **features: torch.Tensor) -> Outputs:
    return Outputs(torch.as_tensor(logits, dtype=torch.float32), dict(features))


def _map(rows: list[list[float]]) -> torch.Tensor:
    """A 1-sample, 1-channel feature map (1, 1, H, W)."""
    return torch.tensor(rows, dtype=torch.float32)[None, None]


def _one_line(err: pytest.ExceptionInfo[SearchKDError]) -> str:
    message = str(err.value)
    assert message and "\n" not in message
    return message


def _identity_regressor(loss: HintLoss) -> None:
    """Make the hint regressor exactly the identity: eye 1x1 conv, BN eval with mean 0/var 1."""
    conv, bn = loss.regressor
    with torch.no_grad():
        conv.weight.copy_(torch.eye(conv.out_channels, conv.in_channels)[:, :, None, None])
    bn.eps = 0.0
    loss.eval()


NO_TARGETS = torch.zeros(1, dtype=torch.long)


# --- registry ---------------------------------------------------------------------------------


def test_registry_holds_the_losses_with_their_names() -> None:
    assert {"ce", "kd", "hint", "at"} <= set(LOSSES)
    for name, cls in LOSSES.items():
        assert cls.name == name


def test_unknown_loss_name_is_one_line_listing_known() -> None:
    with pytest.raises(SearchKDError) as err:
        make_loss("fitnet", {}, {})
    message = _one_line(err)
    assert "'fitnet'" in message and ", ".join(sorted(LOSSES)) in message


def test_unknown_option_lists_the_accepted_ones() -> None:
    with pytest.raises(SearchKDError) as err:
        make_loss("kd", {}, {}, temp=2.0)
    assert "temp" in _one_line(err) and "temperature" in str(err.value)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), "4"])
def test_bad_temperature(bad: object) -> None:
    with pytest.raises(SearchKDError) as err:
        make_loss("kd", {}, {}, temperature=bad)
    _one_line(err)


def test_register_a_new_loss_without_touching_dispatch() -> None:
    @register("l1_logits")
    class L1Logits(DistillLoss):
        def __init__(self, student_shapes: dict, teacher_shapes: dict) -> None:
            super().__init__()

        def forward(self, student: Outputs, teacher: Outputs, targets: torch.Tensor):
            return (student.logits - teacher.logits.detach()).abs().mean()

    try:
        assert L1Logits.name == "l1_logits"
        total, terms = build_loss({"l1_logits": 2.0}, None, {}, {})(
            _out([[1.0, 3.0]]), _out([[0.0, 0.0]]), NO_TARGETS
        )
        assert terms == {"l1_logits": 2.0} and total.item() == 4.0
    finally:
        del LOSSES["l1_logits"]


# --- ce / kd ----------------------------------------------------------------------------------


def test_ce_hand_computed() -> None:
    ce = make_loss("ce", {}, {})
    s = _out([[LN3, 0.0]])
    # softmax([ln 3, 0]) = [3/4, 1/4]
    assert ce(s, s, torch.tensor([0])).item() == pytest.approx(math.log(4 / 3))
    assert ce(s, s, torch.tensor([1])).item() == pytest.approx(math.log(4))


def test_kd_hand_computed_two_classes_batchmean() -> None:
    kd = make_loss("kd", {}, {}, temperature=1.0)
    # sample 1: p_t = softmax([ln 3, 0]) = [3/4, 1/4], p_s = [1/2, 1/2]
    # sample 2: student == teacher -> KL 0; batchmean divides the sum by the batch size 2
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    loss = kd(_out([[0.0, 0.0], [1.0, 2.0]]), _out([[LN3, 0.0], [1.0, 2.0]]), NO_TARGETS)
    assert loss.item() == pytest.approx(kl / 2)


def test_kd_default_temperature_is_4_and_scales_by_t_squared() -> None:
    kd = make_loss("kd", {}, {})
    assert kd.temperature == 4.0
    # teacher [4 ln 3, 0] / 4 = [ln 3, 0] -> p_t = [3/4, 1/4]; student uniform.
    kl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    loss = kd(_out([[0.0, 0.0]]), _out([[4 * LN3, 0.0]]), NO_TARGETS)
    assert loss.item() == pytest.approx(16 * kl)


def test_kd_temperature_softens_the_teacher() -> None:
    s, t = _out([[0.0, 0.0]]), _out([[2 * LN3, 0.0]])
    # T = 1: p_t = softmax([2 ln 3, 0]) = [9/10, 1/10]
    kl_t1 = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    # T = 2: p_t = softmax([ln 3, 0]) = [3/4, 1/4], times T^2 = 4
    kl_t2 = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    t1 = make_loss("kd", {}, {}, temperature=1)(s, t, NO_TARGETS).item()
    t2 = make_loss("kd", {}, {}, temperature=2)(s, t, NO_TARGETS).item()
    assert t1 == pytest.approx(kl_t1)
    assert t2 == pytest.approx(4 * kl_t2)
    # the softened KL itself shrinks: kl_t2 < kl_t1
    assert t2 / 4 < t1


def test_kd_identical_logits_is_zero() -> None:
    logits = torch.randn(4, 10)
    loss = make_loss("kd", {}, {})(Outputs(logits), Outputs(logits.clone()), NO_TARGETS)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_kd_gradient_reaches_student_never_teacher() -> None:
    s = torch.tensor([[0.0, 0.0]], requires_grad=True)
    t = torch.tensor([[LN3, 0.0]], requires_grad=True)
    make_loss("kd", {}, {}, temperature=1)(Outputs(s), Outputs(t), NO_TARGETS).backward()
    # d/ds KL(p_t || softmax(s)) = softmax(s) - p_t = [1/2 - 3/4, 1/2 - 1/4]
    torch.testing.assert_close(s.grad, torch.tensor([[-0.25, 0.25]]))
    assert t.grad is None


# --- hint -------------------------------------------------------------------------------------

S4 = {"stem": torch.Size([1, 1, 4, 4]), "s1": torch.Size([1, 1, 2, 2])}
T4 = {"t0": torch.Size([1, 2, 4, 4]), "t1": torch.Size([1, 2, 2, 2])}


def test_hint_auto_taps_are_the_deepest_and_regressor_maps_channels() -> None:
    hint = make_loss("hint", S4, T4)
    assert hint.student_taps == ["s1"] and hint.teacher_taps == ["t1"]
    conv, bn = hint.regressor
    assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (1, 2, (1, 1))
    assert conv.bias is None and isinstance(bn, nn.BatchNorm2d)


def test_hint_hand_computed() -> None:
    hint = make_loss("hint", S4, T4)
    _identity_regressor(hint)
    with torch.no_grad():
        hint.regressor[0].weight.copy_(torch.tensor([2.0, -1.0])[:, None, None, None])
    f_s = _map([[1, 2], [3, 4]])
    f_t = torch.zeros(1, 2, 2, 2)
    # regressed: channel 0 = 2 f, channel 1 = -f; sum f^2 = 30
    # MSE = (4 * 30 + 30) / 8 elements = 18.75
    loss = hint(_out([[0.0]], s1=f_s), _out([[0.0]], t1=f_t), NO_TARGETS)
    assert loss.item() == pytest.approx(18.75)


def test_hint_identity_regressor_equal_features_is_zero() -> None:
    shapes = {"f": torch.Size([2, 3, 4, 4])}
    hint = make_loss("hint", shapes, shapes)
    _identity_regressor(hint)
    f = torch.randn(2, 3, 4, 4)
    assert hint(_out([[0.0]], f=f), _out([[0.0]], f=f.clone()), NO_TARGETS).item() == 0.0


def test_hint_pools_the_larger_map_to_the_smaller() -> None:
    # student 4x4 -> pooled 2x2 block means of arange(16): [[2.5, 4.5], [10.5, 12.5]]
    hint = make_loss("hint", {"a": torch.Size([1, 1, 4, 4])}, {"b": torch.Size([1, 1, 2, 2])})
    _identity_regressor(hint)
    f_s = torch.arange(16.0).view(1, 1, 4, 4)
    loss = hint(_out([[0.0]], a=f_s), _out([[0.0]], b=torch.zeros(1, 1, 2, 2)), NO_TARGETS)
    assert loss.item() == pytest.approx((2.5**2 + 4.5**2 + 10.5**2 + 12.5**2) / 4)
    # teacher larger: the teacher is pooled instead; blocks matching the student -> 0
    hint = make_loss("hint", {"a": torch.Size([1, 1, 2, 2])}, {"b": torch.Size([1, 1, 4, 4])})
    _identity_regressor(hint)
    f_s = _map([[1, 2], [3, 4]])
    f_t = f_s.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    assert hint(_out([[0.0]], a=f_s), _out([[0.0]], b=f_t), NO_TARGETS).item() == 0.0


def test_hint_gradients_reach_student_and_regressor_not_teacher() -> None:
    hint = make_loss("hint", S4, T4, student_tap="stem", teacher_tap="t0")
    f_s = torch.randn(2, 1, 4, 4, requires_grad=True)
    f_t = torch.randn(2, 2, 4, 4, requires_grad=True)
    hint(_out([[0.0]], stem=f_s), _out([[0.0]], t0=f_t), NO_TARGETS).backward()
    assert f_s.grad is not None and f_s.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in hint.parameters())
    assert f_t.grad is None


def test_hint_missing_tap_lists_the_model_taps() -> None:
    with pytest.raises(SearchKDError) as err:
        make_loss("hint", S4, T4, teacher_tap="layer4")
    message = _one_line(err)
    assert "'layer4'" in message and "t0, t1" in message


def test_hint_rejects_non_spatial_taps() -> None:
    with pytest.raises(SearchKDError) as err:
        make_loss("hint", {"fc": torch.Size([1, 8])}, T4)
    assert "(1, 8)" in _one_line(err)


def test_missing_feature_at_forward_is_one_line() -> None:
    hint = make_loss("hint", S4, T4)
    with pytest.raises(SearchKDError) as err:
        hint(_out([[0.0]], stem=torch.zeros(1, 1, 4, 4)), _out([[0.0]]), NO_TARGETS)
    assert "'s1'" in _one_line(err)


# --- attention transfer -----------------------------------------------------------------------


def test_attention_map_hand_computed() -> None:
    # |f|^2 channel-mean of [[-2, 0], [0, 0]] is [4, 0, 0, 0] -> normalised [1, 0, 0, 0]
    torch.testing.assert_close(
        attention_map(_map([[-2, 0], [0, 0]])), torch.tensor([[1.0, 0, 0, 0]])
    )
    # two channels: mean of squares [[1, 1], [1, 1]] -> [1/2] * 4
    two = torch.tensor([[[1.0, 0], [1, 1]], [[1, 2**0.5], [1, 1]]])[None]
    torch.testing.assert_close(attention_map(two), torch.full((1, 4), 0.5))


def _at(shape_s: tuple[int, ...], shape_t: tuple[int, ...], **options: object) -> AttentionTransfer:
    return make_loss("at", {"s": torch.Size(shape_s)}, {"t": torch.Size(shape_t)}, **options)


def test_at_hand_computed_single_channel_2x2() -> None:
    # Q_s = normalise([1, 1, 0, 0]) = [1/√2, 1/√2, 0, 0]; Q_t = normalise([1, 1, 1, 1]) = [1/2]*4
    # mean (Q_s - Q_t)^2 = (2 (1/√2 - 1/2)^2 + 2 (1/2)^2) / 4 = (2 - √2) / 4
    expected = (2 - math.sqrt(2)) / 4
    s, t = _out([[0.0]], s=_map([[1, 1], [0, 0]])), _out([[0.0]], t=_map([[1, 1], [1, 1]]))
    assert _at((1, 1, 2, 2), (1, 1, 2, 2), beta=1)(s, t, NO_TARGETS).item() == pytest.approx(
        expected
    )
    # default beta is the published 1000
    assert _at((1, 1, 2, 2), (1, 1, 2, 2))(s, t, NO_TARGETS).item() == pytest.approx(
        1000 * expected
    )


def test_at_sums_over_pairs() -> None:
    shapes = {"a": torch.Size([1, 1, 2, 2]), "b": torch.Size([1, 1, 2, 2])}
    at = make_loss("at", shapes, shapes, beta=1)
    # pair a: [1, 0, 0, 0] vs [1/2] * 4 -> (0.25 + 3 * 0.25) / 4 = 0.25
    # pair b: identical maps -> 0; the published code sums pairs: 0.25 + 0
    s = _out([[0.0]], a=_map([[1, 0], [0, 0]]), b=_map([[3, 1], [2, 0]]))
    t = _out([[0.0]], a=_map([[1, 1], [1, 1]]), b=_map([[3, 1], [2, 0]]))
    assert at(s, t, NO_TARGETS).item() == pytest.approx(0.25)


def test_at_identical_and_rescaled_features_are_zero() -> None:
    at = _at((2, 4, 3, 3), (2, 8, 3, 3))
    f = torch.randn(2, 4, 3, 3)
    f_t = torch.cat([f, f], dim=1)  # wider teacher, same channel-mean energy per position
    same = at(_out([[0.0]], s=f), _out([[0.0]], t=f_t), NO_TARGETS)
    assert same.item() == pytest.approx(0.0, abs=1e-6)
    # the per-sample L2 normalisation makes the loss blind to activation scale
    scaled = at(_out([[0.0]], s=3 * f), _out([[0.0]], t=f_t), NO_TARGETS)
    assert scaled.item() == pytest.approx(0.0, abs=1e-6)


def test_at_spatial_mismatch_pools_larger_features() -> None:
    # student 4x4 made of constant 2x2 blocks pools to [[1, 0], [0, 0]]
    f_s = _map([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    f_t = _map([[1, 1], [1, 1]])
    loss = _at((1, 1, 4, 4), (1, 1, 2, 2), beta=1)(
        _out([[0.0]], s=f_s), _out([[0.0]], t=f_t), NO_TARGETS
    )
    # [1, 0, 0, 0] vs [1/2]*4 -> 4 * 0.25 / 4
    assert loss.item() == pytest.approx(0.25)
    # teacher larger: teacher pooled to the student's 2x2 size
    f_t = torch.arange(16.0).view(1, 1, 4, 4)
    f_s = _map([[2.5, 4.5], [10.5, 12.5]])
    loss = _at((1, 1, 2, 2), (1, 1, 4, 4))(_out([[0.0]], s=f_s), _out([[0.0]], t=f_t), NO_TARGETS)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_at_gradients_reach_student_never_teacher() -> None:
    at = _at((2, 3, 4, 4), (2, 5, 2, 2))
    f_s = torch.randn(2, 3, 4, 4, requires_grad=True)
    f_t = torch.randn(2, 5, 2, 2, requires_grad=True)
    at(_out([[0.0]], s=f_s), _out([[0.0]], t=f_t), NO_TARGETS).backward()
    assert f_s.grad is not None and f_s.grad.abs().sum() > 0
    assert f_t.grad is None


def test_auto_pairs_nearest_relative_depth_without_reuse() -> None:
    assert auto_pairs(["s1", "s2", "s3"], ["t1", "t2", "t3"]) == [
        ("s1", "t1"),
        ("s2", "t2"),
        ("s3", "t3"),
    ]
    # teacher shallower list: depths t = 0, 1 -> student depths 0, 1
    assert auto_pairs(["s1", "s2", "s3"], ["t1", "t2"]) == [("s1", "t1"), ("s3", "t2")]
    # fewer student taps than teacher taps: 2 pairs, never a student tap twice
    assert auto_pairs(["s1", "s2"], ["t1", "t2", "t3", "t4"]) == [("s1", "t1"), ("s2", "t4")]
    # 5 student taps at depths 0, 1/4, 1/2, 3/4, 1 vs teacher 0, 1/2, 1
    assert auto_pairs([f"s{i}" for i in range(5)], ["t0", "t1", "t2"]) == [
        ("s0", "t0"),
        ("s2", "t1"),
        ("s4", "t2"),
    ]
    # a lone tap is the deepest
    assert auto_pairs(["s"], ["t0", "t1", "t2"]) == [("s", "t2")]
    assert auto_pairs(["s0", "s1", "s2"], ["t"]) == [("s2", "t")]
    # ties (student depths 0, 1/3, 2/3, 1 vs teacher 0, 1/2, 1: 1/2 is between s1 and s2) go deeper
    assert auto_pairs(["s0", "s1", "s2", "s3"], ["t0", "t1", "t2"])[1] == ("s2", "t1")


@pytest.mark.parametrize("n_s", range(1, 7))
@pytest.mark.parametrize("n_t", range(1, 7))
def test_auto_pairs_invariants(n_s: int, n_t: int) -> None:
    students, teachers = [f"s{i}" for i in range(n_s)], [f"t{i}" for i in range(n_t)]
    pairs = auto_pairs(students, teachers)
    assert len(pairs) == min(n_s, n_t)
    assert len({s for s, _ in pairs}) == len(pairs) and len({t for _, t in pairs}) == len(pairs)
    # order preserved: shallow pairs with shallow, deepest with deepest
    assert [s for s, _ in pairs] == sorted((s for s, _ in pairs), key=students.index)
    assert [t for _, t in pairs] == sorted((t for _, t in pairs), key=teachers.index)
    assert pairs[-1] == (students[-1], teachers[-1])


def test_at_auto_and_explicit_pairs_declare_taps() -> None:
    s = {f"s{i}": torch.Size([1, 4, 8 // 2**i, 8 // 2**i]) for i in range(3)}
    t = {f"t{i}": torch.Size([1, 8, 8 // 2**i, 8 // 2**i]) for i in range(2)}
    at = make_loss("at", s, t)
    assert at.pairs == [("s0", "t0"), ("s2", "t1")]
    assert at.student_taps == ["s0", "s2"] and at.teacher_taps == ["t0", "t1"]
    at = make_loss("at", s, t, pairs=[["s1", "t1"]])  # YAML gives lists
    assert at.pairs == [("s1", "t1")] and at.teacher_taps == ["t1"]


def test_at_bad_pairs_are_one_line_errors() -> None:
    s, t = {"s0": torch.Size([1, 1, 2, 2])}, {"t0": torch.Size([1, 1, 2, 2])}
    with pytest.raises(SearchKDError) as err:
        make_loss("at", s, t, pairs=[("s0", "layer3")])
    assert "'layer3'" in _one_line(err) and "t0" in str(err.value)
    for bad in ("nearest", [("s0",)], []):
        with pytest.raises(SearchKDError) as err:
            make_loss("at", s, t, pairs=bad)
        _one_line(err)
    with pytest.raises(SearchKDError) as err:
        make_loss("at", {}, t)
    _one_line(err)


# --- combined ---------------------------------------------------------------------------------


def test_combined_total_is_weighted_sum_and_terms_are_unweighted() -> None:
    loss = build_loss({"ce": 1.0, "kd": 0.5, "at": 0.0}, {"kd": {"temperature": 1.0}}, {}, {})
    assert list(loss.terms) == ["ce", "kd"]  # zero weight dropped before building
    s, t = _out([[0.0, 0.0]]), _out([[LN3, 0.0]])
    total, terms = loss(s, t, torch.tensor([0]))
    ce = math.log(2)
    kd = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert terms == pytest.approx({"ce": ce, "kd": kd})
    assert all(type(v) is float for v in terms.values())
    assert total.item() == pytest.approx(ce + 0.5 * kd)


def test_combined_taps_union_ordered_and_connectors() -> None:
    s = {"a": torch.Size([2, 2, 4, 4]), "b": torch.Size([2, 4, 2, 2])}
    t = {"x": torch.Size([2, 3, 4, 4]), "y": torch.Size([2, 6, 2, 2])}
    loss = build_loss(
        {"hint": 1.0, "at": 1.0, "kd": 1.0},
        {"hint": {"student_tap": "b"}, "at": {"pairs": [("a", "x"), ("b", "y")]}},
        s,
        t,
    )
    assert loss.student_taps == ["b", "a"]
    assert loss.teacher_taps == ["y", "x"]
    regressor = list(loss.terms["hint"].regressor.parameters())
    assert [id(p) for p in loss.connector_parameters()] == [id(p) for p in regressor]


def test_combined_gradients_reach_student_and_connectors_never_teacher() -> None:
    torch.manual_seed(0)
    s_shapes = {"a": torch.Size([2, 2, 4, 4]), "b": torch.Size([2, 4, 2, 2])}
    t_shapes = {"x": torch.Size([2, 3, 8, 8]), "y": torch.Size([2, 6, 4, 4])}
    loss = build_loss({"ce": 1.0, "kd": 0.9, "hint": 1.0, "at": 1.0}, None, s_shapes, t_shapes)
    student = Outputs(
        torch.randn(2, 5, requires_grad=True),
        {k: torch.randn(v, requires_grad=True) for k, v in s_shapes.items()},
    )
    teacher = Outputs(
        torch.randn(2, 5, requires_grad=True),
        {k: torch.randn(v, requires_grad=True) for k, v in t_shapes.items()},
    )
    total, terms = loss(student, teacher, torch.tensor([1, 3]))
    assert set(terms) == {"ce", "kd", "hint", "at"}
    total.backward()
    assert student.logits.grad is not None
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in student.features.values())
    assert loss.connector_parameters()
    assert all(p.grad is not None for p in loss.connector_parameters())
    assert teacher.logits.grad is None
    assert all(f.grad is None for f in teacher.features.values())


@pytest.mark.parametrize(
    ("weights", "options", "needle"),
    [
        ({"kd": -0.5}, None, "'kd' must be >= 0"),
        ({"kd": 0.0, "ce": 0}, None, "all loss weights are zero"),
        ({}, None, "no loss weights"),
        ({"kd": float("nan")}, None, "finite"),
        ({"kd": 1.0, "mmd": 0.0}, None, "known losses: ab, at, "),
        ({"kd": 1.0}, {"hint": {"student_tap": "a"}}, "without a weight"),
        ({"kd": 1.0}, {"kd": {"T": 2}}, "its options: temperature"),
    ],
)
def test_combined_config_errors_are_one_line(weights: dict, options: dict | None, needle: str):
    with pytest.raises(SearchKDError) as err:
        CombinedLoss(weights, options)
    assert needle in _one_line(err)


def test_combined_is_a_module_that_moves_with_the_student() -> None:
    shapes = {"f": torch.Size([1, 2, 2, 2])}
    loss = build_loss({"hint": 1.0}, None, shapes, shapes)
    loss.eval()
    assert not loss.terms["hint"].regressor[1].training
    assert "terms.hint.regressor.0.weight" in loss.state_dict()


def test_end_to_end_with_feature_taps_and_cached_teacher() -> None:
    """Hooks on unmodified models, teacher precomputed once, one step trains student+regressor."""
    from searchkd.features import FeatureTaps, feature_shapes

    torch.manual_seed(0)

    def net(width: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(2 * width, 4),
        )

    student, teacher = net(2), net(6)
    taps = ["1", "3"]
    loss = build_loss(
        {"ce": 0.1, "kd": 0.9, "hint": 1.0, "at": 1.0},
        None,
        feature_shapes(student, taps, (1, 3, 8, 8)),
        feature_shapes(teacher, taps, (1, 3, 8, 8)),
    )
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    with FeatureTaps(teacher, loss.teacher_taps, detach=True) as t_taps, torch.no_grad():
        cached = Outputs(teacher(x), t_taps.features)
    with FeatureTaps(student, loss.student_taps) as s_taps:
        total, terms = loss(Outputs(student(x), s_taps.features), cached, y)
    total.backward()
    assert set(terms) == {"ce", "kd", "hint", "at"}
    assert all(p.grad is not None for p in student.parameters())
    assert all(p.grad is not None for p in loss.connector_parameters())
    assert all(p.grad is None for p in teacher.parameters())
