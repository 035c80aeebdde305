"""The literature's distillation methods: hand-computed values on tiny tensors, degenerate
cases (student == teacher), gradients (student and connectors, never the teacher), config
errors, pre-ReLU taps in both spaces, and the proxy feeding CRD and OFD end to end."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from search_spaces import get_space
from searchkd.config import ProxyConfig, build_config
from searchkd.data import load_dataset
from searchkd.distill import LossContext, Outputs, build_loss, make_loss
from searchkd.distill.ab import boundary_loss
from searchkd.distill.crd import nce_loss
from searchkd.distill.fsp import fsp_matrix
from searchkd.distill.nst import polynomial_mmd
from searchkd.distill.ofd import bn_margin, partial_l2
from searchkd.errors import SearchKDError
from searchkd.features import FeatureTaps
from searchkd.proxy import compute_teacher_outputs, train_proxy

LN3 = math.log(3.0)
KL_34 = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)  # KL([3/4,1/4] || [1/2,1/2])


def _t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def _out(logits=None, indices=None, ensemble=(), **features: torch.Tensor) -> Outputs:
    logits = _t([[0.0, 0.0]]) if logits is None else logits
    return Outputs(logits, dict(features), indices, list(ensemble))


def _identity(connector: nn.Module) -> None:
    """Make a 1x1 conv + BN connector the identity (BN in eval with mean 0, var 1, eps 0)."""
    conv, bn = connector
    with torch.no_grad():
        conv.weight.copy_(torch.eye(conv.out_channels, conv.in_channels)[:, :, None, None])
    bn.eps = 0.0
    bn.eval()


def _shapes(**shapes: tuple[int, ...]) -> dict[str, torch.Size]:
    return {name: torch.Size(shape) for name, shape in shapes.items()}


def _message(err: pytest.ExceptionInfo[SearchKDError]) -> str:
    assert "\n" not in str(err.value)
    return str(err.value)


Y = torch.zeros(1, dtype=torch.long)

# --- NST ------------------------------------------------------------------------------------


def test_nst_mmd_hand_computed_single_channel() -> None:
    # one channel each, so k_ss = k_tt = 1 and k_st = cos(s, t)^2
    s, t = _t([[[[1.0, 0.0]]]]), _t([[[[0.0, 1.0]]]])
    assert polynomial_mmd(s, t).item() == pytest.approx(2.0)
    s = _t([[[[1.0, 1.0]]]])
    t = _t([[[[1.0, 0.0]]]])  # cos = 1/sqrt(2)
    assert polynomial_mmd(s, t).item() == pytest.approx(1.0)
    nst = make_loss("nst", _shapes(a=(1, 1, 1, 2)), _shapes(b=(1, 1, 1, 2)))
    assert nst(_out(a=s), _out(b=t), Y).item() == pytest.approx(50.0)  # published beta


def test_nst_identical_or_rescaled_maps_cost_nothing() -> None:
    f = torch.randn(2, 3, 4, 4)
    nst = make_loss("nst", _shapes(a=(1, 3, 4, 4)), _shapes(b=(1, 3, 8, 8)))
    assert nst(_out(a=f), _out(b=f * 5), Y).item() == pytest.approx(0.0, abs=1e-5)
    # the teacher's 8x8 map is pooled to 4x4: repeat each value 2x2 and nothing changes
    upsampled = f.repeat_interleave(2, 2).repeat_interleave(2, 3)
    assert nst(_out(a=f), _out(b=upsampled), Y).item() == pytest.approx(0.0, abs=1e-5)


# --- FSP ------------------------------------------------------------------------------------


def test_fsp_matrix_and_loss_hand_computed() -> None:
    f1, f2 = _t([[[[1.0, 2.0]]]]), _t([[[[3.0, 4.0]]]])
    assert fsp_matrix(f1, f2).item() == pytest.approx((1 * 3 + 2 * 4) / 2)
    shapes = _shapes(a=(1, 1, 1, 2), b=(1, 1, 1, 2))
    fsp = make_loss("fsp", shapes, shapes, pairs=[["a", "a"], ["b", "b"]])
    loss = fsp(_out(a=f1, b=torch.zeros_like(f2)), _out(a=f1, b=f2), Y)
    assert loss.item() == pytest.approx(5.5**2)
    assert fsp(_out(a=f1, b=f2), _out(a=f1, b=f2), Y).item() == 0.0


def test_fsp_mismatched_channels_error_or_connector() -> None:
    s = _shapes(s1=(1, 2, 4, 4), s2=(1, 3, 2, 2))
    t = _shapes(t1=(1, 4, 4, 4), t2=(1, 3, 2, 2))
    with pytest.raises(SearchKDError) as err:
        make_loss("fsp", s, t)
    assert "s1 (2) vs t1 (4)" in _message(err) and "connector: true" in str(err.value)
    fsp = make_loss("fsp", s, t, connector=True)
    assert isinstance(fsp.connectors[0], nn.Sequential) and isinstance(
        fsp.connectors[1], nn.Identity
    )
    student = {"s1": torch.randn(2, 2, 4, 4, requires_grad=True), "s2": torch.randn(2, 3, 2, 2)}
    teacher = {k: torch.randn(2, *v[1:], requires_grad=True) for k, v in t.items()}
    fsp(_out(**student), _out(**teacher), Y).backward()
    assert student["s1"].grad is not None and fsp.connectors[0][0].weight.grad is not None
    assert all(v.grad is None for v in teacher.values())


def test_fsp_needs_two_stages() -> None:
    with pytest.raises(SearchKDError, match="at least two"):
        make_loss("fsp", _shapes(a=(1, 1, 2, 2)), _shapes(b=(1, 1, 2, 2)))


# --- RKD and DarkRank -----------------------------------------------------------------------


def test_rkd_distance_hand_computed() -> None:
    s = _t([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])  # distances 1, 2, 1: mean 4/3
    t = _t([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # distances 1, 1, sqrt 2: mean (2 + sqrt 2)/3
    mu_t = (2 + math.sqrt(2)) / 3
    gaps = [0.75 - 1 / mu_t, 1.5 - 1 / mu_t, 0.75 - math.sqrt(2) / mu_t]  # all |gap| < 1
    expected = 2 * sum(0.5 * g * g for g in gaps) / 9  # smooth-L1 mean over the 3x3 matrix
    rkd = make_loss("rkd", _shapes(e=(1, 2)), _shapes(e=(1, 2)), angle_weight=0)
    assert rkd(_out(e=s), _out(e=t), Y).item() == pytest.approx(25 * expected, rel=1e-5)


def test_rkd_angle_hand_computed() -> None:
    s = _t([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    t = _t([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    # cosines differ at apex 0 (1 vs 0), apex 1 (-1 vs 1/sqrt2), apex 2 (1 vs 1/sqrt2),
    # each twice: smooth-L1 gives 2 * (0.5 + (1 + 1/sqrt2 - 0.5) + 0.5 * (1 - 1/sqrt2)^2) = 3.5
    rkd = make_loss("rkd", _shapes(e=(1, 2)), _shapes(e=(1, 2)), distance_weight=0)
    assert rkd(_out(e=s), _out(e=t), Y).item() == pytest.approx(50 * 3.5 / 27, rel=1e-5)


def test_rkd_is_zero_for_a_scaled_teacher_and_pools_maps() -> None:
    f = torch.randn(5, 3, 2, 2)
    rkd = make_loss("rkd", _shapes(a=(1, 3, 2, 2)), _shapes(b=(1, 3, 2, 2)))
    assert rkd(_out(a=f), _out(b=3 * f), Y).item() == pytest.approx(0.0, abs=1e-5)


def test_darkrank_hand_computed_identical_embeddings() -> None:
    # unit vectors at 0, 90, 180 degrees; alpha = beta = 1 so S = -distance
    e = _t([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    dr = make_loss("darkrank", _shapes(e=(1, 2)), _shapes(e=(1, 2)), alpha=1, beta=1)
    end = math.log(math.exp(-math.sqrt(2)) + math.exp(-2)) + math.sqrt(2)  # queries 0 and 2
    expected = (2 * end + math.log(2)) / 3  # query 1: a tie, log 2
    assert dr(_out(e=e), _out(e=e), Y).item() == pytest.approx(expected, rel=1e-5)


def test_darkrank_prefers_the_teachers_order() -> None:
    torch.manual_seed(0)
    t = torch.randn(6, 4)
    dr = make_loss("darkrank", _shapes(e=(1, 4)), _shapes(e=(1, 4)))
    same = dr(_out(e=t), _out(e=t), Y).item()
    shuffled = dr(_out(e=t[torch.tensor([3, 5, 0, 1, 4, 2])]), _out(e=t), Y).item()
    assert same < shuffled


# --- CRD ------------------------------------------------------------------------------------


def test_nce_loss_hand_computed() -> None:
    # N = 2, K = 1: noise K/N = 0.5; -(log(1 / 1.5) + log(0.5 / 1.0))
    loss = nce_loss(_t([[1.0, 0.5]]), num_samples=2)
    assert loss.item() == pytest.approx(-(math.log(1 / 1.5) + math.log(0.5)), rel=1e-5)
    assert nce_loss(_t([[4.0, 0.5]]), 2) < loss  # a stronger positive costs less


def _crd(n: int = 12, **options) -> nn.Module:
    labels = torch.arange(n) % 3
    return make_loss(
        "crd",
        _shapes(s=(1, 4, 2, 2)),
        _shapes(t=(1, 6, 2, 2)),
        LossContext(train_targets=labels),
        **{"negatives": 5, "feature_dim": 8, **options},
    )


def test_crd_negatives_come_from_other_classes() -> None:
    crd = _crd()
    targets = torch.tensor([0, 1, 2, 0])
    negatives = crd.sample_negatives(targets)
    assert negatives.shape == (4, 5)
    assert (crd.labels[negatives] != targets[:, None]).all()


def test_crd_gradients_reach_student_and_heads_never_teacher_and_banks_move() -> None:
    crd = _crd()
    f_s = torch.randn(4, 4, 2, 2, requires_grad=True)
    f_t = torch.randn(4, 6, 2, 2, requires_grad=True)
    idx = torch.tensor([0, 4, 5, 7])
    before = crd.bank_student.clone()
    loss = crd(_out(s=f_s, indices=idx), _out(t=f_t, indices=idx), Y)
    loss.backward()
    assert torch.isfinite(loss) and f_s.grad is not None and f_s.grad.abs().sum() > 0
    assert f_t.grad is None
    assert crd.embed_student.linear.weight.grad is not None
    assert crd.embed_teacher.linear.weight.grad is not None  # the teacher's head trains
    moved = (crd.bank_student != before).any(dim=1)
    assert moved[idx].all() and not moved[[1, 2, 3]].any()
    assert torch.allclose(crd.bank_student[idx].norm(dim=1), torch.ones(4))


def test_crd_needs_indices_and_labels() -> None:
    crd = _crd()
    with pytest.raises(SearchKDError, match="indices"):
        crd(_out(s=torch.randn(2, 4, 2, 2)), _out(t=torch.randn(2, 6, 2, 2)), Y)
    with pytest.raises(SearchKDError, match="training labels"):
        make_loss("crd", _shapes(s=(1, 4)), _shapes(t=(1, 4)))


# --- OFD and AB -----------------------------------------------------------------------------


def test_ofd_margin_hand_computed() -> None:
    margin = bn_margin(_t([1.0, 2.0, 1.0]), _t([0.0, 0.0, 5.0]))
    phi0 = 1 / math.sqrt(2 * math.pi)
    # N(0, s^2): E[x | x < 0] = -s phi(0) / Phi(0); N(5, 1): P(x < 0) < 0.001, so -3 s
    assert margin.tolist() == pytest.approx([-phi0 / 0.5, -2 * phi0 / 0.5, -3.0], rel=1e-5)


def test_ofd_partial_l2_hand_computed() -> None:
    # (-2 vs -1): both "off" and the student more so -> free; (-0.5 vs -1): 0.25; (1 vs 2): 1
    assert partial_l2(_t([-2.0, -0.5, 1.0]), _t([-1.0, -1.0, 2.0])).item() == pytest.approx(1.25)


def _preact_context(s_channels: int = 2, t_channels: int = 2) -> LossContext:
    return LossContext(
        student_preact=_shapes(sp=(1, s_channels, 2, 2)),
        teacher_preact=_shapes(tp=(1, t_channels, 2, 2)),
        teacher_bn={"tp": (torch.ones(t_channels), torch.zeros(t_channels))},
    )


def test_ofd_hand_computed_and_zero_for_identical_features() -> None:
    ofd = make_loss("ofd", {}, {}, _preact_context(1, 1), beta=1.0)
    _identity(ofd.connectors[0])
    m = -2 * (1 / math.sqrt(2 * math.pi))  # margin of N(0, 1)
    s = _t([[[[-2.0, -0.5], [1.0, 0.0]]]])
    t = _t([[[[-1.0, -1.0], [2.0, 0.0]]]])  # clamped to [m, m, 2, 0]
    # -2 < m: free; (-0.5 - m)^2; (1 - 2)^2; 0 vs 0: 0; divided by the batch size 1
    expected = (-0.5 - m) ** 2 + 1.0
    assert ofd(_out(sp=s), _out(tp=t), Y).item() == pytest.approx(expected, rel=1e-5)
    positive = torch.rand(3, 1, 2, 2)
    assert ofd(_out(sp=positive), _out(tp=positive), Y).item() == 0.0


def test_ab_boundary_loss_hand_computed_and_zero_beyond_margin() -> None:
    s, t = _t([0.5, -2.0, 0.5, 2.0]), _t([-1.0, -1.0, 1.0, 1.0])
    assert boundary_loss(s, t, margin=1.0).item() == pytest.approx(1.5**2 + 0.5**2)
    ab = make_loss("ab", {}, {}, _preact_context(1, 1))
    _identity(ab.connectors[0])
    f = _t([[[[3.0, -3.0], [1.5, -1.5]]]])  # same signs, beyond the margin 1
    assert ab(_out(sp=f), _out(tp=f), Y).item() == 0.0
    # the published scale: 3/1000 per sample
    g = _t([[[[0.5, -2.0], [0.5, 2.0]]]])
    h = _t([[[[-1.0, -1.0], [1.0, 1.0]]]])
    assert ab(_out(sp=g), _out(tp=h), Y).item() == pytest.approx(0.003 * 2.5)


@pytest.mark.parametrize("name", ["ofd", "ab"])
def test_preact_losses_train_connectors_never_teacher(name: str) -> None:
    loss = make_loss(name, {}, {}, _preact_context(2, 3))
    f_s = torch.randn(2, 2, 2, 2, requires_grad=True)
    f_t = torch.randn(2, 3, 2, 2, requires_grad=True)
    loss(_out(sp=f_s), _out(tp=f_t), Y).backward()
    assert f_s.grad is not None and loss.connectors[0][0].weight.grad is not None
    assert f_t.grad is None


def test_preact_losses_without_preact_taps_are_one_line_errors() -> None:
    for name in ("ofd", "ab"):
        with pytest.raises(SearchKDError) as err:
            make_loss(name, {}, {})
        assert "pre-ReLU" in _message(err)
    context = LossContext(
        student_preact=_shapes(sp=(1, 2, 2, 2)), teacher_preact=_shapes(tp=(1, 2, 2, 2))
    )
    with pytest.raises(SearchKDError, match="batch-norm statistics"):
        make_loss("ofd", {}, {}, context)


# --- logit losses: ensemble, class-weighted, pixel-wise, bounded regression -------------------


def test_ensemble_kd_averages_the_teachers_distributions() -> None:
    ctx = LossContext(num_teachers=2)
    ens = make_loss("ensemble_kd", {}, {}, ctx, temperature=1.0)
    # teachers [3/4, 1/4] and [1/4, 3/4] average to [1/2, 1/2] = the student's: 0
    teacher = _out(_t([[LN3, 0.0]]), ensemble=[_t([[0.0, LN3]])])
    assert ens(_out(_t([[0.0, 0.0]])), teacher, Y).item() == pytest.approx(0.0, abs=1e-6)
    # two identical teachers: exactly KD
    teacher = _out(_t([[LN3, 0.0]]), ensemble=[_t([[LN3, 0.0]])])
    assert ens(_out(_t([[0.0, 0.0]])), teacher, Y).item() == pytest.approx(KL_34, rel=1e-5)
    with pytest.raises(SearchKDError, match="`ensemble:`"):
        make_loss("ensemble_kd", {}, {})


def test_weighted_kd_hand_computed_balanced_and_explicit() -> None:
    # labels 0,0,0,1: inverse frequencies 1/3, 1 -> normalised to mean 1: 0.5, 1.5
    ctx = LossContext(train_targets=torch.tensor([0, 0, 0, 1]))
    wkd = make_loss("weighted_kd", {}, {}, ctx, temperature=1.0)
    expected = 0.5 * 0.75 * math.log(1.5) + 1.5 * 0.25 * math.log(0.5)
    loss = wkd(_out(_t([[0.0, 0.0]])), _out(_t([[LN3, 0.0]])), Y)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    same = make_loss("weighted_kd", {}, {}, class_weights=[1, 3], temperature=1.0)
    assert same(_out(_t([[0.0, 0.0]])), _out(_t([[LN3, 0.0]])), Y).item() == pytest.approx(
        expected, rel=1e-5
    )
    assert wkd(_out(_t([[LN3, 0.0]])), _out(_t([[LN3, 0.0]])), Y).item() == pytest.approx(0.0)
    with pytest.raises(SearchKDError, match="2 class weights but the model predicts 3"):
        wkd(_out(_t([[0.0, 0.0, 0.0]])), _out(_t([[0.0, 0.0, 0.0]])), Y)


def test_pixel_kd_hand_computed_per_pixel_mean() -> None:
    pkd = make_loss("pixel_kd", {}, {})
    # (N=1, C=2, H=1, W=2): pixel 0 differs ([1/2,1/2] vs [3/4,1/4]), pixel 1 identical
    s = _t([[[[0.0, 1.0]], [[0.0, 2.0]]]])
    t = _t([[[[LN3, 1.0]], [[0.0, 2.0]]]])
    assert pkd(_out(s), _out(t), Y).item() == pytest.approx(10 * KL_34 / 2, rel=1e-5)
    assert pkd(_out(t), _out(t), Y).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(SearchKDError, match="one N x C"):
        pkd(_out(s), _out(t[:, :, :, :1]), Y)


def test_pairwise_similarity_hand_computed() -> None:
    pw = make_loss("pairwise", _shapes(a=(1, 2, 1, 2)), _shapes(b=(1, 2, 1, 2)))
    s = _t([[[[1.0, 0.0]], [[0.0, 1.0]]]])  # positions (1,0), (0,1): similarity I
    t = _t([[[[1.0, 2.0]], [[0.0, 0.0]]]])  # positions (1,0), (2,0): similarity all ones
    # squared differences sum to 2, / (H W)^2 = 4, / N = 1, times beta 0.5
    assert pw(_out(a=s), _out(b=t), Y).item() == pytest.approx(0.25)
    assert pw(_out(a=t), _out(b=3 * t), Y).item() == pytest.approx(0.0, abs=1e-6)


def test_bounded_regression_hand_computed() -> None:
    br = make_loss("bounded_regression", {}, {})
    y, t = _t([[0.0]]), _out(_t([[0.5]]))  # teacher error 0.25
    s = _t([[1.0]]).requires_grad_()
    loss = br(_out(s), t, y)
    assert loss.item() == pytest.approx(1.0)  # worse than the teacher: its squared error
    loss.backward()
    assert s.grad.item() == pytest.approx(2.0)
    assert br(_out(_t([[0.2]])), t, y).item() == 0.0  # better than the teacher: free
    margin = make_loss("bounded_regression", {}, {}, margin=0.3)
    assert margin(_out(_t([[0.2]])), t, y).item() == pytest.approx(0.04)
    with pytest.raises(SearchKDError, match="regression targets"):
        br(_out(_t([[0.2, 0.1]])), _out(_t([[0.2, 0.1]])), torch.tensor([1]))


# --- gradients of every feature loss ----------------------------------------------------------

S_SHAPES = _shapes(s0=(1, 3, 4, 4), s1=(1, 5, 2, 2))
T_SHAPES = _shapes(t0=(1, 4, 4, 4), t1=(1, 6, 2, 2))
FEATURE_LOSSES = {
    "nst": {},
    "fsp": {"connector": True},
    "rkd": {},
    "darkrank": {},
    "pairwise": {},
    "at": {},
    "hint": {},
}


@pytest.mark.parametrize("name", sorted(FEATURE_LOSSES))
def test_feature_losses_grad_reaches_student_and_connectors_never_teacher(name: str) -> None:
    torch.manual_seed(0)
    loss = make_loss(name, S_SHAPES, T_SHAPES, **FEATURE_LOSSES[name])
    student = {k: torch.randn(4, *v[1:], requires_grad=True) for k, v in S_SHAPES.items()}
    teacher = {k: torch.randn(4, *v[1:], requires_grad=True) for k, v in T_SHAPES.items()}
    value = loss(_out(**student), _out(**teacher), Y)
    value.backward()
    assert torch.isfinite(value) and value.item() > 0
    grads = [student[tap].grad for tap in loss.student_taps]
    assert any(g is not None for g in grads)
    assert all(torch.isfinite(g).all() for g in grads if g is not None)
    assert all(t.grad is None for t in teacher.values())
    for param in loss.parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all()


# --- config -----------------------------------------------------------------------------------


def test_losses_block_becomes_weights_and_options() -> None:
    config = build_config(
        overrides={"losses": {"ce": 0.1, "kd": 0.9, "crd": {"weight": 0.8, "negatives": 64}}}
    )
    assert config.loss.weights == {"ce": 0.1, "kd": 0.9, "crd": 0.8}
    assert config.loss.options == {"crd": {"negatives": 64}}
    same = build_config(
        overrides={
            "loss": {"weights": {"ce": 0.1, "kd": 0.9, "crd": 0.8}, "options": config.loss.options}
        }
    )
    assert same.search_settings() == config.search_settings()


@pytest.mark.parametrize(
    "overrides,needle",
    [
        ({"losses": {"kd": {"temperature": 2}}}, "needs a `weight`"),
        ({"losses": [1, 2]}, "must map loss names"),
        ({"losses": {"kd": 1.0}, "loss": {"weights": {"kd": 1.0}}}, "not both"),
    ],
)
def test_losses_block_errors_are_one_line(overrides: dict, needle: str) -> None:
    with pytest.raises(SearchKDError) as err:
        build_config(overrides=overrides)
    assert needle in _message(err) and "Value error" not in str(err.value)


def test_old_configs_keep_their_study_fingerprint() -> None:
    settings = build_config().search_settings()
    assert "ensemble" not in settings and "seed" not in settings["teacher"]
    with_ensemble = build_config(overrides={"ensemble": [{"seed": 1}]}).search_settings()
    assert with_ensemble["ensemble"][0]["seed"] == 1


# --- pre-ReLU taps in the spaces --------------------------------------------------------------


def _tapped(space_name: str, arch: dict) -> tuple:
    """Stage and pre-ReLU features of one forward of a 16 px input."""
    space = get_space(space_name)
    model = space.build(arch, 1, 16, 10).eval()
    preact = space.preact_taps(arch)
    stages = space.feature_taps(arch)
    assert len(preact) == len(stages)
    with FeatureTaps(model, [*stages, *preact], detach=True) as taps, torch.no_grad():
        model(torch.randn(2, 1, 16, 16))
        return taps.features, preact, stages, model


def test_resnet_preact_taps_are_the_sums_before_the_relu() -> None:
    arch = get_space("resnet").canonical()["resnet20_w16s2"]
    features, preact, stages, model = _tapped("resnet", arch)
    for tap, stage in zip(preact, stages, strict=True):
        assert (features[tap] < 0).any()
        assert torch.equal(torch.relu(features[tap]), features[stage])
        assert isinstance(model.get_submodule(preact[tap]), nn.BatchNorm2d)


def test_preact_resnet_and_mobilenet_taps_are_not_overwritten_in_place() -> None:
    wrn = get_space("resnet").canonical()["wrn_16_2"]
    features, preact, _, _ = _tapped("resnet", wrn)
    assert all((features[tap] < 0).any() for tap in preact)
    space = get_space("mobilenet")
    decisions = {n: d.choices[0] for n, d in space.decisions().items()}
    decisions.update(s1_block="conv", s2_block="mbconv", s2_expansion=3)
    arch = space.from_decisions(decisions)
    features, preact, _, model = _tapped("mobilenet", arch)
    assert list(preact)[:2] == ["stages.0.0.body.conv.1", "stages.1"]
    for tap, bn in preact.items():
        assert (features[tap] < 0).any(), tap  # a ReLU output would have no negatives
        assert isinstance(model.get_submodule(bn), nn.BatchNorm2d)


# --- the proxy feeds indices, pre-ReLU taps and BN statistics --------------------------------


@pytest.mark.slow
def test_proxy_trains_with_crd_ofd_and_kd_together() -> None:
    data = load_dataset("digits", None, 0, None)
    resnet, mobile = get_space("resnet"), get_space("mobilenet")
    t_arch = resnet.canonical()["resnet20"]
    teacher = resnet.build(t_arch, data.in_channels, data.resolution, data.num_classes)
    cached = compute_teacher_outputs(
        teacher, data.train_x, resnet.feature_taps(t_arch), preact=resnet.preact_taps(t_arch)
    )
    assert set(cached.bn) == set(resnet.preact_taps(t_arch)) and cached.preact
    arch = mobile.smallest()
    student = mobile.build(arch, data.in_channels, data.resolution, data.num_classes)
    result = train_proxy(
        student,
        data,
        cached,
        mobile.feature_taps(arch),
        {"ce": 0.1, "kd": 0.9, "crd": 0.8, "ofd": 1.0},
        {"crd": {"negatives": 32, "feature_dim": 16}},
        ProxyConfig(epochs=1, batch_size=64, train_subset=256),
        seed=0,
        student_preact=list(mobile.preact_taps(arch)),
    )
    assert set(result.loss_terms) == {"ce", "kd", "crd", "ofd"}
    assert all(math.isfinite(v) and v > 0 for v in result.loss_terms.values())


def test_build_loss_keeps_its_signature_and_takes_a_context() -> None:
    student, teacher = _out(_t([[0.0, 0.0]])), _out(_t([[LN3, 0.0]]), ensemble=[_t([[LN3, 0.0]])])
    old = build_loss({"kd": 1.0}, {"kd": {"temperature": 1.0}}, {}, {})
    new = build_loss(
        {"ensemble_kd": 1.0},
        {"ensemble_kd": {"temperature": 1.0}},
        {},
        {},
        LossContext(num_teachers=2),
    )
    assert old(student, teacher, Y)[0].item() == pytest.approx(KL_34, rel=1e-5)
    assert new(student, teacher, Y)[0].item() == pytest.approx(KL_34, rel=1e-5)


# --- the search: a `losses:` block, an ensemble, errors before any trial -----------------------


@pytest.mark.slow
def test_search_with_losses_block_and_ensemble(shared_run_dir) -> None:
    from runners.local import LocalRunner
    from searchkd.search import Search
    from searchkd.study import trained_trials
    from tests.conftest import tiny_settings

    settings = tiny_settings(
        shared_run_dir,
        study="methods",
        losses={
            "ce": 0.1,
            "ensemble_kd": 0.9,
            "crd": {"weight": 0.8, "negatives": 64},
            "ofd": 1.0,
            "nst": 1.0,
        },
        ensemble=[{"arch": "resnet20", "epochs": 1, "batch_size": 64, "seed": 1}],
    )
    search = Search(build_config(overrides=settings), log=lambda m: None)
    assert len(search.teacher_outputs.ensemble) == 1
    assert search.teacher_outputs.preact and search.teacher_outputs.bn
    LocalRunner(progress=False).run(search, 1)
    attrs = trained_trials(search.study)[0].user_attrs
    for term in ("ce", "ensemble_kd", "crd", "ofd", "nst"):
        assert math.isfinite(attrs[f"loss_{term}"])

    bad_tap = tiny_settings(
        shared_run_dir, study="bad-tap", losses={"hint": {"weight": 1, "teacher_tap": "fc"}}
    )
    with pytest.raises(SearchKDError) as err:
        Search(build_config(overrides=bad_tap), log=lambda m: None)
    assert "teacher tap 'fc'" in _message(err) and "stages.0, stages.1, stages.2" in str(err.value)
