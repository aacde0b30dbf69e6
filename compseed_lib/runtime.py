"""Process-wide settings the library changes, in one place: torch's CPU threads.

Torch's thread count belongs to the whole process. Generation and training want a share of the cores
(half by default, divided among this machine's processes under `accelerate launch`); they take it
for the duration of a block with `torch_threads` and give it back, and the benchmark harness, which
owns its process, sets it with `set_torch_threads`. Nothing else in the library calls
`torch.set_num_threads`.

Usage:
    with torch_threads(cfg.generate.threads, device):   # None: default_threads()
        ...
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def default_threads(processes: int | None = None) -> int:
    """CPU threads for one generating process: half the cores (the rest for the writer thread, a local
    judge and the machine's other users), shared among this machine's processes (LOCAL_WORLD_SIZE)."""
    processes = processes or int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, (os.cpu_count() or 2) // 2 // max(1, processes))


@contextmanager
def torch_threads(n: int | None, device: str = "cpu") -> Iterator[int]:
    """Run the block with `n` torch threads on CPU (None: `default_threads()`); restored afterwards."""
    if torch.device(device).type != "cpu":
        yield torch.get_num_threads()
        return
    before, n = torch.get_num_threads(), n or default_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


def set_torch_threads(n: int) -> int:
    """Set torch's CPU threads for the rest of this process (for a program that owns its process: the
    benchmark harness); the previous count."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    return before
