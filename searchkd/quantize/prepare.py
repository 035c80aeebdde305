"""Turn a float student into its quantisation-aware twin, with fake quantisers where ONNX
Runtime's int8 execution rounds.

An int8 runtime quantises tensors, not layers: every input of an int8 kernel (convolution,
matrix product, addition, multiplication, average pooling) is uint8, each kernel writes
uint8, and a ReLU (or ReLU6) after a kernel is folded into its output range. So each
module's ``forward`` is traced with ``torch.fx``, one module at a time with its submodules
as leaves, and rewritten:

* a ``Conv2d`` followed by a ``BatchNorm2d`` becomes one :class:`QuantConvBn2d` (the batch
  norm's place is kept by an ``Identity``, so its path still names the pre-activation);
* other ``Conv2d``/``Linear`` layers get quantised weights;
* the output of every int8 op is quantised once, after the activations that follow it;
  an input of an int8 op that comes from a float op (a sigmoid, a mean, a flatten) is
  quantised where it enters. A flatten thus gets a second quantiser with the range of the
  first (the same values pass), which is how ONNX Runtime's quantiser writes it too: int8
  kernels only fuse with a DequantizeLinear right before them.

Tracing module by module keeps every module path (and the hooks distillation places on
them) as it was. Every traced module takes and returns quantised tensors, so each is
rewritten knowing only its own graph. The network's input is quantised; its logits stay
float (distillation reads them; ONNX Runtime runs the classifier on the dequantised
features).
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import fx, nn

from searchkd.errors import SearchKDError, first_line
from searchkd.quantize.fake import ActivationQuantizer
from searchkd.quantize.layers import QuantConv2d, QuantConvBn2d, QuantLayer, QuantLinear
from searchkd.quantize.spec import QuantSpec

SPEC_ATTRIBUTE = "quantization"

# What a node does to quantisation, in ONNX Runtime's terms.
INT8_OP = "int8"  # an int8 kernel: quantised inputs, quantised output
ACTIVATION = "activation"  # folded into the int8 op right before it, else a float op
FLOAT_OP = "float"  # runs in float: its output is not quantised
SUBMODULE = "submodule"  # a traced module: quantised in, quantised out
NOT_A_TENSOR = "value"  # sizes and shapes

_INT8_MODULES = (nn.Conv2d, nn.Linear, QuantConvBn2d, nn.AdaptiveAvgPool2d, nn.AvgPool2d)
_ACTIVATION_MODULES = (nn.ReLU, nn.ReLU6, nn.Identity)  # Identity: a batch norm's place
_TRANSPARENT_MODULES = (nn.Identity, nn.Dropout)  # no op in the exported graph
_INT8_FUNCTIONS = {operator.add, torch.add, operator.mul, torch.mul}
_ACTIVATION_FUNCTIONS = {torch.relu, F.relu, F.relu6}
_ACTIVATION_METHODS = {"relu"}
_VALUE_METHODS = {"size", "dim"}


class _OneLevel(fx.Tracer):
    """Traces a module's own ``forward``; every submodule it calls stays one node."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return True


def prepare_qat(
    model: nn.Module,
    bits: int = 8,
    weight_bits: int = 8,
    per_channel: bool = True,
    variant: str = "ste",
) -> fx.GraphModule:
    """A quantisation-aware copy of ``model`` (which is left as it was); see the module
    docstring for where it quantises. Unsupported bit widths are a one-line
    :class:`SearchKDError`."""
    spec = QuantSpec(bits, weight_bits, per_channel, variant)
    return quantize_for_training(model, spec)


def quantize_for_training(model: nn.Module, spec: QuantSpec) -> fx.GraphModule:
    """:func:`prepare_qat` with a :class:`QuantSpec`: what the retrainer calls on a freshly
    built student, and ``load_student`` on a rebuilt one, before loading its weights."""
    copied = copy.deepcopy(model)
    for module in copied.modules():
        if isinstance(module, (nn.ReLU, nn.ReLU6)):
            module.inplace = False  # a quantiser may read the tensor an in-place op writes
    prepared = _rewrite(copied, spec, is_root=True, path=type(model).__name__)
    _link_inputs(prepared, [])
    setattr(prepared, SPEC_ATTRIBUTE, spec)
    return prepared


def quant_spec(model: nn.Module) -> QuantSpec | None:
    """The spec a prepared model was quantised with; None for a float model."""
    return getattr(model, SPEC_ATTRIBUTE, None)


def activation_quantizers(model: nn.Module) -> Iterable[ActivationQuantizer]:
    return (m for m in model.modules() if isinstance(m, ActivationQuantizer))


@contextmanager
def float_twin(model: nn.Module) -> Iterator[nn.Module]:
    """The prepared ``model`` computing in float while the context lasts: quantisers pass
    through, layers use their (folded) float weights. In evaluation this is the float
    network it was prepared from, batch norms folded: the fp32 reference a quantised
    student's latency and accuracy are compared with."""
    switches = [m for m in model.modules() if isinstance(m, (ActivationQuantizer, QuantLayer))]
    for module in switches:
        module.enabled = False
    try:
        yield model
    finally:
        for module in switches:
            module.enabled = True


def _rewrite(module: nn.Module, spec: QuantSpec, is_root: bool, path: str) -> fx.GraphModule:
    try:
        graph = _OneLevel().trace(module)
    except Exception as exc:  # fx reports untraceable Python in many types
        raise SearchKDError(
            f"cannot prepare {path} for quantisation-aware training: its forward does not "
            f"trace ({type(exc).__name__}: {first_line(exc, 120)})"
        ) from None
    calls = [n for n in graph.nodes if n.op == "call_module"]
    for node in calls:
        child = module.get_submodule(node.target)
        if _is_composite(child) and not isinstance(child, fx.GraphModule):  # once if shared
            module.set_submodule(node.target, _rewrite(child, spec, False, f"{path}.{node.target}"))
    _fold_batch_norms(module, graph, spec)
    for node in calls:
        child = module.get_submodule(node.target)
        if type(child) is nn.Conv2d:
            module.set_submodule(node.target, QuantConv2d.wrap(child, spec))
        elif type(child) is nn.Linear:
            module.set_submodule(node.target, QuantLinear.wrap(child, spec))
    _Placement(module, graph, spec, is_root).run()
    graph.lint()
    return fx.GraphModule(module, graph, class_name=type(module).__name__)


def _link_inputs(module: fx.GraphModule, sources: list[ActivationQuantizer | None]) -> None:
    """Tell every quantised layer which quantiser produced its input (``sources``: those of
    this module's inputs): the runtime stores a bias in int32 at input scale x weight
    scale, and the layer rounds its bias the same way."""
    known = dict(zip(_inputs(module), sources, strict=False))  # unknown ones: no quantiser
    for node in module.graph.nodes:
        if node.op != "call_module":
            continue
        target = module.get_submodule(node.target)
        if isinstance(target, QuantLayer):
            target.link_input(_source(module, node.args[0], known))
        elif isinstance(target, fx.GraphModule):
            _link_inputs(target, [_source(module, arg, known) for arg in node.args])


def _source(
    module: fx.GraphModule, node: object, known: dict[fx.Node, ActivationQuantizer | None]
) -> ActivationQuantizer | None:
    """The quantiser whose output ``node`` is, looking through identities and into the
    submodule that returned it; None when it is not a quantiser's output."""
    if not isinstance(node, fx.Node):
        return None
    if node.op == "placeholder":
        return known.get(node)
    if node.op != "call_module":
        return None
    target = module.get_submodule(node.target)
    if isinstance(target, ActivationQuantizer):
        return target
    if isinstance(target, _TRANSPARENT_MODULES):
        return _source(module, node.args[0], known)
    if isinstance(target, fx.GraphModule):
        arguments = [_source(module, arg, known) for arg in node.args]
        inner = dict(zip(_inputs(target), arguments, strict=False))
        (output,) = [n for n in target.graph.nodes if n.op == "output"]
        return _source(target, output.args[0], inner)
    return None


def _inputs(module: fx.GraphModule) -> list[fx.Node]:
    return [node for node in module.graph.nodes if node.op == "placeholder"]


def _is_composite(module: nn.Module) -> bool:
    """A module with submodules and a forward of its own to trace (a Sequential, a block),
    as opposed to a layer."""
    return not isinstance(module, (*_INT8_MODULES, nn.BatchNorm2d)) and any(
        True for _ in module.children()
    )


def _fold_batch_norms(module: nn.Module, graph: fx.Graph, spec: QuantSpec) -> None:
    for node in graph.nodes:
        if node.op != "call_module" or len(node.users) != 1:
            continue
        conv = module.get_submodule(node.target)
        (user,) = node.users
        if type(conv) is not nn.Conv2d or user.op != "call_module":
            continue
        bn = module.get_submodule(user.target)
        if type(bn) is nn.BatchNorm2d and bn.num_features == conv.out_channels and bn.affine:
            module.set_submodule(node.target, QuantConvBn2d(conv, bn, spec))
            module.set_submodule(user.target, nn.Identity())


class _Placement:
    """Inserts the activation quantisers of one traced module (see the module docstring)."""

    def __init__(self, module: nn.Module, graph: fx.Graph, spec: QuantSpec, is_root: bool):
        self.module, self.graph, self.spec, self.is_root = module, graph, spec, is_root
        self.quantised: dict[fx.Node, bool] = {}
        self.quantised_copy: dict[fx.Node, fx.Node] = {}
        self.folded: set[fx.Node] = set()  # activations whose int8 op quantises after them

    def run(self) -> None:
        for node in list(self.graph.nodes):
            if node in self.folded:
                continue
            role = self.role(node)
            if node.op == "placeholder":
                self.quantised[node] = not self.is_root
                if self.is_root:
                    self.quantise_uses(node)
            elif node.op == "output":
                if not self.is_root:
                    self.require_quantised(node)
            elif role == INT8_OP:
                self.require_quantised(node)
                self.quantise_output(node)
            elif role == SUBMODULE:
                self.require_quantised(node)
                self.quantised[node] = True
            elif self.transparent(node):
                self.quantised[node] = self.quantised.get(node.args[0], False)
            else:
                self.quantised[node] = False

    def role(self, node: fx.Node) -> str | None:
        if node.op == "call_module":
            target = self.module.get_submodule(node.target)
            if isinstance(target, fx.GraphModule):
                return SUBMODULE
            if isinstance(target, _INT8_MODULES):
                return INT8_OP
            if isinstance(target, _ACTIVATION_MODULES):
                return ACTIVATION
            return FLOAT_OP
        if node.op == "call_function":
            if node.target in _INT8_FUNCTIONS:
                return INT8_OP
            if node.target in _ACTIVATION_FUNCTIONS:
                return ACTIVATION
            if node.target in (getattr, operator.getitem):
                return NOT_A_TENSOR
            return FLOAT_OP
        if node.op == "call_method":
            if node.target in _ACTIVATION_METHODS:
                return ACTIVATION
            if node.target in _VALUE_METHODS:
                return NOT_A_TENSOR
            return FLOAT_OP
        return None

    def transparent(self, node: fx.Node) -> bool:
        return node.op == "call_module" and isinstance(
            self.module.get_submodule(node.target), _TRANSPARENT_MODULES
        )

    def quantise_output(self, node: fx.Node) -> None:
        """Quantise an int8 op's output once, after the activations folded into it. The
        root's output (the logits) stays float."""
        end = node
        while len(end.users) == 1:
            (user,) = end.users
            if self.role(user) != ACTIVATION:
                break
            self.folded.add(user)
            self.quantised[user] = False
            end = user
        if self.is_root and all(user.op == "output" for user in end.users):
            self.quantised[node] = self.quantised[end] = False
            return
        quantiser = self.add_quantiser(end)
        end.replace_all_uses_with(quantiser, delete_user_cb=lambda user: user is not quantiser)
        self.quantised[node] = self.quantised[end] = False

    def quantise_uses(self, node: fx.Node) -> None:
        quantiser = self.add_quantiser(node)
        node.replace_all_uses_with(quantiser, delete_user_cb=lambda user: user is not quantiser)

    def require_quantised(self, node: fx.Node) -> None:
        """Quantise every float tensor ``node`` reads (one quantiser per tensor)."""
        for source in node.all_input_nodes:
            if self.quantised.get(source, True) or self.role(source) == NOT_A_TENSOR:
                continue
            if source not in self.quantised_copy:
                self.quantised_copy[source] = self.add_quantiser(source)
            node.replace_input_with(source, self.quantised_copy[source])

    def add_quantiser(self, source: fx.Node) -> fx.Node:
        name = f"{source.name}_quant"
        while hasattr(self.module, name):
            name += "_"
        self.module.add_module(name, ActivationQuantizer(self.spec.momentum))
        with self.graph.inserting_after(source):
            quantiser = self.graph.call_module(name, (source,))
        self.quantised[quantiser] = True
        return quantiser
