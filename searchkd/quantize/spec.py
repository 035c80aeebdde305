"""What a quantised student is: activation and weight bit widths, the weight grid, the
training variant. One frozen value that the retrainer, the model card and ``load_student``
all read, so the network rebuilt from a bundle is the one that was trained."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from searchkd.errors import SearchKDError

ACTIVATION_BITS = (8,)  # ONNX Runtime's int8 kernels read uint8 activations
WEIGHT_BITS = (8, 4)  # 4-bit weights are stored in int8 tensors, run by the int8 kernels
VARIANTS = {  # how weights are rounded while training; gradients go straight through
    "ste": "weights rounded to nearest, straight-through gradients to full-precision weights",
    "polino": (
        "quantized distillation (Polino et al. 2018): weights rounded stochastically, "
        "straight-through gradients to full-precision weights"
    ),
}
EMA_MOMENTUM = 0.01  # activation ranges follow the training batches slowly


@dataclass(frozen=True)
class QuantSpec:
    """Activations: ``bits``-bit unsigned, one asymmetric range per tensor. Weights:
    ``weight_bits``-bit signed, symmetric, one scale per output channel (``per_channel``)
    or per tensor. ``variant`` names how the weights are rounded while training."""

    bits: int = 8
    weight_bits: int = 8
    per_channel: bool = True
    variant: str = "ste"
    momentum: float = EMA_MOMENTUM

    def __post_init__(self) -> None:
        if self.bits not in ACTIVATION_BITS:
            raise SearchKDError(
                f"quantisation: {self.bits}-bit activations are not supported; activations "
                "run in 8 bits (uint8, as ONNX Runtime's int8 kernels read them); 4 bits is for "
                "weights only"
            )
        if self.weight_bits not in WEIGHT_BITS:
            raise SearchKDError(
                f"quantisation: {self.weight_bits}-bit weights are not supported; use "
                f"{' or '.join(map(str, WEIGHT_BITS))}"
            )
        if self.variant not in VARIANTS:
            raise SearchKDError(
                f"quantisation: unknown variant {self.variant!r}; use {' or '.join(VARIANTS)}"
            )
        if not 0 < self.momentum <= 1:
            raise SearchKDError(f"quantisation: momentum {self.momentum} must be in (0, 1]")

    @property
    def tag(self) -> str:
        """A short name for folders and file stems: ``int8``, ``int8-w4-polino``."""
        parts = [f"int{self.bits}"]
        if self.weight_bits != self.bits:
            parts.append(f"w{self.weight_bits}")
        if not self.per_channel:
            parts.append("pertensor")
        if self.variant != "ste":
            parts.append(self.variant)
        return "-".join(parts)

    @property
    def precision(self) -> str:
        grid = "per channel" if self.per_channel else "per tensor"
        return (
            f"uint{self.bits} activations (asymmetric, per tensor), int{self.weight_bits} "
            f"weights (symmetric, {grid})"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Any, where: str = "quantization") -> QuantSpec:
        if not isinstance(values, dict) or set(values) - set(cls.__dataclass_fields__):
            raise SearchKDError(f"{where}: {values!r} is not a quantisation spec; re-export it")
        return cls(**values)

    @classmethod
    def parse(cls, text: str, **options: Any) -> QuantSpec:
        """``--quantize int8``: the CLI's name for the activation precision."""
        if not (text.startswith("int") and text[3:].isdigit()):
            raise SearchKDError(f"--quantize {text!r}: write it as int8")
        return cls(bits=int(text[3:]), **options)
