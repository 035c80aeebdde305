"""Fake quantisation: the forward pass rounds values onto the integer grid the int8 runtime
will use, the backward pass lets the gradient through as if nothing had been rounded (the
straight-through estimator of Bengio et al. 2013), except where a value was clipped.

Training therefore feels the rounding error while the optimiser still updates full-precision
"shadow" weights; the deployed network holds only their rounded values.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from searchkd.quantize.spec import QuantSpec

UINT8 = (0, 255)


def fake_quantize(
    x: Tensor,
    scale: Tensor,
    zero_point: Tensor | int,
    qmin: int,
    qmax: int,
    stochastic: bool = False,
) -> Tensor:
    """``(clamp(round(x / scale) + zero_point, qmin, qmax) - zero_point) * scale``.

    Rounding is half to even, as ONNX Runtime's QuantizeLinear rounds; ``stochastic`` rounds
    up with probability equal to the fraction instead (unbiased in expectation). The
    gradient is 1 where ``x`` lies in the representable range ``[(qmin - zero_point) * scale,
    (qmax - zero_point) * scale]`` and 0 outside: the clipped straight-through estimator.
    ``scale`` and ``zero_point`` broadcast against ``x`` (per tensor or per channel) and get
    no gradient."""
    scale = scale.detach()
    low, high = (qmin - zero_point) * scale, (qmax - zero_point) * scale
    clipped = torch.clamp(x, low, high)
    steps = x.detach() / scale
    steps = torch.floor(steps + torch.rand_like(steps)) if stochastic else torch.round(steps)
    rounded = (torch.clamp(steps + zero_point, qmin, qmax) - zero_point) * scale
    return clipped + (rounded - clipped).detach()


def weight_scale(weight: Tensor, bits: int, per_channel: bool) -> Tensor:
    """The symmetric scale that maps the largest magnitude (of each output channel) to
    ``2**(bits-1) - 1``: zero stays exactly zero and the weight zero point is 0, which is
    what ONNX Runtime's int8 convolution kernels expect."""
    magnitude = weight.detach().abs()
    if per_channel:
        shape = (-1,) + (1,) * (weight.dim() - 1)
        largest = magnitude.reshape(weight.shape[0], -1).amax(dim=1).reshape(shape)
    else:
        largest = magnitude.max()
    return largest.clamp_min(torch.finfo(weight.dtype).tiny) / (2 ** (bits - 1) - 1)


def quantize_weight(weight: Tensor, spec: QuantSpec, training: bool) -> Tensor:
    """The weight as the runtime will hold it (``spec.weight_bits``, symmetric). Polino's
    variant rounds stochastically while training; evaluation always rounds to nearest."""
    qmax = 2 ** (spec.weight_bits - 1) - 1
    scale = weight_scale(weight, spec.weight_bits, spec.per_channel)
    stochastic = training and spec.variant == "polino"
    return fake_quantize(weight, scale, 0, -qmax, qmax, stochastic)


def integer_weight(weight: Tensor, spec: QuantSpec) -> tuple[Tensor, Tensor]:
    """(int8 tensor, scale) of the weight the runtime holds: what :func:`quantize_weight`
    computes in evaluation, as integers (4-bit values lie in [-7, 7] of an int8 tensor)."""
    qmax = 2 ** (spec.weight_bits - 1) - 1
    scale = weight_scale(weight, spec.weight_bits, spec.per_channel)
    integers = torch.clamp(torch.round(weight.detach() / scale), -qmax, qmax)
    return integers.to(torch.int8), scale.flatten() if spec.per_channel else scale


class Dequantize(torch.autograd.Function):
    """``integers * scale`` (per output channel when ``scale`` is a vector), exported as
    ONNX DequantizeLinear of the integer tensor: the exported file stores int8 weights."""

    @staticmethod
    def forward(ctx, integers: Tensor, scale: Tensor) -> Tensor:
        shape = (-1,) + (1,) * (integers.dim() - 1) if scale.dim() else ()
        return integers.float() * scale.reshape(shape)

    @staticmethod
    def symbolic(g, integers, scale):  # torch.onnx's graph and values
        channels = scale.type().sizes()
        zero = torch.zeros(channels, dtype=torch.int8)
        zero_point = g.op("Constant", value_t=zero)
        if channels:
            return g.op("DequantizeLinear", integers, scale, zero_point, axis_i=0)
        return g.op("DequantizeLinear", integers, scale, zero_point)


class ActivationQuantizer(nn.Module):
    """Fake-quantises a tensor to uint8 with one asymmetric range per tensor, as ONNX
    Runtime's static quantisation does for activations.

    The range is learned from the data: while training, an exponential moving average of
    each batch's min and max (Jacob et al. 2018, §3.1); while calibrating (post-training
    quantisation), the min and max over all calibration batches. It always contains 0, so
    zero (padding, ReLU's floor) is exact. Until a range has been observed the tensor passes
    through unchanged."""

    def __init__(self, momentum: float) -> None:
        super().__init__()
        self.momentum = momentum
        self.calibrating = False
        self.enabled = True  # False: pass through, observing nothing (see float_twin)
        self.register_buffer("low", torch.zeros(()))
        self.register_buffer("high", torch.zeros(()))
        self.register_buffer("observed", torch.zeros((), dtype=torch.bool))

    def forward(self, x: Tensor) -> Tensor:
        if not self.enabled:
            return x
        if self.calibrating or self.training:
            self.observe(x.detach())
        if not bool(self.observed):
            return x
        scale, zero_point = self.qparams()
        if torch.onnx.is_in_onnx_export():  # QuantizeLinear/DequantizeLinear, constant params
            return torch.fake_quantize_per_tensor_affine(x, float(scale), int(zero_point), *UINT8)
        return fake_quantize(x, scale, zero_point, *UINT8)

    @torch.no_grad()
    def observe(self, x: Tensor) -> None:
        low, high = x.min().float(), x.max().float()
        if not bool(self.observed):
            self.low.copy_(low)
            self.high.copy_(high)
            self.observed.fill_(True)
        elif self.calibrating:
            self.low.copy_(torch.minimum(self.low, low))
            self.high.copy_(torch.maximum(self.high, high))
        else:
            self.low.lerp_(low, self.momentum)
            self.high.lerp_(high, self.momentum)

    def reset(self) -> None:
        self.observed.fill_(False)

    def qparams(self) -> tuple[Tensor, Tensor]:
        """(scale, zero point) of the range, widened to contain 0; the zero point is an
        integer in [0, 255] held in a float tensor."""
        low, high = self.low.clamp(max=0), self.high.clamp(min=0)
        scale = ((high - low) / (UINT8[1] - UINT8[0])).clamp_min(torch.finfo(torch.float32).eps)
        zero_point = torch.clamp(torch.round(-low / scale), *UINT8)
        return scale, zero_point

    def extra_repr(self) -> str:
        if not bool(self.observed):
            return "unobserved"
        return f"range=[{float(self.low):.4g}, {float(self.high):.4g}]"
