"""How a local Ray cluster fits a gallery's shards to its CPUs (no cluster needed)."""

from __future__ import annotations

import pytest

pytest.importorskip("ray")

from matcher.capacity import fitted_shards


@pytest.mark.parametrize(
    ("asked", "cpus", "fitted"),
    [
        ((4, 1.0), 2.0, (2, 1.0)),  # the defaults on a 2-CPU machine: fewer shards of the same size
        ((3, 0.25), 2.0, (3, 0.25)),  # already fits: unchanged
        ((4, 0.1), 1.0, (4, 0.1)),  # fractional CPUs that add up to the cluster's exactly still fit
        ((4, 4.0), 2.0, (1, 2.0)),  # not even one shard fits: one shard of every CPU
        ((8, 1.0), 16.0, (8, 1.0)),  # a bigger machine does not get more shards than asked for
    ],
)
def test_shards_fitted_to_the_cpus_ask_for_no_more_than_there_are(
    asked: tuple[int, float], cpus: float, fitted: tuple[int, float]
) -> None:
    shards, cpus_per_shard = fitted_shards(*asked, cpus)
    assert (shards, cpus_per_shard) == fitted
    assert shards * cpus_per_shard <= cpus + 1e-9
