"""Which member of a consumer group gets which partition: even per topic, then in total, then
sticky (the group leader's computation; `app.batch_delivery.sticky_assignor` runs it).

aiokafka's sticky assignor evens out members' total partition counts only. A worker reads one
source topic per pipeline, all with the same partition count, so with two workers it could
give one all of `orders` and the other all of `orders.by-user`: even in total, while the
pipelines cost very different amounts per record. As Kafka Streams balances tasks per
sub-topology, each topic here is split among the members subscribed to it, floor or ceil of
partitions / members each; which members take a topic's remainder is chosen to even out the
members' totals, and then to leave as many partitions as possible with their previous owner
(a partition that moves is restored from its changelog by its new owner). Partitions that
must move go, where the counts allow, to a member that still has local state for them (a
restarted worker claims nothing, but its state directories are still there): it only catches
up from the changelog, as Kafka Streams places tasks by the offset sums members report
(KIP-441); where a topic's partitions do not divide evenly, the odd ones go, other things
equal, where they land on such state.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Mapping
from dataclasses import dataclass

Partition = tuple[str, int]  # (topic, partition)
Assignment = dict[str, dict[str, list[int]]]  # member -> topic -> its partitions, ascending


@dataclass(frozen=True)
class Claim:
    """The partitions a member says it held, and the group generation it held them in (what
    the sticky assignor's join metadata carries; -1: none known)."""

    generation: int
    partitions: Collection[Partition]


def assign_partitions(
    partitions: Mapping[str, Collection[int]],
    subscriptions: Mapping[str, Collection[str]],
    claims: Mapping[str, Claim] | None = None,
    local_state: Mapping[str, Collection[Partition]] | None = None,
) -> Assignment:
    """Every partition of every subscribed topic in `partitions` to exactly one member
    subscribed to its topic; every member of `subscriptions` has an entry (maybe empty).

    In order of precedence: per topic, each subscribed member gets floor or ceil of partitions
    / subscribers; members' totals are as even as they can be (least sum of squares); as many
    partitions as possible stay with their previous owner, the member whose claim on it has
    the highest generation (the lowest member id among equal ones, which only members that
    never learnt their generation send); then as many of the other partitions as possible go
    to a member with `local_state` for them (member -> partitions it has state for), and a
    member that must give up some of its claimed partitions gives up first those another
    member has state for. The same input gives the same output, whatever the order of its
    mappings and collections."""
    partitions = {t: sorted(set(ps)) for t, ps in partitions.items()}
    members = sorted(subscriptions)
    subscribers = {
        topic: [m for m in members if topic in subscriptions[m]] for topic in sorted(partitions)
    }
    subscribers = {topic: ms for topic, ms in subscribers.items() if ms}
    owners = _previous_owners(members, claims or {}, partitions)
    held: dict[tuple[str, str], list[int]] = {}  # (member, topic) -> partitions it may keep
    for (topic, p), member in sorted(owners.items()):
        if topic in subscribers and member in subscribers[topic]:
            held.setdefault((member, topic), []).append(p)
    stateful: dict[Partition, set[str]] = {}  # partition -> the members with state for it
    for member, held_state in (local_state or {}).items():
        for topic, p in held_state:
            if topic in subscribers and member in subscribers[topic]:
                stateful.setdefault((topic, p), set()).add(member)
    gains = _state_gains(partitions, subscribers, held, stateful)
    takers = _remainder_takers(partitions, subscribers, held, gains)
    assignment: Assignment = {m: {} for m in members}
    for topic, ms in subscribers.items():
        floor = len(partitions[topic]) // len(ms)
        counts = {m: floor + (m in takers[topic]) for m in ms}
        kept: dict[str, list[int]] = {}
        for m in ms:  # what another member has state for is given up first, then the highest
            mine = held.get((m, topic), [])
            wanted = [p for p in mine if stateful.get((topic, p), set()) - {m}]
            kept[m] = ([p for p in mine if p not in wanted] + wanted)[: counts[m]]
        taken = {p for ps in kept.values() for p in ps}
        free = sorted(set(partitions[topic]) - taken)
        room = {m: counts[m] - len(kept[m]) for m in ms}
        placed = _place_on_state(topic, free, room, stateful)
        rest = iter(p for p in free if p not in placed)
        for m in ms:
            given = [p for p, owner in placed.items() if owner == m]
            given += [next(rest) for _ in range(room[m] - len(given))]
            if kept[m] or given:
                assignment[m][topic] = sorted(kept[m] + given)
    return assignment


def _place_on_state(
    topic: str, free: list[int], room: Mapping[str, int], stateful: Mapping[Partition, set[str]]
) -> dict[int, str]:
    """As many of `free` as can be, each to a member with state for it and room left: a
    maximum matching by augmenting paths, partitions ascending and members sorted, so ties
    always break alike. Returns partition -> member for those placed."""
    candidates = {p: sorted(m for m in stateful.get((topic, p), ()) if room[m] > 0) for p in free}
    placed: dict[int, str] = {}
    holding: dict[str, list[int]] = {m: [] for m in room}

    def place(p: int, seen: set[str]) -> bool:
        """Places p on a member not in `seen`, moving that member's own elsewhere if need be."""
        for m in candidates[p]:
            if m in seen:
                continue
            seen.add(m)
            if len(holding[m]) < room[m] or any(place(q, seen) for q in sorted(holding[m])):
                holding[m] = [q for q in holding[m] if placed.get(q) == m]
                holding[m].append(p)
                placed[p] = m
                return True
        return False

    for p in free:
        if candidates[p]:
            place(p, set())
    return placed


def _state_gains(
    partitions: Mapping[str, Collection[int]],
    subscribers: Mapping[str, list[str]],
    held: Mapping[tuple[str, str], list[int]],
    stateful: Mapping[Partition, set[str]],
) -> set[tuple[str, str]]:
    """The (topic, member) pairs where one partition over the floor would let one more of the
    topic's unclaimed partitions go to a member with state for it: the matching of those
    partitions grows if that member has room for one more (after a restart of every worker,
    nobody claims anything, and who takes a remainder decides who restores from scratch)."""
    gains: set[tuple[str, str]] = set()
    for topic, ms in subscribers.items():
        floor, remainder = divmod(len(partitions[topic]), len(ms))
        if not remainder:
            continue
        claimed = {p for m in ms for p in held.get((m, topic), ())}
        free = [p for p in partitions[topic] if p not in claimed]
        room = {m: floor - min(len(held.get((m, topic), ())), floor) for m in ms}
        wanting = [m for m in ms if any(m in stateful.get((topic, p), ()) for p in free)]
        if not wanting:
            continue
        matched = len(_place_on_state(topic, free, room, stateful))
        for m in wanting:
            more = len(_place_on_state(topic, free, {**room, m: room[m] + 1}, stateful))
            if more > matched:
                gains.add((topic, m))
    return gains


def _previous_owners(
    members: list[str], claims: Mapping[str, Claim], partitions: Mapping[str, Collection[int]]
) -> dict[Partition, str]:
    """Each claimed partition that still exists -> the member with the newest claim on it, as
    aiokafka's and Java's sticky assignors decide between members that both claim it."""
    owners: dict[Partition, tuple[int, str]] = {}
    for member in members:  # ascending: an equal generation later does not take it
        claim = claims.get(member)
        if claim is None:
            continue
        for topic, p in claim.partitions:
            if p not in partitions.get(topic, ()):
                continue
            newest = owners.get((topic, p))
            if newest is None or claim.generation > newest[0]:
                owners[(topic, p)] = (claim.generation, member)
    return {tp: member for tp, (_, member) in owners.items()}


def _remainder_takers(
    partitions: Mapping[str, Collection[int]],
    subscribers: Mapping[str, list[str]],
    held: Mapping[tuple[str, str], list[int]],
    gains: Collection[tuple[str, str]] = (),
) -> dict[str, set[str]]:
    """Which subscribers of each topic get one partition over the floor: a min-cost flow that
    sends each topic's remainder, one partition per member, to its subscribers.

    Taking its k-th remainder partition costs a member `weight` * (its floors' total + k), so
    the cheapest flow has the least sum of squared totals (the evenest; `weight` puts that
    first); a remainder partition going to a member that holds more than the floor of that
    topic costs `keep` less (it keeps one partition more), else to a member of `gains`
    ((topic, member): one more partition would be on its local state) 1 less; `keep` is more
    than all the remainder partitions could gain by state, so keeping comes first."""
    topics = [t for t in subscribers if len(partitions[t]) % len(subscribers[t])]
    remainder = {t: len(partitions[t]) % len(subscribers[t]) for t in topics}
    floors: dict[str, int] = {}
    extras: dict[str, int] = {}  # member -> how many topics' remainders it could take part of
    for topic, ms in subscribers.items():
        for m in ms:
            floors[m] = floors.get(m, 0) + len(partitions[topic]) // len(ms)
            extras[m] = extras.get(m, 0) + (topic in remainder)
    keep = sum(remainder.values()) + 1
    weight = keep * keep  # more than all that keeping and state can gain
    members = sorted(m for m, n in extras.items() if n)
    flow = _Flow(2 + len(topics) + len(members))
    source, sink = 0, 1
    topic_node = {t: 2 + i for i, t in enumerate(topics)}
    member_node = {m: 2 + len(topics) + i for i, m in enumerate(members)}
    for topic in topics:
        flow.add(source, topic_node[topic], remainder[topic], 0)
    edges: dict[tuple[str, str], int] = {}
    for topic in topics:
        floor = len(partitions[topic]) // len(subscribers[topic])
        for m in subscribers[topic]:
            keeps_one_more = len(held.get((m, topic), ())) > floor
            gain = keep if keeps_one_more else int((topic, m) in gains)
            edges[(topic, m)] = flow.add(topic_node[topic], member_node[m], 1, -gain)
    for m in members:
        for k in range(1, extras[m] + 1):
            flow.add(member_node[m], sink, 1, weight * (floors[m] + k))
    flow.send(source, sink, sum(remainder.values()))
    takers: dict[str, set[str]] = {t: set() for t in subscribers}
    for (topic, m), edge in edges.items():
        if flow.used(edge):
            takers[topic].add(m)
    return takers


class _Flow:
    """A min-cost flow by successive shortest paths (Bellman-Ford: edges may cost less than
    nothing). Nodes and edges are visited in the order added, so ties always break alike."""

    def __init__(self, nodes: int) -> None:
        self.out: list[list[int]] = [[] for _ in range(nodes)]  # node -> its edges
        self.to: list[int] = []
        self.room: list[int] = []
        self.cost: list[int] = []

    def add(self, a: int, b: int, capacity: int, cost: int) -> int:
        """An edge a -> b (and its residual twin, the next index); returns the edge."""
        for frm, to, room, c in ((a, b, capacity, cost), (b, a, 0, -cost)):
            self.out[frm].append(len(self.to))
            self.to.append(to)
            self.room.append(room)
            self.cost.append(c)
        return len(self.to) - 2

    def used(self, edge: int) -> bool:
        return self.room[edge ^ 1] > 0

    def send(self, source: int, sink: int, amount: int) -> None:
        """Sends `amount` from source to sink at the least cost (the caller knows it fits)."""
        while amount > 0:
            distance = {source: 0}
            via: dict[int, int] = {}  # node -> the edge its cheapest path arrives by
            queue, queued = deque([source]), {source}
            while queue:  # Bellman-Ford, looking again only from nodes that got cheaper
                node = queue.popleft()
                queued.discard(node)
                for e in self.out[node]:
                    to, here = self.to[e], distance[node] + self.cost[e]
                    if self.room[e] > 0 and (to not in distance or here < distance[to]):
                        distance[to], via[to] = here, e
                        if to not in queued:
                            queue.append(to)
                            queued.add(to)
            if sink not in distance:
                raise ValueError("the flow does not fit")
            step, node = amount, sink
            path = []
            while node != source:
                e = via[node]
                path.append(e)
                step = min(step, self.room[e])
                node = self.to[e ^ 1]
            for e in path:
                self.room[e] -= step
                self.room[e ^ 1] += step
            amount -= step
