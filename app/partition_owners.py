"""Which worker holds each source partition, by the URL of its web server: what a table query
answers for a key held elsewhere (Kafka Streams' `application.server` and `queryMetadataForKey`).

The group's own join carries it, so there is nothing else to keep up to date. Each member
appends its URL to the sticky assignor's user data in its join metadata (aiokafka decodes that
field by field and ignores what follows, so members with and without it mix in a rolling
deploy). The leader hands every member the whole map in its assignment's user data, which the
sticky assignor leaves empty. A map from a leader that does not send one is empty.

Between the sticky data and the URL, a member also says which source partitions it has local
state for (`with_local_state`), so the leader can hand them back to it (a restarted worker
claims nothing). A leader that does not read it skips it with the rest after the sticky data.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterable

from aiokafka.coordinator.assignors.sticky.sticky_assignor import (  # type: ignore[import-untyped]
    StickyAssignorUserDataV1,
)

URL_MARK = b"\x00kappa-url\x00"  # cannot occur in sticky user data: topic names have no NUL
STATE_MARK = b"\x00kappa-state\x00"  # likewise; and JSON has no NUL (it is escaped)
OWNERS_MARK = b"kappa-owners:"
OwnersByUrl = dict[str, dict[str, list[int]]]  # url -> topic -> partitions


def advertised_url(web_host: str, web_port: int, configured: str = "") -> str:
    """This worker's web address for other workers' answers: `configured` (KAPPA_ADVERTISED_URL)
    when set, else the bind address, with this machine's host name for a wildcard bind."""
    if configured:
        return configured.rstrip("/")
    host = socket.gethostname() if web_host in ("0.0.0.0", "::") else web_host
    return f"http://[{host}]:{web_port}" if ":" in host else f"http://{host}:{web_port}"


def _sticky_or_empty(sticky_user_data: bytes) -> bytes:
    """Empty sticky data (a first join) as an empty previous assignment, which decodes the
    same, so that what Kappa appends follows data the sticky decoder reads."""
    return sticky_user_data or StickyAssignorUserDataV1([], -1).encode()


def with_url(sticky_user_data: bytes, url: str) -> bytes:
    """Join metadata user data: the sticky assignor's, then this member's URL. Empty sticky
    data (a first join) becomes an empty previous assignment, which decodes the same."""
    head = _sticky_or_empty(sticky_user_data)
    return head + URL_MARK + url.encode()


def with_local_state(sticky_user_data: bytes, partitions: Iterable[tuple[str, int]]) -> bytes:
    """The sticky assignor's user data, then the partitions this member has local state for
    (compact JSON, topic -> partitions); `with_url` goes after it."""
    head = _sticky_or_empty(sticky_user_data)
    by_topic: dict[str, list[int]] = {}
    for topic, p in sorted(set(partitions)):
        by_topic.setdefault(topic, []).append(p)
    return head + STATE_MARK + json.dumps(by_topic, separators=(",", ":")).encode()


def member_local_state(user_data: bytes) -> list[tuple[str, int]]:
    """The partitions a member's join metadata says it has local state for; none for a member
    that does not say, or says it unreadably (never a failed join)."""
    head, url_mark, _ = user_data.rpartition(URL_MARK)
    _, mark, raw = (head if url_mark else user_data).rpartition(STATE_MARK)
    if not mark:
        return []
    try:
        by_topic = json.loads(raw)
        return sorted({(topic, p) for topic, ps in by_topic.items() for p in ps if type(p) is int})
    except (ValueError, AttributeError, TypeError):
        return []


def member_url(user_data: bytes) -> str | None:
    """The URL a member's join metadata carries, or None (a member without it)."""
    _, mark, url = user_data.rpartition(URL_MARK)
    return url.decode("utf-8", "replace") if mark and url else None


def owners_bytes(owners: OwnersByUrl) -> bytes:
    """The map the leader sends every member (deterministic, compact JSON)."""
    return OWNERS_MARK + json.dumps(owners, sort_keys=True, separators=(",", ":")).encode()


def parse_owners(raw: bytes) -> dict[tuple[str, int], str]:
    """(topic, partition) -> URL from an assignment's user data; empty if it carries none."""
    if not raw.startswith(OWNERS_MARK):
        return {}
    try:
        owners = json.loads(raw[len(OWNERS_MARK) :])
        return {
            (topic, int(p)): url
            for url, topics in owners.items()
            for topic, partitions in topics.items()
            for p in partitions
        }
    except (ValueError, AttributeError, TypeError):
        return {}  # not one a Kappa leader sends: no map, rather than a failed join


class PartitionOwners:
    """The latest map this worker was handed (replaced at each rebalance)."""

    def __init__(self, own_url: str) -> None:
        self.own_url = own_url
        self.by_partition: dict[tuple[str, int], str] = {}

    def owner(self, topic: str, partition: int) -> str | None:
        """The URL of the worker holding the partition, or None when unknown or this one."""
        url = self.by_partition.get((topic, partition))
        return None if url is None or url == self.own_url else url
