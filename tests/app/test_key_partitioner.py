"""KeyPartitioner: the default partitioner's answers, kept for keys seen before."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st

from app.batch_producer import KeyPartitioner


@given(st.lists(st.tuples(st.binary(max_size=40), st.integers(1, 64)), max_size=200))
def test_puts_every_key_where_the_default_partitioner_does(calls: list[tuple[bytes, int]]) -> None:
    kept = KeyPartitioner(max_keys=16)  # small: the bound is crossed within one example
    default = DefaultPartitioner()
    for key, count in calls + calls:  # each key asked twice: once computed, once kept
        partitions = list(range(count))
        assert kept(key, partitions) == default(key, partitions, partitions)


def test_stays_within_its_bound() -> None:
    kept = KeyPartitioner(max_keys=10)
    for i in range(25):
        kept(f"user-{i}".encode(), [0, 1, 2, 3])
    assert len(kept._known) <= 10


def test_a_record_without_key_goes_to_one_of_the_partitions() -> None:
    kept = KeyPartitioner()
    assert {kept(None, [0, 1, 2]) for _ in range(50)} <= {0, 1, 2}
    assert not kept._known
