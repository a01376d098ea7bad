"""CPUs in the Ray cluster for a gallery's shards: reserved for all of them before any starts, or
refused within seconds with what was needed and what the cluster has.

Without a reservation Ray accepts actors it cannot place and keeps them pending until CPUs
appear: on a machine with fewer CPUs than shards times CPUs per shard, creating a gallery then waits
forever. A placement group reserves every shard's CPUs at once (all or nothing), its wait takes
a timeout, and a restarted shard actor gets its bundle back, so a gallery that started keeps its
CPUs. Only this module and :mod:`matcher.sharded` depend on the placement API.
"""

from __future__ import annotations

import math

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group

from matcher.errors import ShardPlacementError

RESOURCE_UNIT = 1e-4
"""Ray counts resources in units of 1/10,000; sums of fractional CPUs are compared at this grain."""


def cluster_cpus() -> tuple[float, float]:
    """(CPUs in the connected cluster, CPUs not reserved by anyone now)."""
    return float(ray.cluster_resources().get("CPU", 0.0)), float(ray.available_resources().get("CPU", 0.0))


def fitted_shards(shard_count: int, cpus_per_shard: float, cpus: float) -> tuple[int, float]:
    """(shards, CPUs per shard) of at most ``shard_count`` shards that together ask for no more
    than ``cpus``: fewer shards of the same size, or one shard of all ``cpus`` when even one
    shard of ``cpus_per_shard`` is too big."""
    if cpus_per_shard > cpus:
        return 1, cpus
    return min(shard_count, max(1, math.floor(cpus / cpus_per_shard + RESOURCE_UNIT))), cpus_per_shard


def check_cpus(shards: int, cpus_per_shard: float) -> None:
    """Raise :class:`ShardPlacementError` unless the cluster has that many CPUs free now: a
    check before anything is stored for a new gallery, whose own reservation comes later."""
    total, available = cluster_cpus()
    if shards * cpus_per_shard > available + RESOURCE_UNIT:
        raise ShardPlacementError(shards, cpus_per_shard, total, available)


def reserve_cpus(shards: int, cpus_per_shard: float, timeout_s: float) -> PlacementGroup:
    """One bundle of ``cpus_per_shard`` CPUs per shard, spread over the cluster's nodes when it
    has several (a search scans every shard at once, each bound by its node's memory bandwidth).
    Raises :class:`ShardPlacementError` at once when the whole cluster has too few CPUs, and after
    ``timeout_s`` when the CPUs exist but stay held by others."""
    total, available = cluster_cpus()
    if shards * cpus_per_shard > total + RESOURCE_UNIT:
        raise ShardPlacementError(shards, cpus_per_shard, total, available)
    group = placement_group([{"CPU": cpus_per_shard}] * shards, strategy="SPREAD")
    if not group.wait(timeout_s):
        remove_placement_group(group)
        raise ShardPlacementError(shards, cpus_per_shard, *cluster_cpus())
    return group


def release_cpus(group: PlacementGroup) -> None:
    """Give a gallery's CPUs back to the cluster (its shard actors stopped)."""
    remove_placement_group(group)
