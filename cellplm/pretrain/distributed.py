"""Distributed data parallel (torchrun): the process group and the balanced split of each epoch's sentences."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Sequence

import torch


def balanced_partition(sizes: Sequence[int], order: Sequence[int], world: int) -> list[list[int]]:
    """Split ``order`` (sentence ids) over ``world`` ranks with equal step counts and balanced cell totals.

    Largest first, each to the lightest rank that still has room; a rank short of ceil(n/world) sentences
    repeats sentences from the start of ``order``. Each rank visits its sentences in ``order``'s order.
    """
    n = len(order)
    steps = math.ceil(n / world)
    parts: list[list[int]] = [[] for _ in range(world)]
    loads = [0] * world
    for j in sorted(order, key=lambda j: -sizes[j]):  # stable: ties keep the (random) epoch order
        r = min((r for r in range(world) if len(parts[r]) < steps), key=lambda r: (loads[r], r))
        parts[r].append(j)
        loads[r] += sizes[j]
    pos = {j: k for k, j in enumerate(order)}
    for part in parts:
        part.sort(key=pos.__getitem__)
        k = 0
        while len(part) < steps:
            part.append(order[k % n])
            k += 1
    return parts


@dataclass
class Dist:
    world: int = 1
    rank: int = 0
    local_rank: int = 0
    created: bool = False

    @property
    def on(self) -> bool:
        return self.world > 1

    def barrier(self):
        if self.on:
            torch.distributed.barrier()

    def mean(self, values: list[float], device) -> list[float]:
        if not self.on:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=device)
        torch.distributed.all_reduce(t)
        return (t / self.world).tolist()

    def sum(self, values: list[float], device) -> list[float]:
        if not self.on:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=device)
        torch.distributed.all_reduce(t)
        return t.tolist()


def setup_dist(device: str) -> tuple[Dist, str]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), device
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        device = f"cuda:{local}"
        torch.cuda.set_device(local)
    created = False
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
        created = True
    return Dist(dist.get_world_size(), dist.get_rank(), local, created), device
