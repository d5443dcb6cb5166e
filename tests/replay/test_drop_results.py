"""How `kappa drop` reads the broker's per-topic answer to a delete, without a broker."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiokafka.protocol.admin import DeleteTopicsResponse_v0, DeleteTopicsResponse_v1

from app.settings import ConfigError, load_settings
from app.state_guard import StateLockedError, lock_state_dir
from replay import versions
from replay.registry import DROPPED, RUNNING, RegistryView, VersionRecord
from replay.versions import _undeleted


def test_deleted_and_already_gone_topics_are_not_reported() -> None:
    ok = DeleteTopicsResponse_v1(throttle_time_ms=0, topic_error_codes=[("a", 0), ("b", 3)])
    assert _undeleted(ok) == []
    assert _undeleted(DeleteTopicsResponse_v0(topic_error_codes=[])) == []


def test_each_refused_topic_is_named_with_its_error() -> None:
    refused = DeleteTopicsResponse_v1(
        throttle_time_ms=0,
        topic_error_codes=[("a", 0), ("b", 29), ("c", 7), ("d", 3), ("e", 73)],
    )
    assert _undeleted(refused) == [
        ("b", "TopicAuthorizationFailedError"),
        ("c", "RequestTimedOutError"),
        ("e", "UnknownError (code 73)"),  # TOPIC_DELETION_DISABLED: aiokafka has no name for it
    ]


@dataclass
class WithMessages:
    """DeleteTopicsResponse v5 and later: (topic, error code, error message)."""

    topic_error_codes: list[tuple[str, int, str | None]]


def test_responses_with_error_messages_are_read_too() -> None:
    response = WithMessages([("a", 0, None), ("b", 41, "not the controller")])
    assert _undeleted(response) == [("b", "NotControllerError")]


@dataclass
class GroupAnswers:
    """The broker's answers to DeleteGroups, one per attempt (an exception: no answer)."""

    answers: list[int | Exception]
    asked: int = 0

    async def send(self, node: int, request: object) -> object:
        answer = self.answers[min(self.asked, len(self.answers) - 1)]
        self.asked += 1
        if isinstance(answer, Exception):
            raise answer
        return type("DeleteGroupsResponse", (), {"results": [("kappa-v2", answer)]})()


@dataclass
class RefusingAdmin:
    """An admin client whose broker deletes the group (unless told otherwise) but refuses to
    delete the topics."""

    topics: list[str]
    deleted: list[list[str]] = field(default_factory=list)
    error_code: int = 29  # TOPIC_AUTHORIZATION_FAILED
    _client: GroupAnswers = field(default_factory=lambda: GroupAnswers([0]))

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def find_coordinator(self, group: str) -> int:
        return 0

    async def list_topics(self) -> list[str]:
        return self.topics

    async def delete_topics(self, topics: list[str]) -> DeleteTopicsResponse_v1:
        self.deleted.append(topics)
        return DeleteTopicsResponse_v1(
            throttle_time_ms=0, topic_error_codes=[(t, self.error_code) for t in topics]
        )


@dataclass
class RecordingRegistry:
    view: RegistryView
    written: list[VersionRecord] = field(default_factory=list)
    dropping: list[tuple[int, bool]] = field(default_factory=list)

    async def load(self, create: bool = True) -> RegistryView:
        return self.view

    async def put_version(self, rec: VersionRecord) -> None:
        self.written.append(rec)

    async def put_dropping(self, version: int, active: bool) -> None:
        self.dropping.append((version, active))


async def test_a_refused_delete_keeps_the_state_and_the_registry_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """So the version does not look dropped while its topics remain, and the drop can be run
    again once the broker allows it."""
    settings = load_settings({"KAPPA_STATE_DIR": str(tmp_path)})
    state = tmp_path / "v2" / "orders" / "p0"
    state.mkdir(parents=True)
    admin = RefusingAdmin(["orders", "orders.revenue-1m.v2", "orders.user-totals.v2"])
    registry = RecordingRegistry(RegistryView({2: VersionRecord(2, RUNNING, ["orders"])}, {}))
    fakes: dict[str, Any] = {"new_admin": lambda _: admin, "Registry": lambda _: registry}
    for name, fake in fakes.items():
        monkeypatch.setattr(versions, name, fake)

    with pytest.raises(ConfigError) as err:
        await versions.drop(settings, 2)

    assert admin.deleted == [["orders.revenue-1m.v2", "orders.user-totals.v2"]]
    assert str(err.value) == (
        "version 2 not dropped: the broker did not delete orders.revenue-1m.v2 "
        "(TopicAuthorizationFailedError), orders.user-totals.v2 (TopicAuthorizationFailedError); "
        "its state and registry entry are kept, run kappa drop 2 again once the broker allows it"
    )
    assert state.is_dir()
    assert registry.written == []


async def test_a_drop_marks_the_version_dropped_before_letting_go_of_its_state_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker of the version starting during the drop is refused by the lock, and after it
    as dropped: never in between, with its state removed underneath it."""
    settings = load_settings({"KAPPA_STATE_DIR": str(tmp_path)})
    (tmp_path / "v2" / "orders" / "p0").mkdir(parents=True)
    admin = RefusingAdmin(["orders.revenue-1m.v2"], error_code=0)
    locked_while_marked: list[bool] = []

    class LockCheckingRegistry(RecordingRegistry):
        async def put_version(self, rec: VersionRecord) -> None:
            try:
                lock_state_dir(tmp_path / "v2").release()
                locked_while_marked.append(False)
            except StateLockedError:
                locked_while_marked.append(True)
            await super().put_version(rec)

    registry = LockCheckingRegistry(RegistryView({2: VersionRecord(2, RUNNING, ["orders"])}, {}))
    monkeypatch.setattr(versions, "new_admin", lambda _: admin)
    monkeypatch.setattr(versions, "Registry", lambda _: registry)
    said = await versions.drop(settings, 2)
    assert said.startswith("dropped version 2: 1 topic deleted")  # was "1 topics"
    assert [r.status for r in registry.written] == [DROPPED]
    assert locked_while_marked == [True]
    assert not (tmp_path / "v2").exists()


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        (68, "version 2 still has running workers (consumer group kappa-v2 is not empty)"),
        (30, "could not delete its consumer group kappa-v2 (GroupAuthorizationFailedError)"),
    ],
)
async def test_a_group_the_broker_does_not_delete_refuses_the_drop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, answer: int, said: str
) -> None:
    """The group is the only sign of the version's workers on other machines: unless it is
    deleted (or never existed), nothing of the version is."""
    settings = load_settings({"KAPPA_STATE_DIR": str(tmp_path)})
    (tmp_path / "v2" / "orders" / "p0").mkdir(parents=True)
    admin = RefusingAdmin(["orders.revenue-1m.v2"], error_code=0, _client=GroupAnswers([answer]))
    registry = RecordingRegistry(RegistryView({2: VersionRecord(2, RUNNING, ["orders"])}, {}))
    monkeypatch.setattr(versions, "new_admin", lambda _: admin)
    monkeypatch.setattr(versions, "Registry", lambda _: registry)
    with pytest.raises(ConfigError, match=said.replace("(", r"\(").replace(")", r"\)")):
        await versions.drop(settings, 2)
    assert admin.deleted == [] and registry.written == []
    assert (tmp_path / "v2" / "orders" / "p0").is_dir()
    assert admin._client.asked == 1  # neither answer changes by asking again


async def test_a_busy_coordinator_is_asked_again() -> None:
    busy = GroupAnswers([OSError("connection reset"), 14, 16, 0])  # loading, moving, deleted
    assert await versions._delete_group(RefusingAdmin([], _client=busy), "kappa-v2", 2, 6, 0) == (
        "consumer group kappa-v2 deleted"
    )
    assert busy.asked == 4
    gone = GroupAnswers([69])  # GROUP_ID_NOT_FOUND: no worker of the version ever ran
    assert await versions._delete_group(RefusingAdmin([], _client=gone), "kappa-v2", 2, 6, 0) == (
        "consumer group kappa-v2 deleted"
    )


async def test_a_coordinator_busy_for_every_attempt_refuses_the_drop() -> None:
    busy = GroupAnswers([16])
    with pytest.raises(ConfigError, match=r"NotCoordinatorForGroupError.*nothing was deleted"):
        await versions._delete_group(RefusingAdmin([], _client=busy), "kappa-v2", 2, 3, 0)
    assert busy.asked == 3
