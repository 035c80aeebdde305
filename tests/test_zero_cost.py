"""Training-free scores: NASWOT by hand, DisWOT's degenerate case, no side effects."""

import math

import pytest
import torch
from torch import nn

from searchkd.zero_cost import (
    class_correlation,
    diswot_score,
    final_features,
    naswot_score,
    sample_relation,
    teacher_signature,
)


class OneRelu(nn.Module):
    """x -> ReLU(x) -> flatten -> linear: the ReLU code of a sample is sign(x) > 0."""

    def __init__(self):
        super().__init__()
        self.act = nn.ReLU()
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(self.act(x).flatten(1))


def test_naswot_by_hand():
    # Codes (units on): a = [1,1,0], b = [1,0,0], c = [0,0,1].
    x = torch.tensor([[1.0, 2.0, -1.0], [3.0, -1.0, -2.0], [-1.0, -1.0, 4.0]])
    x = x.view(3, 3, 1, 1)
    # K[i][j] = units where i and j agree: diagonal 3; (a,b) 2; (a,c) 0; (b,c) 1.
    kernel = torch.tensor([[3.0, 2.0, 0.0], [2.0, 3.0, 1.0], [0.0, 1.0, 3.0]], dtype=torch.float64)
    expected = math.log(abs(torch.linalg.det(kernel).item()))  # det = 12
    assert naswot_score(OneRelu(), x) == pytest.approx(expected)
    assert expected == pytest.approx(math.log(12))


def conv_net(width: int, seed: int, bn: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    layers = [nn.Conv2d(1, width, 3, padding=1)]
    if bn:
        layers.append(nn.BatchNorm2d(width))
    layers += [nn.ReLU(), nn.Conv2d(width, 8, 3, padding=1), nn.ReLU()]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))


def test_diswot_is_zero_for_the_teacher_itself_and_negative_otherwise():
    x = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    teacher = conv_net(16, seed=1)
    signature = teacher_signature(teacher, x)
    assert diswot_score(teacher, signature, x) == pytest.approx(0.0, abs=1e-6)
    assert diswot_score(conv_net(4, seed=2), signature, x) < -1e-3


def test_matrices_are_normalised_whatever_the_feature_size():
    x = torch.randn(4, 1, 8, 8)
    for width in (4, 32):
        features, weight = final_features(conv_net(width, seed=0), x)
        assert features.shape == (4, 8, 8, 8) and weight.shape == (5, 8)
        assert class_correlation(features, weight).shape == (5, 5)
        relation = sample_relation(features)
        assert torch.allclose(relation.norm(dim=1), torch.ones(4))


def test_scores_leave_the_model_unchanged():
    model = conv_net(8, seed=0, bn=True).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(5, 1, 8, 8)
    naswot_score(model, x)
    diswot_score(model, teacher_signature(conv_net(8, seed=1), x), x)
    assert not model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_a_model_without_a_classifier_or_relu_is_refused():
    with pytest.raises(ValueError, match="nn.Linear"):
        final_features(nn.Sequential(nn.Conv2d(1, 2, 3)), torch.randn(2, 1, 4, 4))
    with pytest.raises(ValueError, match="ReLU"):
        naswot_score(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), torch.randn(2, 1, 2, 2))
