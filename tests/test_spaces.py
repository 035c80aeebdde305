"""Search spaces: sampling, building, JSON round trips, validation, and the canonical
members checked against the reference implementations' exact parameter counts and the
published MACs."""

from __future__ import annotations

import copy
import json
import math
import warnings
from typing import Any

import optuna
import pytest
import torch
from torch import nn

from search_spaces import SPACES, get_space, load_architecture
from search_spaces.base import SearchSpace
from search_spaces.mobilenet import MobileNetSpace, kept_stride_steps, make_divisible
from search_spaces.resnet import ResNetSpace
from searchkd.errors import ArchitectureError

optuna.logging.set_verbosity(optuna.logging.WARNING)

# Exact parameter counts of the references: torchvision (mobilenet_v2, resnet18/34/50) and
# timm (mnasnet_a1 == semnasnet_100) at 3x224x224 with 1000 classes; RepDistiller's
# models/resnet.py and models/wrn.py at 3x32x32 with 100 classes.
REFERENCE_PARAMS = [
    ("mobilenet", "mobilenet_v2", 1000, 3_504_872),
    ("mobilenet", "mnasnet_a1", 1000, 3_887_038),
    ("resnet", "resnet18", 1000, 11_689_512),
    ("resnet", "resnet34", 1000, 21_797_672),
    ("resnet", "resnet50", 1000, 25_557_032),
    ("resnet", "resnet20", 100, 278_324),
    ("resnet", "resnet56", 100, 861_620),
    ("resnet", "resnet110", 100, 1_736_564),
    ("resnet", "resnet8x4", 100, 1_233_540),
    ("resnet", "resnet32x4", 100, 7_433_860),
    ("resnet", "wrn_16_2", 100, 703_284),
    ("resnet", "wrn_40_2", 100, 2_255_156),
    ("resnet", "resnet20_w32s2", 100, 1_096_196),
    ("resnet", "resnet20_w16s2", 100, 278_324),
]

# Published MACs at 224 px (papers / torchvision model cards) and what fvcore measures.
PUBLISHED_MACS = [
    ("mobilenet", "mobilenet_v2", 300e6, 300_774_272),
    ("mobilenet", "mnasnet_a1", 312e6, 311_579_072),
    ("resnet", "resnet18", 1.814e9, 1_814_073_344),
    ("resnet", "resnet34", 3.664e9, 3_663_761_408),
    ("resnet", "resnet50", 4.089e9, 4_089_184_256),
]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def fvcore_macs(model: nn.Module, shape: tuple[int, int, int]) -> int:
    """Conv + linear multiply-adds only, as the literature counts them.

    fvcore 0.1.5 keeps its own batch_norm / adaptive_avg_pool2d handles even after
    ``set_op_handle(op, None)``, so we clear all handles and register only these.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fvcore.nn import FlopCountAnalysis
        from fvcore.nn.jit_handles import addmm_flop_jit, conv_flop_jit, linear_flop_jit

        model.eval()
        with torch.no_grad():
            analysis = FlopCountAnalysis(model, torch.zeros(1, *shape))
            analysis.clear_op_handles().set_op_handle(
                **{
                    "aten::_convolution": conv_flop_jit,
                    "aten::linear": linear_flop_jit,
                    "aten::addmm": addmm_flop_jit,
                }
            )
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            return int(analysis.total())


def random_archs(space: SearchSpace, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Sample through a real in-memory study, as the search does."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    archs = []
    for _ in range(n):
        trial = study.ask()
        archs.append(space.sample(trial))
        study.tell(trial, 0.0)
    return archs


def stage_output_sizes(model: nn.Module, taps: list[str], x: torch.Tensor) -> list[tuple]:
    sizes: list[tuple] = []
    handles = [
        model.get_submodule(t).register_forward_hook(
            lambda _m, _i, out: sizes.append(tuple(out.shape[1:]))
        )
        for t in taps
    ]
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for h in handles:
            h.remove()
    return sizes


SPACE_NAMES = sorted(SPACES)


# --- registry ------------------------------------------------------------------------------


def test_registry_names_and_unknown_space() -> None:
    assert isinstance(get_space("mobilenet"), MobileNetSpace)
    assert isinstance(get_space("resnet"), ResNetSpace)
    with pytest.raises(ArchitectureError) as err:
        get_space("vit")
    message = str(err.value)
    assert "\n" not in message and "mobilenet" in message and "resnet" in message


def test_load_architecture_returns_validated_copy() -> None:
    arch = get_space("resnet").canonical()["resnet20"]
    space, loaded = load_architecture(json.loads(json.dumps(arch)))
    assert space.name == "resnet" and loaded == arch
    loaded["stages"][0]["depth"] = 99
    assert arch["stages"][0]["depth"] == 3


@pytest.mark.parametrize(
    "obj", [None, [], "resnet20", {"version": 1}, {"space": "vgg", "version": 1}]
)
def test_load_architecture_rejects_non_architectures(obj: Any) -> None:
    with pytest.raises(ArchitectureError) as err:
        load_architecture(obj)
    assert "\n" not in str(err.value)


# --- decisions and sampling ------------------------------------------------------------------


def test_mobilenet_decisions_are_fixed_and_ordered() -> None:
    decisions = MobileNetSpace().decisions()
    kinds = ("block", "kernel", "expansion", "se", "layers", "width")
    assert list(decisions) == [f"s{i}_{k}" for i in range(1, 8) for k in kinds] + ["head_width"]
    assert decisions["s1_block"].choices == ("dsconv", "mbconv", "conv")
    assert decisions["s3_kernel"].choices == (3, 5, 7)
    assert decisions["s3_expansion"].choices == (1, 3, 6)
    assert decisions["s3_se"].choices == (0.0, 0.25)
    assert decisions["s3_layers"].choices == (1, 2, 3, 4)
    assert decisions["s3_width"].choices == (0.25, 0.5, 0.75, 1.0)
    assert decisions["head_width"].choices == (0.25, 0.5, 1.0)
    assert MobileNetSpace().size() == (3 * 3 * 3 * 2 * 4 * 4) ** 7 * 3


def test_resnet_decisions_are_fixed_and_ordered() -> None:
    decisions = ResNetSpace().decisions()
    assert list(decisions) == ["block", "stem", "width", "s1_depth", "s2_depth", "s3_depth"]
    assert decisions["block"].choices == ("basic", "bottleneck")
    assert decisions["stem"].choices == ("cifar_s2", "cifar")
    assert decisions["width"].choices == (16, 32, 64)
    assert ResNetSpace().size() == 2 * 2 * 3 * 4**3


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_fixed_trial_matches_from_decisions(name: str) -> None:
    space = get_space(name)
    values = {n: d.choices[-1] for n, d in space.decisions().items()}
    assert space.sample(optuna.trial.FixedTrial(values)) == space.from_decisions(values)


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_from_decisions_rejects_bad_values(name: str) -> None:
    space = get_space(name)
    values = {n: d.choices[0] for n, d in space.decisions().items()}
    first = next(iter(values))
    with pytest.raises(ArchitectureError, match=first):
        space.from_decisions({k: v for k, v in values.items() if k != first})
    with pytest.raises(ArchitectureError, match=first):
        space.from_decisions({**values, first: "nope"})


def test_sampled_widths_are_multiples_of_eight() -> None:
    assert [make_divisible(16 * m) for m in (0.25, 0.5, 0.75, 1.0)] == [8, 8, 16, 16]
    assert [make_divisible(96 * m) for m in (0.25, 0.5, 0.75, 1.0)] == [24, 48, 72, 96]
    for arch in random_archs(MobileNetSpace(), 10):
        assert all(s["channels"] % 8 == 0 and s["channels"] >= 8 for s in arch["stages"])


@pytest.mark.parametrize("name", SPACE_NAMES)
@pytest.mark.parametrize("shape,classes", [((1, 40, 40), 10), ((3, 32, 32), 100)])
def test_sample_build_forward(name: str, shape: tuple[int, int, int], classes: int) -> None:
    space = get_space(name)
    torch.manual_seed(0)
    for arch in random_archs(space, 3, seed=len(shape) + classes):
        space.validate(arch)
        model = space.build(arch, shape[0], shape[1], classes)
        out = model(torch.randn(2, *shape))
        assert out.shape == (2, classes)
        assert torch.isfinite(out).all()
        modules = dict(model.named_modules())
        assert all(tap in modules for tap in space.feature_taps(arch))


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_build_at_224(name: str) -> None:
    """Random members only count parameters at 224 px; the smallest also runs forward."""
    space = get_space(name)
    for arch in random_archs(space, 2, seed=7):
        assert n_params(space.build(arch, 3, 224, 1000)) > 0
    model = space.build(space.smallest(), 3, 224, 1000).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 1000)


# --- JSON round trip -----------------------------------------------------------------------


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_json_round_trip_rebuilds_the_same_network(name: str) -> None:
    space = get_space(name)
    members = {
        "compact": ["plain16x2", "ds16"],
        "mobilenet": ["mnasnet_a1"],
        "mobilenet-reduced": [],
        "resnet": ["wrn_16_2", "resnet20_w32s2"],
    }[name]
    archs = random_archs(space, 2, seed=3) + [space.canonical()[m] for m in members]
    for arch in archs:
        loaded = json.loads(json.dumps(arch))
        assert loaded == arch
        _, loaded = load_architecture(loaded)
        torch.manual_seed(0)
        a = space.build(arch, 1, 40, 10).eval()
        b = space.build(loaded, 1, 40, 10).eval()
        assert n_params(a) == n_params(b)
        b.load_state_dict(a.state_dict())
        x = torch.randn(2, 1, 40, 40)
        with torch.no_grad():
            torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


# --- canonical members ---------------------------------------------------------------------


@pytest.mark.parametrize("space_name,member,classes,expected", REFERENCE_PARAMS)
def test_canonical_parameter_counts(
    space_name: str, member: str, classes: int, expected: int
) -> None:
    space = get_space(space_name)
    arch = space.canonical()[member]
    resolution = 224 if classes == 1000 else 32
    assert n_params(space.build(arch, 3, resolution, classes)) == expected


@pytest.mark.parametrize("space_name,member,published,measured", PUBLISHED_MACS)
def test_canonical_macs_match_published(
    space_name: str, member: str, published: float, measured: int
) -> None:
    space = get_space(space_name)
    arch = space.canonical()[member]
    macs = fvcore_macs(space.build(arch, 3, 224, 1000), (3, 224, 224))
    assert macs == measured
    assert abs(macs - published) / published < 0.02
    if isinstance(space, MobileNetSpace):
        assert space.macs(arch, 224) == macs


def test_canonical_members_validate_and_have_taps() -> None:
    for space in SPACES.values():
        for name, arch in space.canonical().items():
            space.validate(arch)
            model = space.build(arch, 3, 32, 10)
            modules = dict(model.named_modules())
            taps = space.feature_taps(arch)
            present = [i for i, s in enumerate(arch["stages"]) if s.get("layers", 1)]
            assert taps == [f"stages.{i}" for i in present], name  # not the vanished ones
            assert all(tap in modules for tap in taps), name


def test_default_teacher_ends_at_5x5_on_40px() -> None:
    space = get_space("resnet")
    arch = space.canonical()["resnet20_w32s2"]
    model = space.build(arch, 1, 40, 10)
    sizes = stage_output_sizes(model, space.feature_taps(arch), torch.randn(1, 1, 40, 40))
    assert sizes == [(32, 20, 20), (64, 10, 10), (128, 5, 5)]


# --- stride adaptation ----------------------------------------------------------------------


def test_kept_stride_steps() -> None:
    table = {224: 5, 128: 5, 96: 5, 64: 4, 40: 4, 32: 3, 28: 3, 8: 1, 7: 1, 3: 0, 2: 0}
    assert {r: kept_stride_steps(r, 5) for r in table} == table


@pytest.mark.parametrize(
    "shape,final", [((1, 40, 40), 3), ((3, 32, 32), 4), ((3, 28, 28), 4), ((3, 64, 64), 4)]
)
def test_mobilenet_strides_adapt_to_small_inputs(shape: tuple[int, int, int], final: int) -> None:
    space = MobileNetSpace()
    arch = space.canonical()["mobilenet_v2"]
    model = space.build(arch, shape[0], shape[1], 10)
    sizes = stage_output_sizes(model, space.feature_taps(arch), torch.randn(1, *shape))
    assert sizes[-1] == (320, final, final)


def test_mobilenet_keeps_all_strides_at_224() -> None:
    space = MobileNetSpace()
    arch = space.smallest()
    model = space.build(arch, 3, 224, 1000)
    x = torch.randn(1, 3, 224, 224)
    sizes = stage_output_sizes(model, space.feature_taps(arch), x)
    assert [s[1] for s in sizes] == [112, 56, 28, 14, 14, 7, 7]
    assert model(x).shape == (1, 1000)


def test_mobilenet_drops_latest_strides_first() -> None:
    space = MobileNetSpace()
    arch = space.smallest()
    model = space.build(arch, 1, 40, 10)
    assert model.stem[0].stride == (2, 2)
    sizes = stage_output_sizes(model, space.feature_taps(arch), torch.randn(1, 1, 40, 40))
    assert [s[1] for s in sizes] == [20, 10, 5, 3, 3, 3, 3]


# --- costs ----------------------------------------------------------------------------------


def test_mobilenet_closed_form_macs_match_fvcore() -> None:
    space = MobileNetSpace()
    for arch in random_archs(space, 3, seed=11):
        model = space.build(arch, 1, 40, 10)
        assert space.macs(arch, 40, in_channels=1, num_classes=10) == fvcore_macs(
            model, (1, 40, 40)
        )


def test_mobilenet_smallest_has_fewest_macs() -> None:
    space = MobileNetSpace()
    smallest = space.smallest()
    assert smallest == space.from_decisions({n: d.choices[0] for n, d in space.decisions().items()})
    for resolution, channels, classes in ((224, 3, 1000), (40, 1, 10)):
        floor = space.macs(smallest, resolution, channels, classes)
        for arch in random_archs(space, 30, seed=resolution):
            assert space.macs(arch, resolution, channels, classes) >= floor


def hook_macs(model: nn.Module, shape: tuple[int, int, int]) -> int:
    """Conv + linear MACs from forward hooks: no tracing, so cheap enough for many models."""
    total = 0

    def count(module: nn.Module, _inputs: Any, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
            total += out.numel() * per_output
        else:
            total += module.in_features * module.out_features

    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    handles = [m.register_forward_hook(count) for m in layers]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *shape))
    finally:
        for h in handles:
            h.remove()
    return total


def test_resnet_smallest_has_fewest_macs() -> None:
    space = ResNetSpace()
    shape = (1, 16, 16)
    smallest = space.build(space.smallest(), 1, 16, 10)
    floor = hook_macs(smallest, shape)
    assert floor == fvcore_macs(smallest, shape)
    for i, arch in enumerate(random_archs(space, 30, seed=5)):
        model = space.build(arch, 1, 16, 10)
        macs = hook_macs(model, shape)
        assert macs >= floor
        if i < 2:  # the hook count is the fvcore count
            assert macs == fvcore_macs(model, shape)


# --- validation -----------------------------------------------------------------------------


def _mutated(arch: dict[str, Any], path: tuple, value: Any) -> dict[str, Any]:
    """A copy with ``path`` set to ``value`` (or deleted when value is ``_DELETE``)."""
    out = copy.deepcopy(arch)
    target = out
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return out


_DELETE = object()

MOBILENET_BAD = [
    (("space",), "resnet"),
    (("version",), 2),
    (("version",), True),
    (("stem",), _DELETE),
    (("stem",), 0),
    (("head",), "1280"),
    (("act",), "gelu"),
    (("stages",), []),
    (("stages",), "7 stages"),
    (("stages", 0), [1, 2]),
    (("stages", 0, "block"), "fused"),
    (("stages", 0, "kernel"), 4),
    (("stages", 0, "kernel"), 3.0),
    (("stages", 1, "channels"), 0),
    (("stages", 1, "channels"), -8),
    (("stages", 1, "layers"), _DELETE),
    (("stages", 1, "stride"), 3),
    (("stages", 2, "se"), 2.0),
    (("stages", 2, "expansion"), "6"),
    (("stages", 2, "kernal"), 3),
    (("extra",), 1),
]

RESNET_BAD = [
    (("space",), "mobilenet"),
    (("version",), "1"),
    (("block",), "wide"),
    (("stem",), "imagenet_deep"),
    (("stem_channels",), 0),
    (("preact",), 1),
    (("preact",), _DELETE),
    (("stages",), []),
    (("stages", 0, "depth"), 0),
    (("stages", 0, "channels"), 16.0),
    (("stages", 2, "stride"), 4),
    (("stages", 2, "width"), 4),
]


@pytest.mark.parametrize(
    "space_name,path,value",
    [("mobilenet", p, v) for p, v in MOBILENET_BAD] + [("resnet", p, v) for p, v in RESNET_BAD],
)
def test_validate_rejects_malformed(space_name: str, path: tuple, value: Any) -> None:
    space = get_space(space_name)
    base = next(iter(space.canonical().values()))
    bad = _mutated(base, path, value)
    with pytest.raises(ArchitectureError) as err:
        space.validate(bad)
    message = str(err.value)
    assert "\n" not in message and message.startswith(space_name)
    if path[0] != "space":  # load_architecture dispatches to the named space
        with pytest.raises(ArchitectureError):
            load_architecture(bad)
    with pytest.raises(ArchitectureError):
        space.build(bad, 3, 32, 10)


def test_validate_accepts_hand_written_dicts() -> None:
    """The documented explicit format, written by hand (ints for SE, no 'act')."""
    stage = {"block": "mbconv", "kernel": 3, "expansion": 6, "se": 0, "layers": 1}
    arch = {
        "space": "mobilenet",
        "version": 1,
        "stem": 16,
        "head": 64,
        "stages": [{**stage, "channels": 16, "stride": 2}, {**stage, "channels": 24, "stride": 1}],
    }
    space, arch = load_architecture(arch)
    assert space.feature_taps(arch) == ["stages.0", "stages.1"]
    assert space.build(arch, 3, 32, 10)(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    assert math.isclose(
        space.macs(arch, 32, 3, 10), fvcore_macs(space.build(arch, 3, 32, 10), (3, 32, 32))
    )


# --- the compact space -------------------------------------------------------------------
COMPACT = get_space("compact")


def random_compact(n: int, seed: int) -> list[dict[str, Any]]:
    rng = __import__("random").Random(seed)
    space = COMPACT.decisions()
    return [
        COMPACT.from_decisions({k: rng.choice(d.choices) for k, d in space.items()})
        for _ in range(n)
    ]


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(1, 40, 40), (3, 32, 32), (1, 28, 28), (1, 8, 8)])
def test_compact_closed_form_macs_match_fvcore(shape: tuple[int, int, int]) -> None:
    members = [*COMPACT.canonical().values(), COMPACT.smallest(), *random_compact(12, 1)]
    for arch in members:
        model = COMPACT.build(arch, shape[0], shape[1], 10)
        assert COMPACT.macs(arch, shape[1], shape[0], 10) == fvcore_macs(model, shape)
        assert model(torch.zeros(2, *shape)).shape == (2, 10)


def test_compact_stages_may_vanish_and_the_smallest_is_stem_and_classifier() -> None:
    smallest = COMPACT.smallest()
    assert [s["layers"] for s in smallest["stages"]] == [0, 0, 0, 0]
    model = COMPACT.build(smallest, 1, 40, 10)
    assert n_params(model) == 1 * 9 * 8 + 2 * 8 + 8 * 10 + 10  # stem conv, its BN, linear
    assert COMPACT.feature_taps(smallest) == ["stem"]
    plain = COMPACT.canonical()["plain16"]
    assert COMPACT.feature_taps(plain) == ["stages.1", "stages.2", "stages.3"]


def test_compact_hand_designed_members_are_what_they_say() -> None:
    """plain16: a stride-2 3x3 stem of 16 channels, then one 3x3 conv per stage at 32, 64,
    128 channels and a linear classifier (five layers); ds16: a stride-1 stem and
    depthwise-separable blocks."""
    model = COMPACT.build(COMPACT.canonical()["plain16"], 1, 40, 10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (1, 16, (3, 3), (2, 2)),
        (16, 32, (3, 3), (2, 2)),
        (32, 64, (3, 3), (2, 2)),
        (64, 128, (3, 3), (2, 2)),
    ]
    ds = COMPACT.build(COMPACT.canonical()["ds16"], 1, 40, 10)
    depthwise = [m for m in ds.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert [m.in_channels for m in depthwise] == [16, 16, 32, 64]


def test_compact_resnets_are_the_cifar_resnets_of_the_resnet_space() -> None:
    """res12 is ResNet-8 (stride-2 stem of 12, one basic block per stage at 12, 24, 48) and
    res8x2 is ResNet-14 of width 8: the same convolutions, MACs and parameters."""
    resnet = get_space("resnet")
    for name, depth, width in (("res12", 1, 12), ("res8x2", 2, 8)):
        ours = COMPACT.build(COMPACT.canonical()[name], 1, 40, 10)
        theirs = resnet.build(
            {
                "space": "resnet", "version": 1, "block": "basic", "stem": "cifar_s2",
                "stem_channels": width, "preact": False,
                "stages": [
                    {"depth": depth, "channels": width * 2**k, "stride": 1 if k == 0 else 2}
                    for k in range(3)
                ],
            },
            1, 40, 10,
        )  # fmt: skip
        shapes = sorted(p.shape for p in ours.parameters())
        assert shapes == sorted(p.shape for p in theirs.parameters())
        assert fvcore_macs(ours, (1, 40, 40)) == fvcore_macs(theirs, (1, 40, 40))


def test_compact_basic_block_adds_its_shortcut_then_activates() -> None:
    arch = COMPACT.canonical()["res8"]
    model = COMPACT.build(arch, 1, 16, 10).eval()
    block = model.stages[1][0]  # 8 -> 16 channels, stride 2: a projection shortcut
    assert block.shortcut is not None
    x = torch.randn(2, 8, 8, 8)
    expected = torch.relu(block.body(x) + block.shortcut(x))
    assert torch.equal(block(x), expected)
    identity = model.stages[0][0]
    assert identity.shortcut is None
    assert torch.equal(identity(x), torch.relu(identity.body(x) + x))


def test_compact_version_1_architectures_still_load() -> None:
    """Version 2 only added the basic block: a saved version-1 student is still a member."""
    arch = copy.deepcopy(COMPACT.canonical()["plain16"])
    arch["version"] = 1
    COMPACT.validate(arch)
    assert COMPACT.build(arch, 1, 40, 10)(torch.zeros(1, 1, 40, 40)).shape == (1, 10)
    arch["version"] = 3
    with pytest.raises(ArchitectureError, match="'version' must be 1 or 2"):
        COMPACT.validate(arch)


def test_compact_decisions_that_build_the_same_network_give_one_architecture() -> None:
    """An empty stage's block, kernel, expansion and width build nothing: two decision
    vectors that differ only there are one architecture, so the study trains it once."""
    decisions = COMPACT.decisions_of(COMPACT.canonical()["res12"])
    assert decisions is not None and decisions["s4_layers"] == 0
    other = dict(decisions, s4_block="mbconv", s4_kernel=5, s4_expansion=4, s4_width=1.5)
    assert COMPACT.from_decisions(other) == COMPACT.from_decisions(decisions)
    mbconv = dict(decisions, s2_block="fused", s2_expansion=2)
    assert COMPACT.from_decisions(mbconv) != COMPACT.from_decisions(decisions)


def test_compact_decisions_of_inverts_from_decisions() -> None:
    for arch in [*COMPACT.canonical().values(), *random_compact(30, 2)]:
        decisions = COMPACT.decisions_of(arch)
        assert decisions is not None and COMPACT.from_decisions(decisions) == arch
    off_grid = copy.deepcopy(COMPACT.canonical()["plain16"])
    off_grid["stages"][1]["channels"] = 40  # valid to build, not a decision's choice
    assert COMPACT.decisions_of(off_grid) is None
    assert get_space("mobilenet").decisions_of(get_space("mobilenet").smallest()) is None


def test_compact_stride_two_stops_at_small_maps() -> None:
    """At 8 px a stride-2 stem and four stages would end below 1 px; steps stop at 3 px."""
    arch = COMPACT.canonical()["plain8x2"]
    model = COMPACT.build(arch, 1, 8, 10)
    x = model.stem(torch.zeros(1, 1, 8, 8))
    sizes = []
    for stage in model.stages:
        x = stage(x)
        sizes.append(x.shape[-1])
    assert sizes == [4, 2, 2, 2]


@pytest.mark.parametrize(
    "path, value",
    [
        (("stem_stride",), 3),
        (("stages",), []),
        (("stages", 0, "layers"), -1),
        (("stages", 1, "block"), "transformer"),
        (("stages", 2, "kernel"), 4),
        (("head",), -8),
    ],
)
def test_compact_validate_names_the_field(path: tuple, value: Any) -> None:
    arch = copy.deepcopy(COMPACT.canonical()["plain16"])
    target = arch
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ArchitectureError) as info:
        COMPACT.validate(arch)
    assert "\n" not in str(info.value) and "compact architecture" in str(info.value)
