"""A worker kept out of its consumer group says so in its log, with what the broker answered
and the likely cause, once it has waited longer than a healthy join takes."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError
from aiokafka.protocol.group import (
    HeartbeatRequest,
    HeartbeatResponse_v1,
    JoinGroupRequest,
    JoinGroupResponse_v5,
    SyncGroupRequest,
    SyncGroupResponse_v3,
)

from app.group_wait import (
    GroupWait,
    JoinAnswers,
    out_of_group,
    warn_after_s,
    watch_join_answers,
)

GROUP = "kappa-v1"
ME, GONE = "faust-me", "faust-departed-leader"


def _stuck() -> JoinAnswers:
    """What the dev broker answers a member of a group whose leader left while it formed."""
    answers = JoinAnswers()
    for _ in range(3):  # round after round
        answers.joined(0, 3, GONE, ME)
        answers.synced(27)  # REBALANCE_IN_PROGRESS
    answers.joined(0, 3, GONE, ME)  # the next round's SyncGroup not answered yet
    return answers


def test_the_bound_is_twice_the_longest_healthy_join_in_seconds() -> None:
    assert warn_after_s(session_timeout_ms=10_000, rebalance_timeout_ms=10_000) == 40.0
    assert warn_after_s(session_timeout_ms=6_000, rebalance_timeout_ms=2_000) == 16.0


def test_nothing_is_said_before_the_bound_or_in_the_group() -> None:
    wait = GroupWait(GROUP, 40.0, _stuck())
    assert wait.check(False, "joining", 100.0) is None  # out of it from here
    assert wait.check(False, "joining", 139.9) is None
    quiet = GroupWait(GROUP, 40.0, _stuck())
    assert all(quiet.check(True, "joining", t) is None for t in (0.0, 100.0, 1000.0))


def test_a_worker_out_of_its_group_warns_once_then_once_per_bound() -> None:
    wait = GroupWait(GROUP, 40.0, _stuck())
    said = [wait.check(False, "joining", float(t)) for t in range(0, 200)]  # every second
    warned_at = [t for t, line in enumerate(said) if line is not None]
    assert warned_at == [40, 80, 120, 160]  # not at each check, nor each of the broker's rounds
    first, second = said[40], said[80]
    assert first is not None and second is not None
    assert first[0] == logging.WARNING
    assert first[1].startswith(
        f"still not in consumer group {GROUP}, so not ready: joining for 40 s; the group "
        "coordinator's last answers: JoinGroup answered generation 3"
    )
    assert ": joining for 80 s;" in second[1]


def test_the_stuck_dev_broker_group_is_named_with_its_answers_and_the_remedy() -> None:
    line = GroupWait(GROUP, 40.0, _stuck())._line("joining", 40.0)
    assert (
        f"JoinGroup answered generation 3 with member {GONE} as leader; SyncGroup answered "
        "REBALANCE_IN_PROGRESS (27), 3 times in a row"
    ) in line
    assert "a departed member the broker still counts" in line
    assert "only restarting it clears it" in line and "KAPPA_STATE_DIR" in line
    assert "\n" not in line


@pytest.mark.parametrize(
    "answer,said",
    [
        (lambda a: None, "no answer to its JoinGroup yet"),
        (lambda a: a.joined(16, -1, "", ""), "JoinGroup answered NOT_COORDINATOR (16)"),
        (
            lambda a: a.joined(0, 4, ME, ME),
            "generation 4 with this worker as leader; no answer to its SyncGroup yet",
        ),
        (lambda a: a.joined(0, 4, GONE, ME) or a.synced(25), "UNKNOWN_MEMBER_ID (25)"),
    ],
)
def test_other_answers_are_said_as_they_are_without_naming_a_departed_leader(
    answer: Any, said: str
) -> None:
    answers = JoinAnswers()
    answer(answers)
    line = GroupWait(GROUP, 40.0, answers)._line("joining", 50.0)
    assert said in line
    assert "a departed member the broker still counts" not in line
    assert "KAPPA_SESSION_TIMEOUT_MS + KAPPA_REBALANCE_TIMEOUT_MS" in line


def test_a_new_generation_or_leader_starts_the_sync_answers_afresh() -> None:
    answers = _stuck()
    answers.joined(0, 4, GONE, ME)
    assert answers.said().endswith("; no answer to its SyncGroup yet")
    assert not answers.refused_under_absent_leader()
    answers.synced(27)
    assert answers.said().endswith("; SyncGroup answered REBALANCE_IN_PROGRESS (27)")  # once
    assert answers.refused_under_absent_leader()
    answers.joined(0, 4, "faust-other", ME)
    assert not answers.refused_under_absent_leader()
    answers.joined(15, -1, "", "")  # COORDINATOR_NOT_AVAILABLE
    assert answers.said() == "JoinGroup answered COORDINATOR_NOT_AVAILABLE (15)"
    assert not answers.refused_under_absent_leader()


def test_getting_in_after_a_warning_is_said_and_a_later_rebalance_counts_afresh() -> None:
    wait = GroupWait(GROUP, 40.0, _stuck())
    wait.check(False, "joining", 0.0)
    assert wait.check(False, "joining", 45.0) is not None
    assert wait.check(True, "joining", 50.0) == (
        logging.INFO,
        f"now in consumer group {GROUP}, after 50 s out of it",
    )
    assert wait.check(True, "joining", 51.0) is None  # said once
    wait.check(False, "rebalancing", 60.0)
    assert wait.check(False, "rebalancing", 99.0) is None  # 39 s out, not 99
    said = wait.check(False, "rebalancing", 100.0)
    assert said is not None and "so not ready: rebalancing for 40 s;" in said[1]


def test_ready_says_how_long_a_worker_has_been_out_and_the_coordinators_answers() -> None:
    """The same words as the warning, at any time, not only once per bound."""
    wait = GroupWait(GROUP, 40.0, _stuck())
    wait.check(False, "joining", 100.0)  # out of it from here
    said = wait.waiting("joining", 152.4)
    assert said == (
        "joining for 52 s; the group coordinator's last answers: JoinGroup answered "
        f"generation 3 with member {GONE} as leader; SyncGroup answered "
        "REBALANCE_IN_PROGRESS (27), 3 times in a row"
    )
    wait.answers.synced(27)
    assert wait.waiting("joining", 153.0).endswith(
        "joining for 53 s; the group coordinator's last answers: JoinGroup answered "
        f"generation 3 with member {GONE} as leader; SyncGroup answered "
        "REBALANCE_IN_PROGRESS (27), 4 times in a row"
    )
    line = wait.check(False, "joining", 160.0)  # the warning says the same, built once
    assert line is not None and out_of_group("joining", 60.0, wait.answers) in line[1]


def test_ready_asked_first_starts_the_wait_and_leaves_the_warnings_to_the_check() -> None:
    wait = GroupWait(GROUP, 40.0, JoinAnswers())
    assert wait.waiting("joining", 10.0) == (
        "joining for 0 s; the group coordinator's last answers: no answer to its JoinGroup yet"
    )
    assert wait.waiting("joining", 12.0).startswith("joining for 2 s;")
    assert wait.check(False, "joining", 49.9) is None  # out since 10.0, not since 49.9
    said = wait.check(False, "joining", 50.0)
    assert said is not None and ": joining for 40 s;" in said[1]
    assert wait.check(True, "joining", 55.0) == (
        logging.INFO,
        f"now in consumer group {GROUP}, after 45 s out of it",
    )
    assert wait.waiting("rebalancing", 70.0).startswith("rebalancing for 0 s;")  # afresh


def test_getting_in_without_a_warning_says_nothing() -> None:
    wait = GroupWait(GROUP, 40.0, _stuck())
    wait.check(False, "joining", 0.0)
    assert wait.check(True, "joining", 10.0) is None


class _Client:
    """An aiokafka client's `send` as the coordinator calls it: canned answers, no network."""

    def __init__(self, answers: list[Any]) -> None:
        self.answers = answers
        self.sent: list[tuple[int, Any, dict[str, Any]]] = []

    async def send(self, node_id: int, request: Any, **kwargs: Any) -> Any:
        self.sent.append((node_id, request, kwargs))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


class _Consumer:
    def __init__(self, client: _Client) -> None:
        self._client = client


def _join_request() -> JoinGroupRequest:
    return JoinGroupRequest(GROUP, 10_000, 10_000, ME, "", "consumer", [])


async def test_the_consumers_join_and_sync_answers_are_recorded_as_they_pass() -> None:
    join = JoinGroupResponse_v5(0, 0, 3, "sticky", GONE, ME, [])
    sync = SyncGroupResponse_v3(0, 27, b"")
    beat = HeartbeatResponse_v1(0, 27)
    client = _Client([join, sync, beat])
    answers = JoinAnswers()
    watch_join_answers(_Consumer(client), answers)

    assert await client.send(7, _join_request(), group="coordination") is join
    assert answers.said() == (
        f"JoinGroup answered generation 3 with member {GONE} as leader; no answer to its "
        "SyncGroup yet"
    )
    request = SyncGroupRequest(GROUP, 3, ME, "", [])
    assert await client.send(7, request) is sync
    assert answers.said().endswith("; SyncGroup answered REBALANCE_IN_PROGRESS (27)")
    assert await client.send(7, HeartbeatRequest(GROUP, 3, ME)) is beat
    assert answers.refusals == 1  # other answers are not join answers
    assert [(node, kwargs) for node, _, kwargs in client.sent] == [
        (7, {"group": "coordination"}),
        (7, {}),
        (7, {}),
    ]


async def test_a_request_that_got_no_answer_raises_as_before_and_records_nothing() -> None:
    client = _Client([KafkaConnectionError("gone")])
    answers = JoinAnswers()
    watch_join_answers(_Consumer(client), answers)
    with pytest.raises(KafkaConnectionError):
        await client.send(7, _join_request())
    assert answers.said() == "no answer to its JoinGroup yet"
