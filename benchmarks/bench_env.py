"""What the benchmarks record about where and when they ran, and how fast a forward pass is, in one place."""

from __future__ import annotations

import os
import platform
import subprocess
import time

import torch


def machine() -> str:
    """CPU, core count, load at start, torch version and threads: the context a speed or wall figure needs."""
    cpu = platform.processor() or platform.machine()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{os.cpu_count()}-core CPU ({cpu}), load average {load} at start, torch {torch.__version__}, "
            f"{torch.get_num_threads()} thread(s)")


def now() -> str:
    """The wall-clock date as ``date`` prints it (with the time zone), for the record."""
    return subprocess.run(["date"], capture_output=True, text=True).stdout.strip()


@torch.no_grad()
def forward_rate(model: torch.nn.Module, x: torch.Tensor, repeats: int = 5, warmup: int = 1) -> float:
    """Images per second of ``model(x)`` in eval mode at the current thread setting, after ``warmup`` passes
    (the first pass allocates and is slower)."""
    model.eval()
    for _ in range(warmup):
        model(x)
    start = time.perf_counter()
    for _ in range(repeats):
        model(x)
    return x.shape[0] * repeats / (time.perf_counter() - start)
