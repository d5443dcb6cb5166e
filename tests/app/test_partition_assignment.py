"""The group leader's partition assignment: even per topic, then in total, then sticky."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from itertools import combinations, product

from hypothesis import example, given
from hypothesis import strategies as st

from app.partition_assignment import Assignment, Claim, Partition, assign_partitions

SOURCES = ["orders", "orders.by-user", "orders.by-window", "orders.revenue-1m"]


def _claims(assignment: Assignment, generation: int) -> dict[str, Claim]:
    """What each member's next join says after it was handed `assignment`."""
    return {
        m: Claim(generation, [(t, p) for t, ps in topics.items() for p in ps])
        for m, topics in assignment.items()
    }


def _owners(assignment: Assignment) -> dict[tuple[str, int], str]:
    return {(t, p): m for m, topics in assignment.items() for t, ps in topics.items() for p in ps}


def _counts(assignment: Assignment) -> dict[str, dict[str, int]]:
    return {m: {t: len(ps) for t, ps in topics.items()} for m, topics in assignment.items()}


def test_two_workers_get_half_of_every_source() -> None:
    """aiokafka's sticky assignor could hand one worker two whole sources and the other the
    other two: even in total, uneven per pipeline."""
    partitions = {t: range(4) for t in SOURCES}
    fresh = assign_partitions(partitions, {"w-a": SOURCES, "w-b": SOURCES})
    assert _counts(fresh) == {m: dict.fromkeys(SOURCES, 2) for m in ("w-a", "w-b")}

    # From what aiokafka's assignor would have left: each keeps two of every source it held.
    whole = {
        "w-a": Claim(3, [(t, p) for t in SOURCES[:2] for p in range(4)]),
        "w-b": Claim(3, [(t, p) for t in SOURCES[2:] for p in range(4)]),
    }
    split = assign_partitions(partitions, {"w-a": SOURCES, "w-b": SOURCES}, whole)
    assert split == {
        "w-a": {t: [0, 1] if t in SOURCES[:2] else [2, 3] for t in SOURCES},
        "w-b": {t: [2, 3] if t in SOURCES[:2] else [0, 1] for t in SOURCES},
    }


def test_a_worker_leaving_spreads_its_partitions_and_the_others_keep_theirs() -> None:
    partitions = {t: range(4) for t in SOURCES}
    three = dict.fromkeys(("w-a", "w-b", "w-c"), SOURCES)
    before = assign_partitions(partitions, three)
    assert sorted(sum(c.values()) for c in _counts(before).values()) == [5, 5, 6]
    claims = _claims(before, 4)
    del claims["w-b"]
    after = assign_partitions(partitions, {"w-a": SOURCES, "w-c": SOURCES}, claims)
    assert _counts(after) == {m: dict.fromkeys(SOURCES, 2) for m in ("w-a", "w-c")}
    for m in ("w-a", "w-c"):
        for t, ps in before[m].items():
            assert set(ps) <= set(after[m][t]), (m, t)


def test_a_worker_joining_takes_only_its_share() -> None:
    partitions = {t: range(4) for t in SOURCES}
    two = assign_partitions(partitions, {"w-b": SOURCES, "w-c": SOURCES})
    three = assign_partitions(
        partitions, dict.fromkeys(("w-a", "w-b", "w-c"), SOURCES), _claims(two, 2)
    )
    moved = {tp for tp, m in _owners(three).items() if _owners(two)[tp] != m}
    assert moved == {tp for tp, m in _owners(three).items() if m == "w-a"}
    assert len(moved) == 5  # 16 partitions in 6, 5, 5


def test_the_remainders_even_out_the_totals() -> None:
    """Four sources of three partitions: each of two workers takes the extra one of two."""
    partitions = {t: range(3) for t in SOURCES}
    got = _counts(assign_partitions(partitions, {"w-a": SOURCES, "w-b": SOURCES}))
    assert sum(got["w-a"].values()) == sum(got["w-b"].values()) == 6
    # and from claims that have one worker take every extra partition, one pair moves back
    uneven = {
        "w-a": Claim(1, [(t, p) for t in SOURCES for p in (0, 1)]),
        "w-b": Claim(1, [(t, 2) for t in SOURCES]),
    }
    evened = assign_partitions(partitions, {"w-a": SOURCES, "w-b": SOURCES}, uneven)
    assert {t: len(evened["w-a"][t]) for t in SOURCES} in (
        {t: 2 if t in two else 1 for t in SOURCES} for two in combinations(SOURCES, 2)
    )
    assert sum(len(ps) for ps in evened["w-b"].values()) == 6


def test_a_worker_reading_one_source_gets_its_share_of_it_only() -> None:
    """`kappa worker --pipeline user-totals` next to a worker running every pipeline."""
    partitions = {t: range(4) for t in SOURCES}
    got = assign_partitions(partitions, {"all": SOURCES, "one": ["orders.by-user"]})
    assert got["one"] == {"orders.by-user": [2, 3]}
    assert _counts(got)["all"] == {t: 2 if t == "orders.by-user" else 4 for t in SOURCES}


def test_the_newest_claim_on_a_partition_wins() -> None:
    """A worker back from a session timeout still claims what it held: the member that has
    held it since keeps it. Claims of partitions or topics that are gone count for nothing."""
    partitions = {"orders": range(2)}
    subscribed = {"back": ["orders"], "since": ["orders"]}
    claims = {
        "back": Claim(3, [("orders", 0), ("orders", 1), ("orders", 7), ("gone", 0)]),
        "since": Claim(5, [("orders", 0)]),
    }
    assert assign_partitions(partitions, subscribed, claims) == {
        "back": {"orders": [1]},
        "since": {"orders": [0]},
    }
    # Equal generations (members that never learnt theirs say -1): the lower member id.
    tied = {"back": Claim(-1, [("orders", 1)]), "since": Claim(-1, [("orders", 1)])}
    assert assign_partitions(partitions, subscribed, tied)["back"] == {"orders": [1]}


def test_a_claim_on_a_topic_the_member_no_longer_reads_is_not_kept() -> None:
    got = assign_partitions(
        {"orders": range(2), "other": range(2)},
        {"a": ["orders"], "b": ["orders", "other"]},
        {"a": Claim(2, [("other", 0), ("other", 1)])},
    )
    assert got == {"a": {"orders": [0]}, "b": {"orders": [1], "other": [0, 1]}}


def test_nobody_subscribed_or_nothing_to_assign() -> None:
    assert assign_partitions({}, {}) == {}
    assert assign_partitions({"orders": range(4)}, {"a": ["elsewhere"]}) == {"a": {}}
    assert assign_partitions({"orders": range(0)}, {"a": ["orders"]}) == {"a": {}}


# Properties, over random groups: topics with partition counts, members with subscriptions
# (possibly to topics that do not exist) and claims (possibly stale, overlapping, or on
# partitions that no longer exist).
TOPICS = ["t0", "t1", "t2", "t3"]
MEMBERS = ["m0", "m1", "m2", "m3"]


@st.composite
def groups(
    draw: st.DrawFn,
) -> tuple[dict[str, range], dict[str, set[str]], dict[str, Claim]]:
    partitions = {t: range(draw(st.integers(0, 6))) for t in draw(st.sets(st.sampled_from(TOPICS)))}
    members = draw(st.lists(st.sampled_from(MEMBERS), min_size=1, max_size=4, unique=True))
    subscriptions = {m: draw(st.sets(st.sampled_from([*TOPICS, "gone"]))) for m in members}
    # Mostly what an earlier group (other members, other partition counts) was handed, as
    # claims are; then claims of anything, in any generation.
    earlier = assign_partitions(
        {t: range(draw(st.integers(0, 6))) for t in partitions},
        {m: subscriptions.get(m, TOPICS) for m in draw(st.sets(st.sampled_from(MEMBERS)))},
    )
    claims = {m: c for m, c in _claims(earlier, 2).items() if m in subscriptions}
    claimable = st.tuples(st.sampled_from([*TOPICS, "gone"]), st.integers(0, 7))
    for m in draw(st.sets(st.sampled_from(members))):
        claims[m] = Claim(draw(st.integers(-1, 3)), draw(st.lists(claimable, max_size=12)))
    return partitions, subscriptions, claims


def _newest_claims(
    partitions: Mapping[str, range],
    subscriptions: Mapping[str, Collection[str]],
    claims: Mapping[str, Claim],
) -> dict[tuple[str, str], set[int]]:
    """(member, topic) -> the partitions its claim wins, if it reads the topic (a reference)."""
    winner: dict[tuple[str, int], tuple[int, str]] = {}
    for m, claim in claims.items():
        for t, p in claim.partitions:
            if t in partitions and p in partitions[t]:
                best = winner.get((t, p))
                if best is None or (claim.generation, best[1]) > (best[0], m):
                    winner[(t, p)] = (claim.generation, m)
    held: dict[tuple[str, str], set[int]] = {}
    for (t, p), (_, m) in winner.items():
        if t in subscriptions[m]:
            held.setdefault((m, t), set()).add(p)
    return held


def _kept(assignment: Assignment, held: Mapping[tuple[str, str], set[int]]) -> int:
    return sum(len(ps & set(assignment[m].get(t, ()))) for (m, t), ps in held.items())


def _squares(assignment: Assignment) -> int:
    """The sum of squared totals: the less, the evener."""
    return sum(sum(len(ps) for ps in topics.values()) ** 2 for topics in assignment.values())


def _best_by_brute_force(
    partitions: Mapping[str, range],
    subscriptions: Mapping[str, Collection[str]],
    held: Mapping[tuple[str, str], set[int]],
) -> tuple[int, int]:
    """The least sum of squared totals of any per-topic even split, and the most partitions
    kept among those: every choice of which members take each topic's remainder."""
    readers = {t: sorted(m for m in subscriptions if t in subscriptions[m]) for t in partitions}
    readers = {t: ms for t, ms in readers.items() if ms}
    choices = [combinations(ms, len(partitions[t]) % len(ms)) for t, ms in readers.items()]
    best: tuple[int, int] | None = None
    for takers in product(*choices):
        totals = dict.fromkeys(subscriptions, 0)
        kept = 0
        for (t, ms), extra in zip(readers.items(), takers):
            for m in ms:
                count = len(partitions[t]) // len(ms) + (m in extra)
                totals[m] += count
                kept += min(count, len(held.get((m, t), ())))
        score = (sum(n * n for n in totals.values()), -kept)
        best = score if best is None else min(best, score)
    return (0, 0) if best is None else (best[0], -best[1])


@given(groups())
def test_every_partition_goes_once_to_a_reader_evenly_per_topic(
    group: tuple[dict[str, range], dict[str, set[str]], dict[str, Claim]],
) -> None:
    partitions, subscriptions, claims = group
    got = assign_partitions(partitions, subscriptions, claims)
    assert set(got) == set(subscriptions)
    owners = [(t, p, m) for m, topics in got.items() for t, ps in topics.items() for p in ps]
    assert all(t in subscriptions[m] for t, _, m in owners)
    assert sorted((t, p) for t, p, _ in owners) == sorted(
        (t, p)
        for t, ps in partitions.items()
        if any(t in s for s in subscriptions.values())
        for p in ps
    )
    for t, ps in partitions.items():
        readers = [m for m in subscriptions if t in subscriptions[m]]
        counts = {len(got[m].get(t, ())) for m in readers}
        if readers:
            assert counts <= {len(ps) // len(readers), -(-len(ps) // len(readers))}, (t, got)


@given(groups())
@example(  # keeping its partition would leave m0 with two and m1 with none
    (
        {"t1": range(1), "t3": range(1)},
        {"m0": {"t1", "t3"}, "m1": {"t1"}},
        {"m0": Claim(2, [("t1", 0)])},
    )
)
def test_totals_are_evenest_then_the_most_partitions_stay(
    group: tuple[dict[str, range], dict[str, set[str]], dict[str, Claim]],
) -> None:
    partitions, subscriptions, claims = group
    got = assign_partitions(partitions, subscriptions, claims)
    held = _newest_claims(partitions, subscriptions, claims)
    assert (_squares(got), _kept(got, held)) == _best_by_brute_force(
        partitions, subscriptions, held
    )
    for (m, t), ps in held.items():  # within its share of a topic, a member keeps what it had
        assert len(ps & set(got[m].get(t, ()))) == min(len(ps), len(got[m].get(t, ())))


@given(groups())
def test_the_same_group_in_any_order_is_assigned_alike(
    group: tuple[dict[str, range], dict[str, set[str]], dict[str, Claim]],
) -> None:
    partitions, subscriptions, claims = group
    got = assign_partitions(partitions, subscriptions, claims)
    reordered = assign_partitions(
        {t: list(reversed(partitions[t])) for t in reversed(partitions)},
        {m: sorted(subscriptions[m], reverse=True) for m in reversed(subscriptions)},
        {
            m: Claim(claims[m].generation, list(claims[m].partitions)[::-1])
            for m in reversed(claims)
        },
    )
    assert reordered == got


@given(groups())
def test_an_even_assignment_claimed_back_stays_as_it_is(
    group: tuple[dict[str, range], dict[str, set[str]], dict[str, Claim]],
) -> None:
    partitions, subscriptions, claims = group
    got = assign_partitions(partitions, subscriptions, claims)
    assert assign_partitions(partitions, subscriptions, _claims(got, 9)) == got


@given(st.integers(1, 4), st.integers(0, 9), st.integers(1, 4), st.sampled_from(["a", "m2", "z"]))
def test_a_worker_joining_workers_of_the_same_sources_moves_only_what_it_takes(
    topics: int, count: int, members: int, joining: str
) -> None:
    """Kappa's case: every worker reads every source, all with the same partition count."""
    sources = [f"s{i}" for i in range(topics)]
    partitions = {s: range(count) for s in sources}
    workers = {f"w{i}": sources for i in range(members)}
    before = assign_partitions(partitions, workers)
    after = assign_partitions(partitions, {**workers, joining: sources}, _claims(before, 1))
    owners = _owners(before)
    assert all(owners[tp] == m or m == joining for tp, m in _owners(after).items())


def test_a_restarted_worker_gets_back_the_partitions_it_has_state_for() -> None:
    """A restarted worker claims nothing (the sticky claim lived in its memory), but its state
    directories are still there: it gets those partitions back, not others (full restores)."""
    partitions = {t: range(4) for t in SOURCES}
    everything = Claim(7, [(t, p) for t in SOURCES for p in range(4)])
    workers = {"w-a": SOURCES, "w-b": SOURCES}
    for b_state, a_keeps in (([2, 3], [0, 1]), ([0, 1], [2, 3]), ([0, 3], [1, 2])):
        state = {"w-b": [(t, p) for t in SOURCES for p in b_state]}
        got = assign_partitions(partitions, workers, {"w-a": everything}, state)
        assert got == {
            "w-a": dict.fromkeys(SOURCES, a_keeps),
            "w-b": dict.fromkeys(SOURCES, b_state),
        }
    # Claims come first: a partition stays with its claimant even if another has state for it.
    claims = {"w-a": Claim(7, [("orders", 0), ("orders", 1)])}
    state = {"w-b": [("orders", 0), ("orders", 1)]}
    got = assign_partitions({"orders": range(4)}, workers, claims, state)
    assert got == {"w-a": {"orders": [0, 1]}, "w-b": {"orders": [2, 3]}}


def test_state_places_partitions_within_each_members_share() -> None:
    """Three workers after all restarted: each gets what it has state for, as far as its
    share allows, a worker with state for more than its share moving some to the others."""
    workers = {m: ["orders"] for m in ("w-a", "w-b", "w-c")}
    state = {
        "w-a": [("orders", p) for p in (0, 1, 2, 3)],  # from before w-c joined
        "w-b": [("orders", p) for p in (3, 4, 5)],
        "w-c": [("orders", 0), ("orders", 9)],  # 9: a partition that no longer exists
    }
    got = assign_partitions({"orders": range(6)}, workers, None, state)
    assert got == {"w-a": {"orders": [1, 2]}, "w-b": {"orders": [3, 4]}, "w-c": {"orders": [0, 5]}}
    assert _on_state(got, state) == 5  # 5 is nobody's but w-b's, whose share is full
    # State for a topic the member does not read, or of a member not in the group: nothing.
    ignored = {"w-a": [("other", 0)], "gone": [("orders", 0)]}
    assert assign_partitions({"orders": range(6)}, workers, None, ignored) == (
        assign_partitions({"orders": range(6)}, workers)
    )


@st.composite
def stateful_groups(
    draw: st.DrawFn,
) -> tuple[dict[str, range], dict[str, set[str]], dict[str, Claim], dict[str, list[Partition]]]:
    """A group as `groups` draws them, and the partitions each member has local state for
    (possibly of topics it does not read, or partitions that no longer exist)."""
    partitions, subscriptions, claims = draw(groups())
    stateful = st.tuples(st.sampled_from([*TOPICS, "gone"]), st.integers(0, 7))
    state = {
        m: draw(st.lists(stateful, max_size=12)) for m in draw(st.sets(st.sampled_from(MEMBERS)))
    }
    return partitions, subscriptions, claims, state


def _most_on_state(
    partitions: Mapping[str, range],
    got: Assignment,
    state: Mapping[str, Collection[Partition]],
) -> int:
    """The most partitions that could be on a member with state for them, each member
    holding as many of each topic as in `got` (a reference: every such split)."""
    most = 0
    for t, ps in partitions.items():
        counts = {m: len(topics[t]) for m, topics in got.items() if t in topics}
        readers = sorted(counts)
        most += max(
            (
                sum((t, p) in set(state.get(m, ())) for p, m in zip(ps, owners))
                for owners in product(readers, repeat=len(ps))
                if all(owners.count(m) == n for m, n in counts.items())
            ),
            default=0,
        )
    return most


def _on_state(got: Assignment, state: Mapping[str, Collection[Partition]]) -> int:
    return sum(
        (t, p) in set(state.get(m, ()))
        for m, topics in got.items()
        for t, ps in topics.items()
        for p in ps
    )


@given(stateful_groups())
def test_local_state_leaves_evenness_and_stickiness_as_they_were(
    group: tuple[
        dict[str, range], dict[str, set[str]], dict[str, Claim], dict[str, list[Partition]]
    ],
) -> None:
    partitions, subscriptions, claims, state = group
    got = assign_partitions(partitions, subscriptions, claims, state)
    held = _newest_claims(partitions, subscriptions, claims)
    without = assign_partitions(partitions, subscriptions, claims)
    assert (_squares(got), _kept(got, held)) == (_squares(without), _kept(without, held))
    for (m, t), ps in held.items():
        assert len(ps & set(got[m].get(t, ()))) == min(len(ps), len(got[m].get(t, ())))
    reordered = assign_partitions(
        {t: list(reversed(partitions[t])) for t in reversed(partitions)},
        {m: sorted(subscriptions[m], reverse=True) for m in reversed(subscriptions)},
        {
            m: Claim(claims[m].generation, list(claims[m].partitions)[::-1])
            for m in reversed(claims)
        },
        {m: list(state[m])[::-1] for m in reversed(state)},
    )
    assert reordered == got


@given(stateful_groups())
def test_without_claims_every_partition_it_can_goes_to_a_member_with_state_for_it(
    group: tuple[
        dict[str, range], dict[str, set[str]], dict[str, Claim], dict[str, list[Partition]]
    ],
) -> None:
    partitions, subscriptions, _, state = group
    got = assign_partitions(partitions, subscriptions, None, state)
    assert _on_state(got, state) == _most_on_state(partitions, got, state)


def test_after_a_full_restart_the_remainder_goes_where_it_lands_on_state() -> None:
    """Nobody claims anything after every worker restarted: which member takes a topic's odd
    partition decides whether one more partition catches up or restores from scratch."""
    workers = {m: ["orders"] for m in ("w-a", "w-b", "w-c")}
    state = {
        "w-a": [("orders", 0), ("orders", 1)],
        "w-b": [("orders", 0), ("orders", 1)],  # the same two: only one of them can gain
        "w-c": [("orders", 2), ("orders", 3)],
    }
    got = assign_partitions({"orders": range(4)}, workers, None, state)
    assert got["w-c"] == {"orders": [2, 3]}
    assert _on_state(got, state) == 4


@given(
    st.lists(st.sampled_from(MEMBERS), min_size=1, max_size=4, unique=True).flatmap(
        lambda members: st.tuples(
            st.just(members),
            st.integers(0, 1).map(lambda floor: floor * len(members) + 1),
            st.fixed_dictionaries(
                {m: st.lists(st.tuples(st.just("t1"), st.integers(0, 8))) for m in members}
            ),
        )
    )
)
def test_without_claims_a_single_remainder_goes_where_the_most_land_on_state(
    group: tuple[list[str], int, dict[str, list[Partition]]],
) -> None:
    """One topic, one partition over the floor: the member taking it is the best choice of
    all (every split of counts is checked), as far as state goes."""
    members, count, state = group
    one = {"t1": range(count)}
    got = assign_partitions(one, dict.fromkeys(members, ("t1",)), None, state)
    floor, remainder = divmod(count, len(members))  # remainder 1, or 0 for one member
    best = max(
        _most_on_state(
            one, {m: {"t1": [0] * (floor + (m == taker) * remainder)} for m in members}, state
        )
        for taker in members
    )
    assert _on_state(got, state) == best
