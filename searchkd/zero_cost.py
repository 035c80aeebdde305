"""Training-free scores that rank untrained students, for skipping poor candidates.

``naswot`` (Mellor et al., ICML 2021, "Neural Architecture Search without Training"): a
network whose ReLUs already split a batch into many different activation patterns at
initialisation is predicted to train well. The score is log |det K|, K the N x N kernel
of agreements between the samples' binary ReLU codes (units that are on for both or off
for both). It does not look at the teacher.

``diswot``, after DisWOT (Dong et al., CVPR 2023, "Student Architecture Search for Distillation
WithOut Training"): a student whose *randomly initialised* features already relate
classes and samples the way the teacher's do is predicted to distil better. Two
distances, both between teacher and student on one fixed batch:

* semantic: the class-by-class correlation of class activation maps (each class's
  classifier weights applied to the final feature map, Zhou et al. 2016), and
* relation: the sample-by-sample similarity of final feature maps (as in
  similarity-preserving KD, Tung & Mori 2019).

The score is minus their sum: higher is predicted better. Both matrices are normalised,
so teacher and student may differ in channels and spatial size. It costs one forward
pass of the student on a batch, milliseconds, against seconds of proxy training.

Both run the student with batch statistics (batch norm in training mode), as an untrained
network would train, and restore its buffers afterwards. On the ground truth of
``benchmarks/ground_truth.py`` NASWOT ranked students far better than DisWOT did;
docs/ground_truth.md gives the numbers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@contextlib.contextmanager
def _batch_statistics(model: nn.Module, batch_stats: bool) -> Iterator[None]:
    """Run ``model`` in training mode (batch statistics) or eval mode, without grads, and
    leave its mode and buffers (batch-norm running statistics) as they were."""
    was_training = model.training
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    model.train(batch_stats)
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])


def final_features(model: nn.Module, x: Tensor, batch_stats: bool = False) -> tuple[Tensor, Tensor]:
    """(last 4-D feature map whose channels feed the classifier, classifier weight).

    The classifier is the model's last ``nn.Linear``; the feature map is the last module
    output of shape N x C x H x W with C equal to its input features and more than one
    pixel: the map right before global pooling in both of our spaces and in
    torchvision-style nets."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("zero-cost score: the model has no nn.Linear classifier")
    classifier = linears[-1]
    seen: list[Tensor] = []

    def keep(_module, _inputs, output) -> None:
        if isinstance(output, Tensor) and output.dim() == 4:
            if output.shape[1] == classifier.in_features:
                seen.append(output)

    hooks = [m.register_forward_hook(keep) for m in model.modules() if m is not model]
    try:
        with _batch_statistics(model, batch_stats):
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    if not seen:
        raise ValueError(
            "zero-cost score: found no N x C x H x W feature map feeding the classifier"
        )
    spatial = [f for f in seen if f.shape[2] * f.shape[3] > 1]  # not the pooled 1x1 map
    return (spatial or seen)[-1], classifier.weight.detach()


def class_correlation(features: Tensor, weight: Tensor) -> Tensor:
    """K x K cosine similarity between class activation maps, averaged over the batch."""
    cams = torch.einsum("kc,nchw->nkhw", weight, features).flatten(2)  # N x K x HW
    cams = F.normalize(cams, dim=2)
    return (cams @ cams.transpose(1, 2)).mean(0)


def sample_relation(features: Tensor) -> Tensor:
    """N x N sample similarity of flattened feature maps, rows L2-normalised."""
    flat = features.flatten(1)
    return F.normalize(flat @ flat.t(), dim=1)


def teacher_signature(teacher: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """The trained teacher's two matrices on ``x`` (eval mode): computed once per search."""
    features, weight = final_features(teacher, x)
    return class_correlation(features, weight), sample_relation(features)


def diswot_score(student: nn.Module, signature: tuple[Tensor, Tensor], x: Tensor) -> float:
    """Minus (semantic distance + relation distance) to the teacher's signature; the
    untrained ``student`` is left unchanged."""
    classes_t, relation_t = signature
    features, weight = final_features(student, x, batch_stats=True)
    if weight.shape[0] != classes_t.shape[0]:
        raise ValueError(
            f"zero-cost score: student has {weight.shape[0]} classes, teacher {classes_t.shape[0]}"
        )
    semantic = torch.linalg.norm(class_correlation(features, weight) - classes_t)
    relation = torch.linalg.norm(sample_relation(features) - relation_t)
    return -float(semantic / classes_t.shape[0] + relation / relation_t.shape[0])


def naswot_score(model: nn.Module, x: Tensor) -> float:
    """log |det K| of the samples' ReLU-code agreement kernel (NASWOT); higher is better."""
    codes: list[Tensor] = []

    def keep(_module, _inputs, output) -> None:
        codes.append((output > 0).flatten(1).to(torch.float64))

    relus = [m for m in model.modules() if isinstance(m, (nn.ReLU, nn.ReLU6))]
    if not relus:
        raise ValueError("naswot score: the model has no nn.ReLU / nn.ReLU6 modules")
    hooks = [m.register_forward_hook(keep) for m in relus]
    try:
        with _batch_statistics(model, True):
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    on = torch.cat(codes, dim=1)
    kernel = on @ on.t() + (1 - on) @ (1 - on).t()
    return float(torch.linalg.slogdet(kernel)[1])


SCORES = ("naswot", "diswot")
