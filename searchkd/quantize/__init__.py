"""Quantised students: quantisation-aware training with distillation, post-training
quantisation as its baseline, and the int8 ONNX export checked against PyTorch."""

from searchkd.quantize.prepare import (
    prepare_qat,
    quant_spec,
    quantize_for_training,
)
from searchkd.quantize.spec import QuantSpec

__all__ = ["QuantSpec", "prepare_qat", "quant_spec", "quantize_for_training"]
