"""Measuring a training step: wall time, FLOPs and activation memory (used by ``benchmarks/``).

A user who writes a model variant measures it with the same tools::

    from pyro_jepa.benchmarking import count_flops, median_time, saved_activation_mib
    flops = count_flops(step)                 # step: a function that runs one training step
    seconds = median_time(step, reps=10, warmup=3)
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils import flop_counter

from .train import clip_gradients

aten = torch.ops.aten


def sync(device: torch.device | str | None = None) -> None:
    """Wait for the device's queued work (a no-op on CPU), so a wall clock measures the work itself."""
    device = torch.device(device or "cpu")
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn: Callable[[], object], reps: int, warmup: int = 1, device: torch.device | str | None = None) -> float:
    """Median wall time of ``fn()`` in seconds over ``reps`` calls after ``warmup`` untimed ones."""
    if reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        sync(device)
        started = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def training_step(method: torch.nn.Module, optimizer: torch.optim.Optimizer, rows: torch.Tensor, step: int, amp: bool = False) -> torch.Tensor:
    """One optimizer step as the engine takes it (loss at optimizer step ``step``, backward, clipping to
    norm 1, update), without its finiteness check; returns the detached loss. ``amp``: bf16 autocast."""
    with torch.autocast(rows.device.type, dtype=torch.bfloat16, enabled=amp):
        loss = method.loss(rows, step)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    clip_gradients(method, 1.0)
    optimizer.step()
    return loss.detach()


def _register_cpu_attention_flops() -> None:
    """Count the CPU flash-attention kernels as torch counts the CUDA ones. Without this a
    ``FlopCounterMode`` sees no attention at all on a CPU (torch registers only the GPU kernels)."""
    forward, backward = aten._scaled_dot_product_flash_attention_for_cpu, aten._scaled_dot_product_flash_attention_for_cpu_backward
    if forward in flop_counter.flop_registry:
        return

    @flop_counter.register_flop_formula(forward)
    def _forward(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)

    @flop_counter.register_flop_formula(backward)
    def _backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return flop_counter.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def count_flops(fn: Callable[[], object]) -> int:
    """Floating-point operations of one call of ``fn`` as `torch.utils.flop_counter` counts them
    (matmuls, convolutions and attention, CPU attention included; elementwise work is not counted)."""
    _register_cpu_attention_flops()
    with flop_counter.FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def saved_activation_mib(fn: Callable[[], object]) -> float:
    """MiB of distinct tensors autograd saves for backward while ``fn()`` runs: the activation memory
    that dominates a training step's peak, on any device (``ru_maxrss`` cannot attribute a peak to one
    step, and tracemalloc does not see torch's allocator)."""
    seen: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.numel():
            seen[(t.untyped_storage().data_ptr(), t.device.index or 0)] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values()) / 2**20


def matmul_flops_per_second(device: torch.device | str | None = None, n: int = 1024, reps: int = 20) -> float:
    """FLOP/s of an ``n x n`` float32 matmul (2n³ operations) on the current threads: the machine's reference."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    return 2 * n**3 / median_time(lambda: a @ b, reps, 3, device)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else what `platform` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_summary() -> str:
    """The CPU and the instruction set of torch's kernels on it, for a report's machine line."""
    return f"{cpu_model()}, {torch.backends.cpu.get_cpu_capability()} kernels"


def machine_description() -> dict[str, object]:
    """What a timing or a result depends on besides the code: the CPU and the instruction set torch's
    kernels use on it (two CPUs with other kernels give other last bits, and so other trained weights),
    cores, torch threads, the GPU if any, and the versions."""
    return {
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
