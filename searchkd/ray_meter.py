"""Latency measured on the Ray node that advertises a custom resource: ``ray:RESOURCE``.

A student's latency means something only on the device that will run it. When that
device (an edge board, a phone dev kit, a particular GPU host) joins the search's Ray
cluster advertising a resource, e.g. ``ray start --address HEAD --num-cpus 0
--resources '{"edge_board": 1}'``, each candidate is timed there, in a Ray task that
asks for one unit of that resource, while trials train elsewhere. One unit per
measurement keeps two timings from sharing the device; no CPU is requested, so a node
that trains nothing (``--num-cpus 0``) still measures.

The meter inside the task is any local one (``torch-cpu`` unless named:
``ray:edge_board:onnxruntime``), built on the device node itself, so its checks (is CUDA
there, is the ONNX Runtime provider there) run where it measures.
"""

from __future__ import annotations

import dataclasses
import os

from torch import nn

from searchkd.errors import SearchKDError
from searchkd.meters import Latency, MeterSpec, Timing, make_meter

# A measurement that has not come back by then is waiting on a device node that left the
# cluster (Ray keeps such a task pending forever) or on a resource something else holds.
DEVICE_WAIT_S = 600.0


def _measure_here(
    model: nn.Module, input_shape: tuple[int, ...], inner: str, timing: Timing
) -> tuple[Latency, str, int]:
    """Runs on the device node: the latency, and where it was measured (node id, pid)."""
    import ray

    latency = make_meter(inner, timing).measure(model, input_shape)
    return latency, ray.get_runtime_context().get_node_id(), os.getpid()


class RayLatencyMeter:
    """Times candidates on the Ray node that advertises ``resource``."""

    def __init__(
        self,
        resource: str,
        inner: str = "torch-cpu",
        timing: Timing | None = None,
    ) -> None:
        import ray

        if not ray.is_initialized():
            raise SearchKDError(
                f"latency meter ray:{resource} needs a Ray cluster: run the search with "
                "--runner ray, or pass --address to join the cluster the device belongs to"
            )
        advertised = ray.cluster_resources()
        if advertised.get(resource, 0) <= 0:
            names = ", ".join(sorted(k for k in advertised if not k.startswith("node:")))
            raise SearchKDError(
                f"latency meter ray:{resource}: no node of the Ray cluster advertises the "
                f"resource {resource!r} (it has: {names}); join the device with `ray start "
                f"--address HEAD:PORT --resources '{{\"{resource}\": 1}}'`"
            )
        self.resource, self.inner = resource, inner
        self.timing = timing or Timing()
        self._task = ray.remote(_measure_here).options(num_cpus=0, resources={resource: 1})
        self.placements: list[tuple[str, int]] = []  # (node id, pid) of each measurement

    @classmethod
    def from_spec(cls, spec: MeterSpec, timing: Timing) -> RayLatencyMeter:
        """``ray:RESOURCE`` (torch-cpu on that node) or ``ray:RESOURCE:METER``; the
        registry has checked that METER is one that times where it is built."""
        resource, _, inner = spec.argument.partition(":")
        return cls(resource, inner or "torch-cpu", timing)

    @property
    def name(self) -> str:
        return f"ray:{self.resource}/{self.inner}:{self.timing.threads}t"

    def measure(self, model: nn.Module, input_shape: tuple[int, ...]) -> Latency:
        import ray

        pending = self._task.remote(model, tuple(input_shape), self.inner, self.timing)
        try:
            latency, node, pid = ray.get(pending, timeout=DEVICE_WAIT_S)
        except ray.exceptions.RayTaskError as exc:
            # The device node's own error (no CUDA there, a layer its runtime cannot run),
            # not Ray's multi-line traceback around it: that becomes the trial's reason.
            raise (exc.cause if isinstance(exc.cause, Exception) else exc) from None
        except ray.exceptions.GetTimeoutError:
            ray.cancel(pending, force=True)
            raise SearchKDError(
                f"latency meter ray:{self.resource}: no measurement came back within "
                f"{DEVICE_WAIT_S:.0f}s; check that the device node is still in the cluster "
                "(`ray status`) and that nothing else holds its resource"
            ) from None
        self.placements.append((node, pid))
        return dataclasses.replace(latency, meter=self.name)
