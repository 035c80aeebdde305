"""Layers whose weights are fake-quantised: a convolution, a convolution with its batch
norm folded in, a linear layer. Each keeps the full-precision weight as its parameter (the
shadow weight the optimiser updates) and computes with its quantised copy.

For export, :meth:`QuantLayer.freeze` fixes the integer weights and float bias as constants,
so the ONNX file holds int8 weights rather than the arithmetic that rounds them."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from searchkd.quantize.fake import (
    ActivationQuantizer,
    Dequantize,
    fake_quantize,
    integer_weight,
    quantize_weight,
)
from searchkd.quantize.spec import QuantSpec


class QuantLayer(nn.Module, ABC):
    """What the quantised layers share: the weight and bias the runtime computes with."""

    spec: QuantSpec
    frozen: tuple[Tensor, Tensor, Tensor | None] | None = None
    enabled = True  # False: compute with the float (folded) weights, see float_twin
    input_quantizer: ActivationQuantizer | None = None

    def link_input(self, quantizer: ActivationQuantizer | None) -> None:
        """The quantiser whose output this layer reads (not a submodule: it belongs to the
        module that runs it, and is saved there)."""
        object.__setattr__(self, "input_quantizer", quantizer)

    @abstractmethod
    def folded_weight(self) -> Tensor:
        """The weight the layer computes with, batch norm folded in where it has one."""

    @abstractmethod
    def folded_bias(self) -> Tensor | None:
        """The bias that goes with :meth:`folded_weight`."""

    def quantized_weight(self) -> Tensor:
        if not self.enabled:
            return self.folded_weight()
        return quantize_weight(self.folded_weight(), self.spec, self.training)

    def quantized_bias(self) -> Tensor | None:
        """The bias on the int32 grid of input scale x weight scale, as the runtime stores
        it (float when the input's quantiser is unknown or has seen no data yet)."""
        bias, source = self.folded_bias(), self.input_quantizer
        if bias is None or not self.enabled or source is None or not bool(source.observed):
            return bias
        weight_scale = integer_weight(self.folded_weight(), self.spec)[1]
        scale = source.qparams()[0] * weight_scale.reshape(-1)
        return fake_quantize(bias, scale, 0, -(2**31), 2**31 - 1)

    def weight_and_bias(self) -> tuple[Tensor, Tensor | None]:
        if self.frozen is not None:
            integers, scale, bias = self.frozen
            return Dequantize.apply(integers, scale), bias
        return self.quantized_weight(), self.quantized_bias()

    @torch.no_grad()
    def freeze(self) -> None:
        bias = self.quantized_bias()
        self.frozen = (
            *integer_weight(self.folded_weight(), self.spec),
            None if bias is None else bias.detach().clone(),
        )

    def unfreeze(self) -> None:
        self.frozen = None


class QuantConv2d(nn.Conv2d, QuantLayer):
    """A :class:`~torch.nn.Conv2d` computing with quantised weights; the bias stays float
    here and becomes int32 in the exported model (scale: input scale x weight scale)."""

    @classmethod
    def wrap(cls, conv: nn.Conv2d, spec: QuantSpec) -> QuantConv2d:
        conv.__class__ = cls  # same parameters and settings, quantised forward
        conv.spec = spec
        return conv

    def folded_weight(self) -> Tensor:
        return self.weight

    def folded_bias(self) -> Tensor | None:
        return self.bias

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, *self.weight_and_bias())


class QuantLinear(nn.Linear, QuantLayer):
    """A :class:`~torch.nn.Linear` computing with quantised weights."""

    @classmethod
    def wrap(cls, linear: nn.Linear, spec: QuantSpec) -> QuantLinear:
        linear.__class__ = cls
        linear.spec = spec
        return linear

    def folded_weight(self) -> Tensor:
        return self.weight

    def folded_bias(self) -> Tensor | None:
        return self.bias

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, *self.weight_and_bias())


class QuantConvBn2d(QuantLayer):
    """A convolution and the batch norm after it, quantised as the runtime will run them:
    one convolution whose weight is ``w * gamma / sqrt(running_var + eps)``, then quantised,
    and whose bias absorbs the rest of the batch norm.

    Evaluation runs exactly that folded convolution. Training simulates it (Jacob et al.
    2018, §3.2, with the correction of Krishnamoorthi 2018): the convolution uses the
    quantised folded weight, its output is divided by the per-channel fold factor, and the
    batch norm then normalises with the batch's statistics (and updates its running ones).
    Training thus keeps batch norm's behaviour while its weights feel the rounding of the
    folded weights that will ship. The parameters keep their unfolded meaning (``conv``,
    ``bn``), so a trained float network is prepared without conversion."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d, spec: QuantSpec) -> None:
        super().__init__()
        self.conv, self.bn, self.spec = conv, bn, spec

    def fold_factor(self) -> Tensor:
        return self.bn.weight / torch.sqrt(self.bn.running_var + self.bn.eps)

    def folded_weight(self) -> Tensor:
        return self.conv.weight * self.fold_factor().reshape(-1, 1, 1, 1)

    def folded_bias(self) -> Tensor:
        factor = self.fold_factor()
        bias = self.bn.bias - self.bn.running_mean * factor
        return bias if self.conv.bias is None else bias + self.conv.bias * factor

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return self.conv._conv_forward(x, *self.weight_and_bias())
        factor = self.fold_factor().reshape(1, -1, 1, 1)
        out = self.conv._conv_forward(x, self.quantized_weight(), None) / factor
        if self.conv.bias is not None:
            out = out + self.conv.bias.reshape(1, -1, 1, 1)
        return self.bn(out)
