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
    PartitionOwners,
    advertised_url,
    member_url,
    owners_bytes,
    parse_owners,
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


def _assignor(url: str | None) -> tuple[type[StickyPartitionAssignor], PartitionOwners | None]:
    owners = PartitionOwners(url) if url is not None else None
    consumer = SimpleNamespace(_coordinator=SimpleNamespace(generation=1))
    return sticky_assignor(consumer, owners), owners


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
