"""Which worker holds each partition: carried by the group's join, read by table queries."""

from __future__ import annotations

import socket
from types import SimpleNamespace

from aiokafka.coordinator.assignors.sticky.sticky_assignor import (
    StickyAssignorUserDataV1,
    StickyPartitionAssignor,
)
from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata

from app.batch_delivery import sticky_assignor
from app.partition_owners import (
    STATE_MARK,
    URL_MARK,
    PartitionOwners,
    advertised_url,
    member_local_state,
    member_url,
    owners_bytes,
    parse_owners,
    with_local_state,
    with_url,
)


class _Cluster:
    """What the sticky assignor reads of the cluster: each topic's partitions."""

    def __init__(self, topics: dict[str, int]) -> None:
        self.counts = topics

    def topics(self) -> set[str]:
        return set(self.counts)

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self.counts[topic]))


def _assignor(
    url: str | None, state: list[tuple[str, int]] | None = None
) -> tuple[type[StickyPartitionAssignor], PartitionOwners | None]:
    owners = PartitionOwners(url) if url is not None else None
    consumer = SimpleNamespace(_coordinator=SimpleNamespace(generation=1))
    local_state = None if state is None else lambda: state
    return sticky_assignor(consumer, owners, local_state), owners


def _held(assignment: object) -> list[int]:
    return sorted(p for _, ps in assignment.assignment for p in ps)  # type: ignore[attr-defined]


def test_a_url_after_the_sticky_data_leaves_that_data_as_it_was() -> None:
    """A member without the URL (an older worker, mid-deploy) reads the same assignment."""
    sticky = StickyAssignorUserDataV1([("orders", [0, 2])], 7).encode()
    joined = with_url(sticky, "http://w1:6066")
    assert member_url(joined) == "http://w1:6066"
    decoded = StickyAssignorUserDataV1.decode(joined)
    assert (list(decoded.previous_assignment), decoded.generation) == ([("orders", [0, 2])], 7)
    first = StickyAssignorUserDataV1.decode(with_url(b"", "http://w1:6066"))  # a first join
    assert (list(first.previous_assignment), first.generation) == ([], -1)
    assert member_url(sticky) is None and member_url(b"") is None


def test_the_owners_map_round_trips_and_anything_else_is_no_map() -> None:
    raw = owners_bytes({"http://a:1": {"t": [0, 1]}, "http://b:2": {"t": [2], "u": [0]}})
    assert parse_owners(raw) == {
        ("t", 0): "http://a:1",
        ("t", 1): "http://a:1",
        ("t", 2): "http://b:2",
        ("u", 0): "http://b:2",
    }
    for other in (b"", b"kappa-owners:{", b"kappa-owners:[1]", b'kappa-owners:{"a":{"t":["x"]}}'):
        assert parse_owners(other) == {}


def test_every_member_learns_who_holds_each_partition() -> None:
    """The leader's assignment carries the map; each member keeps it, and names no owner for
    its own partitions."""
    (a, owners_a), (b, owners_b) = _assignor("http://a:6066"), _assignor("http://b:6066")
    members = {"m-a": a.metadata(["t"]), "m-b": b.metadata(["t"])}
    assignments = a.assign(_Cluster({"t": 4}), members)
    for member, assignor in (("m-a", a), ("m-b", b)):
        assignor.on_assignment(assignments[member])
    assert owners_a is not None and owners_b is not None
    held_by_a = {p for t, ps in assignments["m-a"].assignment for p in ps}
    held_by_b = {p for t, ps in assignments["m-b"].assignment for p in ps}
    assert held_by_a | held_by_b == {0, 1, 2, 3} and held_by_a and held_by_b
    for p in held_by_b:
        assert owners_a.owner("t", p) == "http://b:6066"
        assert owners_b.owner("t", p) is None  # its own
    for p in held_by_a:
        assert owners_b.owner("t", p) == "http://a:6066"
    # The next join still carries the sticky claim, so partitions stay where they are.
    again = a.assign(_Cluster({"t": 4}), {"m-a": a.metadata(["t"]), "m-b": b.metadata(["t"])})
    assert {p for _, ps in again["m-a"].assignment for p in ps} == held_by_a


def test_members_and_leaders_without_urls_mix_in_a_rolling_deploy() -> None:
    new, owners = _assignor("http://new:6066")
    old, _ = _assignor(None)
    members = {"m-new": new.metadata(["t"]), "m-old": old.metadata(["t"])}
    by_old_leader = StickyPartitionAssignor.assign(_Cluster({"t": 2}), members)
    new.on_assignment(by_old_leader["m-new"])  # no map: nobody named
    old.on_assignment(by_old_leader["m-old"])
    assert owners is not None and owners.by_partition == {}
    # The new leader reads the claims in either join (aiokafka's format): nothing moves.
    members = {"m-new": new.metadata(["t"]), "m-old": old.metadata(["t"])}
    by_new_leader = new.assign(_Cluster({"t": 2}), members)
    for m in members:
        assert by_new_leader[m].assignment == by_old_leader[m].assignment
    new.on_assignment(by_new_leader["m-new"])
    old_held = [p for _, ps in by_new_leader["m-old"].assignment for p in ps]
    assert old_held and all(owners.owner("t", p) is None for p in old_held)  # unknown
    assert isinstance(old.metadata(["t"]), ConsumerProtocolMemberMetadata)


def test_the_advertised_url_is_the_setting_else_the_bind_address() -> None:
    assert advertised_url("127.0.0.1", 6066) == "http://127.0.0.1:6066"
    assert advertised_url("0.0.0.0", 6066) == f"http://{socket.gethostname()}:6066"
    assert advertised_url("::1", 7000) == "http://[::1]:7000"
    assert advertised_url("0.0.0.0", 6066, "https://kappa-0.kappa:6066/") == (
        "https://kappa-0.kappa:6066"
    )


def test_local_state_between_the_sticky_data_and_the_url_leaves_both_as_they_were() -> None:
    sticky = StickyAssignorUserDataV1([("orders", [0, 2])], 7).encode()
    state = [("orders", 3), ("orders.by-user", 1), ("orders", 1), ("orders", 3)]
    joined = with_url(with_local_state(sticky, state), "http://w1:6066")
    assert member_url(joined) == "http://w1:6066"
    assert member_local_state(joined) == [("orders", 1), ("orders", 3), ("orders.by-user", 1)]
    decoded = StickyAssignorUserDataV1.decode(joined)  # what any leader reads first
    assert (list(decoded.previous_assignment), decoded.generation) == ([("orders", [0, 2])], 7)
    first = with_local_state(b"", [("orders", 0)])  # a first join, and no URL
    assert StickyAssignorUserDataV1.decode(first).generation == -1
    assert member_local_state(first) == [("orders", 0)] and member_url(first) is None
    assert member_local_state(with_local_state(sticky, [])) == []


def test_a_member_that_says_no_state_or_says_it_unreadably_has_none() -> None:
    """Older members' formats, and anything garbled: no state, never a failed join."""
    sticky = StickyAssignorUserDataV1([("orders", [0])], 2).encode()
    for older in (b"", sticky, with_url(sticky, "http://old:6066")):
        assert member_local_state(older) == []
    for garbled in (b"{", b"[1]", b'{"orders":["x",true,1.5]}', b'{"orders":3}', b"\xff"):
        assert member_local_state(sticky + STATE_MARK + garbled + URL_MARK + b"http://w") == []
    mixed = sticky + STATE_MARK + b'{"orders":[0,"x",2]}'
    assert member_local_state(mixed) == [("orders", 0), ("orders", 2)]  # the readable ones


def test_the_leader_hands_a_restarted_member_the_partitions_it_has_state_for() -> None:
    """The old member claims every partition; the restarted one claims none but has state
    for 0 and 1. Old and new members and leaders mix: a member that says nothing of its
    state, or a leader that does not read it, assigns as before."""
    keeper, _ = _assignor("http://a:6066")
    keeper.on_assignment(keeper.assign(_Cluster({"t": 4}), {"m-a": keeper.metadata(["t"])})["m-a"])
    restarted, owners = _assignor("http://b:6066", [("t", 0), ("t", 1), ("other", 0)])
    members = {"m-a": keeper.metadata(["t"]), "m-b": restarted.metadata(["t"])}
    for leader in (keeper, restarted):
        got = leader.assign(_Cluster({"t": 4}), members)
        assert (_held(got["m-a"]), _held(got["m-b"])) == ([2, 3], [0, 1])
    restarted.on_assignment(got["m-b"])
    assert owners is not None and owners.owner("t", 2) == "http://a:6066"  # the URL still read
    # An old leader reads the claims and ignores the rest: m-a keeps the lowest it claims.
    by_old = StickyPartitionAssignor.assign(_Cluster({"t": 4}), members)
    assert sorted(_held(by_old["m-a"]) + _held(by_old["m-b"])) == [0, 1, 2, 3]
    # A restarted member of an older release says nothing of its state: as before.
    old_restarted, _ = _assignor("http://b:6066")
    members["m-b"] = old_restarted.metadata(["t"])
    got = keeper.assign(_Cluster({"t": 4}), members)
    assert (_held(got["m-a"]), _held(got["m-b"])) == ([0, 1], [2, 3])


def test_a_member_that_cannot_list_its_state_joins_without_it() -> None:
    def unreadable() -> list[tuple[str, int]]:
        raise PermissionError("state dir")

    consumer = SimpleNamespace(_coordinator=SimpleNamespace(generation=1))
    assignor = sticky_assignor(consumer, PartitionOwners("http://a:6066"), unreadable)
    joined = assignor.metadata(["t"])
    assert member_url(joined.user_data) == "http://a:6066"
    assert member_local_state(joined.user_data) == []
