"""What `GET /ready` answers, from the worker's group membership and partition states."""

from __future__ import annotations

from app.readiness import PipelinePartitions, readiness


def test_a_worker_not_yet_in_its_group_is_not_ready() -> None:
    ready, body = readiness(0, False, {})
    assert not ready and body["status"] == "joining"


def test_a_worker_is_not_ready_while_its_partitions_are_reassigned() -> None:
    ready, body = readiness(1, True, {"orders": PipelinePartitions({0}, {0})})
    assert not ready and body["status"] == "rebalancing"


def test_a_worker_is_not_ready_while_an_assigned_partitions_state_opens() -> None:
    pipelines = {
        "orders": PipelinePartitions({0, 1}, {0, 1}),
        "user-totals": PipelinePartitions({0, 1, 3}, {1}),
    }
    ready, body = readiness(2, False, pipelines)
    assert not ready
    assert body["status"] == "restoring" and body["partitions"] == {"user-totals": [0, 3]}


def test_a_worker_whose_assigned_states_are_open_is_ready_with_or_without_partitions() -> None:
    pipelines = {
        "orders": PipelinePartitions({2, 0}, {0, 2, 5}),
        "top": PipelinePartitions(set(), set()),
    }
    ready, body = readiness(1, False, pipelines)
    assert ready and body == {"status": "ready", "partitions": {"orders": [0, 2], "top": []}}
