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


def _out_of_group(status: str) -> str:
    return f"{status} for 52 s; the group coordinator's last answers: SyncGroup answered X"


def test_a_worker_out_of_its_group_says_for_how_long_and_the_coordinators_answers() -> None:
    ready, body = readiness(0, False, {}, _out_of_group)
    assert not ready and body == {
        "status": "joining",
        "reason": "not yet in its consumer group: joining for 52 s; the group coordinator's "
        "last answers: SyncGroup answered X",
    }
    ready, body = readiness(3, True, {}, _out_of_group)
    assert not ready and body["status"] == "rebalancing"
    assert body["reason"] == (
        "partitions are being reassigned: rebalancing for 52 s; the group coordinator's last "
        "answers: SyncGroup answered X"
    )


def test_a_worker_in_its_group_is_not_said_to_be_out_of_it() -> None:
    pipelines = {"orders": PipelinePartitions({0, 1}, {1})}
    asked: list[str] = []

    def out_of_group(status: str) -> str:
        asked.append(status)
        return status

    assert readiness(1, False, pipelines, out_of_group)[1]["status"] == "restoring"
    assert readiness(1, False, {}, out_of_group)[0]
    assert asked == []


def test_with_group_wait_the_reason_is_counted_from_when_it_was_first_out() -> None:
    """As the worker wires it (`app.web`): /ready's clock is the check's."""
    from app.group_wait import GroupWait, JoinAnswers
    from tests.support.fakes import ManualClock

    clock = ManualClock(1_000.0)
    wait = GroupWait("kappa-v1", 40.0, JoinAnswers())
    wait.check(False, "joining", clock())
    clock.now += 52.0
    ready, body = readiness(0, False, {}, lambda status: wait.waiting(status, clock()))
    assert not ready and body["reason"] == (
        "not yet in its consumer group: joining for 52 s; the group coordinator's last "
        "answers: no answer to its JoinGroup yet"
    )
