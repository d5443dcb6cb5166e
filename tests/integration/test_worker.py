"""The live worker against the embedded broker: outputs equal the batch computation."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from app.orders_generator import GeneratorSpec
from tests.support.checks import (
    changelogs_caught_up,
    check_copied_once,
    check_copies_applied,
    check_outputs,
    eventually,
    reference_for,
)
from tests.support.datasets import START_MS, orders_spec, produce_orders
from tests.support.topics import delete_topics, list_topics
from tests.support.workers import Worker, kappa_env, read_records, run_kappa, scrape

pytestmark = pytest.mark.integration


def _spec(count: int, seed: int, start_ms: int = START_MS) -> GeneratorSpec:
    """Event times over 20 minutes whatever the count, so windows close within a run."""
    return orders_spec(count, seed, start_ms, keys=60, users=40, ms_per_event=1_200_000 // count)


def _get_json(url: str) -> dict:  # type: ignore[type-arg]
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def _alive(worker: Worker):
    def check() -> None:
        assert worker.proc is not None
        if worker.proc.poll() is not None:
            raise RuntimeError(f"worker died ({worker.proc.returncode}):\n{worker.tail_log()}")

    return check


def _source_partitions(worker: Worker) -> dict[str, list[int]]:
    """Each pipeline's source partitions the worker holds, once it is ready (`/ready`)."""
    try:
        return _get_json(f"http://127.0.0.1:{worker.web_port}/ready")["partitions"]  # type: ignore[no-any-return]
    except urllib.error.URLError as e:  # not serving yet, or 503: not ready
        raise AssertionError(f"{worker.log_path.name}: not ready ({e})") from None


async def _each_holds_half_of_every_source(a: Worker, b: Worker) -> None:
    """aiokafka's own sticky assignment evened out totals only: the worker that joined got
    two whole sources, the other kept the other two."""
    held = {"a": _source_partitions(a), "b": _source_partitions(b)}
    assert held["a"].keys() == held["b"].keys(), held
    for pipeline, partitions in held["a"].items():
        theirs = held["b"][pipeline]
        assert sorted(partitions + theirs) == [0, 1, 2, 3], held
        assert len(partitions) == len(theirs) == 2, held


def _logs(*workers: Worker) -> str:
    """The workers' log tails and, for those still running, their /ready answer: a worker
    left out of its group says there what the coordinator last answered its join and sync."""
    said = []
    for w in workers:
        if not w.log_path.exists():
            continue
        said.append(f"--- {w.log_path.name}:\n{w.tail_log(200)}")
        if w.proc is not None and w.proc.poll() is None:
            try:
                said.append(f"--- its /ready: {w.ready()}")
            except OSError as e:  # not serving (yet, or any more)
                said.append(f"--- its /ready: no answer ({e})")
    return "\n".join(said)


async def test_live_worker_outputs_equal_batch_computation(
    broker: str, unique: str, tmp_path: Path
) -> None:
    env = kappa_env(broker, unique, tmp_path / "state")
    assert run_kappa(["topics"], env).returncode == 0
    await produce_orders(broker, f"{unique}.orders", _spec(8_000, seed=1))
    ref = await reference_for(broker, f"{unique}.orders")
    assert ref.dlq and ref.late and len(ref.windows) > 100  # the dataset exercises every path

    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        await eventually(lambda: check_outputs(broker, unique, ref), alive=_alive(worker))
        await _user_totals_answered(worker, ref.user_totals)  # the table is queryable
        await _trends_answered(worker, broker, unique)
        with pytest.raises(urllib.error.HTTPError) as e:
            _get_json(f"http://127.0.0.1:{worker.web_port}/tables/user-totals/nobody%7B%2F%7D")
        assert e.value.code == 404
        assert json.loads(e.value.read()) == {"error": "no orders for user nobody{/}"}
        longest = urllib.parse.quote("中" * 1024)  # the longest id, 9 KiB encoded: was a 400
        with pytest.raises(urllib.error.HTTPError) as e:
            _get_json(f"http://127.0.0.1:{worker.web_port}/tables/user-totals/{longest}")
        assert e.value.code == 404, e.value.read()
        for faust_page in ("/router/x/", "/table/x/y/"):  # faust's own: a 500 and a 503 once
            with pytest.raises(urllib.error.HTTPError) as e:
                _get_json(f"http://127.0.0.1:{worker.web_port}{faust_page}")
            assert e.value.code == 404, faust_page
        m = worker.metrics()
        assert m["kappa_dlq_total"] == len(ref.dlq)
        assert m["kappa_late_total"] == len(ref.late)
        assert m["kappa_windows_closed_total"] == len(ref.windows)
        assert worker.metric("kappa_record_age_seconds_count", pipeline="orders") >= 1
        assert worker.metric("kappa_record_age_seconds_count", pipeline="user-totals") >= 1
        # Idle, the worker sent its held batches' changelog entries: every partition's
        # changelog reflects all it has processed, without waiting for more input.
        await eventually(lambda: changelogs_caught_up(env), alive=_alive(worker))
        await eventually(lambda: _no_lag(worker), 60, _alive(worker))
    finally:
        assert worker.stop() == 0, worker.tail_log()

    # Restarted with no new input, it answers for its partitions without waiting for records.
    worker = Worker(env, tmp_path / "restarted.log").start()
    try:
        await eventually(lambda: _user_totals_answered(worker, ref.user_totals), 60, _alive(worker))
    finally:
        assert worker.stop() == 0, worker.tail_log()


async def _no_lag(worker: Worker) -> None:
    """Every pipeline that processed records exports a lag for each of its 4 source
    partitions, and each is 0: the worker applied everything its sources hold, and passed
    over no offset without a record."""
    samples = scrape(worker.web_port)
    pipelines = {lab["pipeline"] for n, lab, _ in samples if n == "kappa_events_in_total"}
    lags: dict[str, dict[str, float]] = {}
    for name, labels, value in samples:
        if name == "kappa_consumer_lag_records":
            lags.setdefault(labels["pipeline"], {})[labels["partition"]] = value
    assert pipelines and set(lags) == pipelines, (pipelines, lags)
    for pipeline, by_partition in lags.items():
        assert by_partition == dict.fromkeys("0123", 0.0), (pipeline, by_partition)
    # No source is written in transactions here: an offset passed over is a record lost.
    missing = {
        labels["pipeline"]: value
        for name, labels, value in samples
        if name == "kappa_source_offsets_missing_total"
    }
    assert pipelines <= set(missing) and set(missing.values()) == {0.0}, missing


async def test_a_query_for_a_key_held_elsewhere_names_the_worker_that_holds_it(
    broker: str, unique: str, tmp_path: Path
) -> None:
    """Two workers: a user whose partition the asked worker does not hold gets a 404 naming
    the other's URL (`owner`), and asking there answers, as Kafka Streams' metadata for a key
    lets a caller route."""
    env = kappa_env(broker, unique, tmp_path / "unused")
    assert run_kappa(["topics"], env).returncode == 0
    await produce_orders(broker, f"{unique}.orders", _spec(2_000, seed=3))
    ref = await reference_for(broker, f"{unique}.orders")
    a = Worker({**env, "KAPPA_STATE_DIR": str(tmp_path / "a")}, tmp_path / "a.log").start()
    # b runs only user-totals: the group moves orders.by-user partitions to it
    b = Worker({**env, "KAPPA_STATE_DIR": str(tmp_path / "b")}, tmp_path / "b.log")
    b.start("--pipeline", "user-totals")
    b_url = f"http://127.0.0.1:{b.web_port}"
    routed: set[str] = set()

    async def answered_through_owners() -> None:
        routed.clear()
        for user, (n, spend) in ref.user_totals.items():
            url = f"http://127.0.0.1:{a.web_port}/tables/user-totals/{user}"
            try:
                got = _get_json(url)
            except urllib.error.HTTPError as e:
                body = json.loads(e.read())
                assert e.code == 404 and body.get("owner") == b_url, (user, e.code, body)
                assert isinstance(body.get("partition"), int), body
                routed.add(user)
                got = _get_json(f"{body['owner']}/tables/user-totals/{user}")
            except urllib.error.URLError as e:  # still starting
                raise AssertionError(f"{user}: {e.reason}") from None
            assert got["orders"] == n and abs(got["spend"] - spend) <= 1e-6 * max(1.0, spend)
        assert routed, "no user was held by the other worker"

    try:
        await eventually(lambda: check_outputs(broker, unique, ref), alive=_alive(a))
        await eventually(answered_through_owners, alive=_alive(b), explain=lambda: _logs(a, b))
        # `kappa query` gives the same answer asked of either worker: it follows the owner itself
        a_url = f"http://127.0.0.1:{a.web_port}"
        user = min(routed)
        for asked in (a_url, b_url):
            done = run_kappa(["query", "user-totals", user, "--worker", asked], env, timeout=30)
            assert done.returncode == 0, done.stderr
            got = json.loads(done.stdout)
            n, spend = ref.user_totals[user]
            assert (got["user_id"], got["orders"]) == (user, n)
            assert abs(got["spend"] - spend) <= 1e-6 * max(1.0, spend)
        done = run_kappa(["query", "user-totals", "nobody", "--worker", a_url], env, timeout=30)
        assert done.returncode == 1 and "no orders for user nobody" in done.stderr, done.stderr
        # b keeps no product-trends table: it says which it keeps, not that the key has none
        done = run_kappa(["query", "product-trends", "p1", "--worker", b_url], env, timeout=30)
        assert done.returncode == 2, done.stderr
        assert "serves no product-trends queries (only user-totals)" in done.stderr
        with pytest.raises(urllib.error.HTTPError) as e:  # not looked up as the key "%FF"
            _get_json(f"{a_url}/tables/user-totals/%FF")
        assert e.value.code == 400 and "not valid UTF-8" in json.loads(e.value.read())["error"]
    finally:
        for w in (a, b):
            if w.proc is not None and w.proc.poll() is None:
                assert w.stop() == 0, w.tail_log()


async def _user_totals_answered(worker: Worker, totals: dict[str, tuple[int, float]]) -> None:
    for user, (n, spend) in totals.items():
        try:
            got = _get_json(f"http://127.0.0.1:{worker.web_port}/tables/user-totals/{user}")
        except urllib.error.HTTPError as e:
            raise AssertionError(f"{user}: {e.code} {e.read()!r}") from None
        except urllib.error.URLError as e:  # still starting
            raise AssertionError(f"{user}: {e.reason}") from None
        assert got["orders"] == n and abs(got["spend"] - spend) <= 1e-6 * max(1.0, spend)


async def _trends_answered(worker: Worker, broker: str, prefix: str) -> None:
    """Each product's trend is queryable, and stands where its newest point left it."""
    newest: dict[str, dict[str, object]] = {}
    for rs in (await read_records(broker, f"{prefix}.orders.product-trends")).values():
        for _, _, value, _ in rs:
            point = json.loads(value or b"")
            newest[point["product_id"]] = point  # a product's points are in order
    assert newest
    for product, point in newest.items():
        got = _get_json(f"http://127.0.0.1:{worker.web_port}/tables/product-trends/{product}")
        assert got["last_window_start"] == point["window_start"], product
        for field in ("windows", "cum_orders", "cum_revenue", "moving_avg", "forecast_next"):
            assert got[field] == point[field], (product, field)
    with pytest.raises(urllib.error.HTTPError) as e:
        _get_json(f"http://127.0.0.1:{worker.web_port}/tables/product-trends/nothing")
    assert e.value.code == 404
    assert json.loads(e.value.read()) == {"error": "no closed window for product nothing"}
    signals: dict[str, dict[str, object]] = {}
    for rs in (await read_records(broker, f"{prefix}.orders.product-signals")).values():
        for _, _, value, _ in rs:
            point = json.loads(value or b"")
            signals[point["product_id"]] = point
    assert signals.keys() == newest.keys()
    for product, point in signals.items():
        got = _get_json(f"http://127.0.0.1:{worker.web_port}/tables/product-signals/{product}")
        assert got["last_window_start"] == point["window_start"], product
        assert (got["accuracy"], got["scored"]) == (point["accuracy"], point["scored"]), product
        assert got["p_up_next"] == point["p_up_next"], product
        assert sorted(got["level_revenues"]) == got["level_revenues"]
        assert len(got["level_revenues"]) == point["levels"]
        assert got["level_revenues"][point["level"]] == point["level_revenue"], product
    with pytest.raises(urllib.error.HTTPError) as e:
        _get_json(f"http://127.0.0.1:{worker.web_port}/tables/product-signals/nothing")
    assert e.value.code == 404
    assert json.loads(e.value.read()) == {"error": "no signals yet for product nothing"}


def _pipelines_counted(worker: Worker) -> set[str]:
    return {
        labels["pipeline"]
        for name, labels, value in worker._samples()
        if name == "kappa_events_in_total" and value > 0
    }


async def test_each_pipeline_in_its_own_process_gives_the_same_outputs(
    broker: str, unique: str, tmp_path: Path
) -> None:
    """`kappa worker --pipeline NAME` per process (README): one consumer group, two
    subscriptions; each source's partitions go only to the workers that read it."""
    env = kappa_env(broker, unique, tmp_path / "state")
    assert run_kappa(["topics"], env).returncode == 0
    await produce_orders(broker, f"{unique}.orders", _spec(4_000, seed=4))
    ref = await reference_for(broker, f"{unique}.orders")
    orders = Worker(env, tmp_path / "orders.log").start("--pipeline", "orders")
    totals_env = kappa_env(broker, unique, tmp_path / "state-totals")  # a state dir each
    totals = Worker(totals_env, tmp_path / "totals.log").start(
        "--pipeline",
        "user-totals",
        "--pipeline",
        "product-trends",
        "--pipeline",
        "top-products",
    )

    def both_alive() -> None:
        _alive(orders)()
        _alive(totals)()

    try:
        await eventually(lambda: check_outputs(broker, unique, ref), alive=both_alive)
        assert _pipelines_counted(orders) == {"orders"}
        assert _pipelines_counted(totals) == {
            "user-totals",
            "product-trends",
            "top-products",
        }
    finally:
        assert orders.stop() == 0, orders.tail_log()
        assert totals.stop() == 0, totals.tail_log()


async def test_restart_midway_keeps_windows_exact(broker: str, unique: str, tmp_path: Path) -> None:
    env = kappa_env(broker, unique, tmp_path / "state")
    assert run_kappa(["topics"], env).returncode == 0
    first = _spec(5_000, seed=2)
    await produce_orders(broker, f"{unique}.orders", first)

    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        worker.wait_until(lambda m: m.get("kappa_events_in_total", 0) >= 2_000)
    finally:
        stopped = worker.stop()  # SIGTERM midway (after a failed wait too: none left running)
    assert stopped == 0, worker.tail_log()

    await produce_orders(
        broker, f"{unique}.orders", _spec(5_000, seed=3, start_ms=first.start_ms + first.span_ms)
    )
    ref = await reference_for(broker, f"{unique}.orders")
    worker = Worker(env, tmp_path / "worker2.log").start()
    try:
        await eventually(lambda: check_outputs(broker, unique, ref), alive=_alive(worker))
    finally:
        assert worker.stop() == 0, worker.tail_log()


async def test_partitions_handed_back_catch_up_from_their_changelogs(
    broker: str, unique: str, tmp_path: Path
) -> None:
    """A rolling restart: a worker that gets back partitions whose state it still has applies
    only what the other worker wrote to their changelogs meanwhile, and results stay exact."""
    base = kappa_env(broker, unique, tmp_path / "unused", KAPPA_LOG_LEVEL="info")  # restores
    assert run_kappa(["topics"], base).returncode == 0
    a = Worker({**base, "KAPPA_STATE_DIR": str(tmp_path / "a")}, tmp_path / "a.log").start()
    b = Worker({**base, "KAPPA_STATE_DIR": str(tmp_path / "b")}, tmp_path / "b.log")
    start = START_MS
    try:
        for step, seed in enumerate((7, 8, 9)):
            chunk = _spec(2_000, seed=seed, start_ms=start)
            start += chunk.span_ms
            await produce_orders(broker, f"{unique}.orders", chunk)
            ref = await reference_for(broker, f"{unique}.orders")
            await eventually(
                lambda ref=ref: check_outputs(broker, unique, ref),
                alive=_alive(a),
                explain=lambda: _logs(a, b),
            )
            await eventually(lambda: changelogs_caught_up(base), timeout=60)  # held ones sent
            if step == 0:  # b takes over half of a's partitions, restoring them whole
                b.start().wait_until(lambda m: m.get("kappa_changelog_restored_total", 0) > 0)
                await eventually(
                    lambda: _each_holds_half_of_every_source(a, b),
                    timeout=60,
                    alive=_alive(b),
                    explain=lambda: _logs(a, b),
                )
            if step == 1:  # and hands them back
                assert b.stop() == 0, b.tail_log()
        log = a.log_path.read_text()
        assert "catching up from" in log and "restoring from" not in log, log[-3000:]
    finally:
        for w in (a, b):
            if w.proc is not None and w.proc.poll() is None:
                w.stop()


async def test_a_restarted_worker_gets_back_the_partitions_it_has_state_for(
    broker: str, unique: str, tmp_path: Path
) -> None:
    """A restarted worker claims nothing, but its join says which partitions it has state
    for: the leader hands it those (here 0 and 1, which the other worker would otherwise
    keep, as the lowest of all it claims), and it catches up rather than restoring."""
    base = kappa_env(broker, unique, tmp_path / "unused", KAPPA_LOG_LEVEL="info")  # restores
    assert run_kappa(["topics"], base).returncode == 0
    b_env = {**base, "KAPPA_STATE_DIR": str(tmp_path / "b")}
    b = Worker(b_env, tmp_path / "b.log").start()
    a = Worker({**base, "KAPPA_STATE_DIR": str(tmp_path / "a")}, tmp_path / "a.log")
    b_again = Worker(b_env, tmp_path / "b-again.log")
    try:
        await produce_orders(broker, f"{unique}.orders", _spec(1_000, seed=11))
        ref = await reference_for(broker, f"{unique}.orders")
        await eventually(lambda: check_outputs(broker, unique, ref), alive=_alive(b))
        await eventually(lambda: changelogs_caught_up(base), timeout=60)
        assert b.stop() == 0, b.tail_log()
        for partition_dir in (tmp_path / "b").glob("v1/*/p[23]"):  # b keeps state for 0, 1
            shutil.rmtree(partition_dir)
        a.start()  # restores all four from the changelogs, and claims them all from now on
        chunk = _spec(1_000, seed=12, start_ms=START_MS + _spec(1_000, seed=11).span_ms)
        await produce_orders(broker, f"{unique}.orders", chunk)  # b's state falls behind
        ref = await reference_for(broker, f"{unique}.orders")
        await eventually(lambda: check_outputs(broker, unique, ref), alive=_alive(a))
        await eventually(lambda: changelogs_caught_up(base), timeout=60)
        b_again.start()
        await eventually(
            lambda: _each_holds_half_of_every_source(a, b_again),
            timeout=60,
            alive=_alive(b_again),
            explain=lambda: _logs(a, b_again),
        )
        assert set(map(tuple, _source_partitions(b_again).values())) == {(0, 1)}, _logs(b_again)
        log = b_again.log_path.read_text()
        assert "catching up from" in log and "restoring from" not in log, log[-3000:]
    finally:
        for w in (a, b, b_again):
            if w.proc is not None and w.proc.poll() is None:
                w.stop()


async def test_lost_local_state_is_restored_from_changelog_else_rebuilt_from_source(
    broker: str, unique: str, tmp_path: Path
) -> None:
    """Lost local state (a partition moving to a worker without it, or a wiped disk) must not
    lose records: the changelog restores it; without a changelog the worker reads the gap from
    the source. Either way re-sent windows are byte-identical and the results exact."""
    state = tmp_path / "state"
    env = kappa_env(broker, unique, state, KAPPA_LOG_LEVEL="info")  # the restore's lines
    assert run_kappa(["topics"], env).returncode == 0
    start = 1_700_000_000_000
    for phase, seed in enumerate((4, 5, 6)):
        batch = _spec(2_500, seed=seed, start_ms=start)
        start += batch.span_ms
        await produce_orders(broker, f"{unique}.orders", batch)
        ref = await reference_for(broker, f"{unique}.orders")
        worker = Worker(env, tmp_path / f"worker{phase}.log").start()
        try:
            await eventually(
                lambda ref=ref: check_outputs(broker, unique, ref), alive=_alive(worker)
            )
        finally:
            assert worker.stop() == 0, worker.tail_log()
        log = worker.log_path.read_text()
        if phase == 1:
            assert "restoring from" in log and "reading the gap" not in log, log[-3000:]
        if phase == 2:
            assert "reading the gap" in log, log[-3000:]
        shutil.rmtree(state / "v1")  # committed offsets now point far past the (empty) state
        if phase == 1:  # and now the changelogs are gone too
            await delete_topics(
                broker, [t for t in await list_topics(broker) if "changelog" in t and unique in t]
            )
            assert run_kappa(["topics"], env).returncode == 0


async def test_a_worker_stopped_while_its_outputs_are_on_their_way_copies_no_record_twice(
    broker: str, unique: str, tmp_path: Path
) -> None:
    """A SIGTERM (a rolling update) landing while a batch's produce request is on its way."""
    env = kappa_env(broker, unique, tmp_path / "state")
    assert run_kappa(["topics"], env).returncode == 0
    await produce_orders(broker, f"{unique}.orders", _spec(5_000, seed=4))
    chaos = {**env, "KAPPA_CHAOS_KILL": "orders:3:before-send:SIGTERM"}
    worker = Worker(chaos, tmp_path / "worker.log").start()
    assert worker.proc is not None
    worker.proc.wait(120)  # it stops itself
    assert worker.stop() == 0, worker.tail_log()
    assert await check_copies_applied(env, 1)
    ref = await reference_for(broker, f"{unique}.orders")
    worker = Worker(env, tmp_path / "worker2.log").start()
    try:
        await eventually(lambda: check_outputs(broker, unique, ref), alive=_alive(worker))
    finally:
        assert worker.stop() == 0, worker.tail_log()
    await check_copied_once(env, 1)
