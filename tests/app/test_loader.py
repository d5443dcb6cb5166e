"""`kappa produce` plumbing, without a broker."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import Any

import pytest

from app import loader
from app.cli import build_parser
from app.orders_generator import GeneratorSpec
from app.produce import RecordTooLarge
from app.settings import ConfigError, load_settings

WAIT_S = 60.0  # generous: only a read that never gets there fails it
CSV_HEADER = "order_id,user_id,product_id,category,amount,quantity,ts\n"


async def _taken(records: Any) -> AsyncIterator[Any]:
    """The records as `produce_records` takes them: in the loop, or read ahead by a thread."""
    if isinstance(records, AsyncIterable):
        async for record in records:
            yield record
    else:
        for record in records:
            yield record


def test_produce_creates_a_missing_topic_with_the_configured_replication_keeping_every_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    created: list[Any] = []

    async def nothing(*args: Any, **kwargs: Any) -> int:
        return 0

    async def ensure_topics(bootstrap: Any, topics: Any, replication: int = 1) -> list[str]:
        created.append((topics, replication))
        return []

    async def no_topic(bootstrap: Any) -> set[str]:
        return set()

    monkeypatch.setattr(loader, "wait_for_broker", nothing)
    monkeypatch.setattr(loader, "produce_records", nothing)
    monkeypatch.setattr(loader, "ensure_topics", ensure_topics)
    monkeypatch.setattr(loader, "existing_topics", no_topic)
    monkeypatch.setattr(loader, "orders_ahead_limit", nothing)  # no registry to read
    args = build_parser().parse_args(["produce", "orders", "--generate", "1", "--no-progress"])
    loader.run_produce(load_settings({"KAPPA_REPLICATION": "3", "KAPPA_PARTITIONS": "6"}), args)
    assert created == [({"orders": (6, {"retention.ms": "-1"})}, 3)]


def test_a_csv_field_past_the_csv_module_limit_is_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """csv raises its own `csv.Error`, not a ValueError, for a field over 131,072 characters."""
    from app.settings import ConfigError

    async def nothing(*args: Any, **kwargs: Any) -> Any:
        return 0

    async def consume(bootstrap: Any, topic: str, records: Any, **kwargs: Any) -> int:
        return len([record async for record in _taken(records)])

    big = tmp_path / "big.csv"
    header = "order_id,user_id,product_id,category,amount,quantity,ts\n"
    big.write_text(header + "x" * 200_000 + ",u,p,c,1.0,1,1700000000000\n")
    monkeypatch.setattr(loader, "wait_for_broker", nothing)
    monkeypatch.setattr(loader, "ensure_topics", nothing)
    monkeypatch.setattr(loader, "produce_records", consume)
    args = build_parser().parse_args(["produce", "orders", "--file", str(big), "--no-progress"])
    with pytest.raises(ConfigError) as refused:
        loader.run_produce(load_settings({}), args)
    assert str(refused.value).startswith(
        f"cannot read {big}: line 2: field larger than field limit"
    )


def _no_broker_but(monkeypatch: pytest.MonkeyPatch, produce: Callable[..., Any]) -> None:
    """`kappa produce` with `produce` in place of `produce_records` and no broker to wait for."""

    async def nothing(*args: Any, **kwargs: Any) -> Any:
        return 0

    monkeypatch.setattr(loader, "wait_for_broker", nothing)
    monkeypatch.setattr(loader, "ensure_topics", nothing)
    monkeypatch.setattr(loader, "existing_topics", nothing)
    monkeypatch.setattr(loader, "produce_records", produce)


def _produced_from(
    monkeypatch: pytest.MonkeyPatch, path: Any, on_value: Callable[[bytes], None] | None = None
) -> list[bytes]:
    """The values `kappa produce orders --file PATH` sends, with no broker (`on_value`: told of
    each as it is sent)."""
    produced: list[bytes] = []

    async def send(bootstrap: Any, topic: str, records: Any, **kwargs: Any) -> int:
        async for _, value in _taken(records):
            produced.append(value)
            if on_value is not None:
                on_value(value)
        return len(produced)

    _no_broker_but(monkeypatch, send)
    args = build_parser().parse_args(["produce", "orders", "--file", str(path), "--no-progress"])
    loader.run_produce(load_settings({}), args)
    return produced


@pytest.mark.parametrize(
    ("name", "text", "line"),
    [
        ("o.jsonl", '{"order_id": "1"}\n\n  \n{"order_id": "2"}\n{"note": "BIG"}\n{}\n', 5),
        (
            "o.csv",
            "order_id,user_id,product_id,category,amount,quantity,ts\n"
            'o1,u1,p1,c,1,1,1\n\n"o\n2",u2,p2,c,1,1,1\no3,u3,p3,BIG,1,1,1\n',
            6,
        ),
    ],
)
@pytest.mark.parametrize("piped", [False, True])  # a pipe is read by a thread, ahead
def test_a_record_too_large_is_named_by_its_line_in_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, name: str, text: str, line: int, piped: bool
) -> None:
    """It was named "record 3": counting records, not the blank lines, a CSV header or a
    quoted cell's line break before it, so `sed -n 3p` showed another line."""
    path = tmp_path / name
    text = text.replace("BIG", "x" * 500)
    assert "x" * 500 in text.splitlines()[line - 1]  # what `sed -n {line}p` shows
    if piped:
        os.mkfifo(path)
        threading.Thread(target=path.write_text, args=(text,), daemon=True).start()
    else:
        path.write_text(text)

    async def produce(bootstrap: Any, topic: str, records: Any, **kwargs: Any) -> int:
        sent = 0
        async for _key, value in _taken(records):
            if len(value) > 400:  # refused as the producer refuses one over 16 MiB
                raise RecordTooLarge(sent, len(value) + 70)
            sent += 1
        return sent

    _no_broker_but(monkeypatch, produce)
    args = build_parser().parse_args(["produce", "orders", "--file", str(path), "--no-progress"])
    with pytest.raises(ConfigError) as refused:
        loader.run_produce(load_settings({}), args)
    assert str(refused.value).startswith(f"the record at line {line} of {path} is too large: ")
    assert str(refused.value).endswith(
        "bytes kappa produce sends at once; up to 2 records before it went to orders (loading "
        "the file again produces them again)"
    )


def test_a_csv_row_that_is_not_utf8_is_named_by_its_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """The decoder's "can't decode byte 0xff in position 1991" counted from the start of the
    8 KiB it had read, neither a line nor a place in the file; the rows before it in that
    8 KiB were not sent."""
    path = tmp_path / "orders.csv"
    rows = "".join(f"o{i},u,p,c,1,1,{1_700_000_000_000 + i}\n" for i in range(2_000))
    path.write_bytes(
        b"order_id,user_id,product_id,category,amount,quantity,ts\n"
        + rows.encode()
        + b"o,u,p\xff,c,1,1,1\n"
    )
    sent: list[Any] = []

    async def produce(bootstrap: Any, topic: str, records: Any, **kwargs: Any) -> int:
        async for record in _taken(records):
            sent.append(record)
        return len(sent)

    _no_broker_but(monkeypatch, produce)
    args = build_parser().parse_args(["produce", "orders", "--file", str(path), "--no-progress"])
    with pytest.raises(ConfigError) as refused:
        loader.run_produce(load_settings({}), args)
    assert str(refused.value) == (
        f"cannot read {path}: line 2,002 is not UTF-8 text; 2,000 records were produced before "
        "reading failed (loading the file again produces them again)"
    )
    assert len(sent) == 2_000


@pytest.mark.parametrize(
    ("topic", "what"),
    [
        ("orders.revenue-1m", "an output of the orders pipeline"),
        ("orders.user-totals.v3", "an output of the user-totals pipeline"),
        ("orders.by-user", "an output of the orders pipeline"),
        ("kappa-v2-orders-changelog", "a changelog of Kappa's state"),
        ("kappa-versions", "the version registry"),
    ],
)
def test_a_topic_kappa_writes_is_refused_before_connecting(topic: str, what: str) -> None:
    """Records produced there by hand broke `kappa diff` and `kappa export` of the version for
    good ("... is not a Kappa output record")."""
    from app.settings import ConfigError

    args = build_parser().parse_args(["produce", topic, "--generate", "1"])
    with pytest.raises(ConfigError) as refused:
        loader.run_produce(load_settings({}), args)
    assert str(refused.value) == f"{topic} is {what}: only Kappa writes it (orders go to orders)"


def test_a_topic_no_pipeline_reads_is_produced_to_with_a_warning(
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = load_settings({"KAPPA_TOPIC_PREFIX": "t."})
    loader.warn_if_unread(settings, "t.orders")
    assert capsys.readouterr().err == ""
    loader.warn_if_unread(settings, "orders")  # the prefix forgotten
    assert capsys.readouterr().err == (
        "kappa produce: warning: no pipeline reads orders (they read t.orders)\n"
    )


def test_a_json_array_file_is_refused_before_connecting(tmp_path: Any) -> None:
    """Sent line by line, every line of a pretty-printed array went to the DLQ, and the
    command said it had produced them."""
    from app.settings import ConfigError

    path = tmp_path / "orders.json"
    path.write_text('\n  [\n  {"order_id": "1"}\n]\n')
    args = build_parser().parse_args(["produce", "orders", "--file", str(path)])
    with pytest.raises(ConfigError, match=r"holds a JSON array: kappa produce reads JSON lines"):
        loader.run_produce(load_settings({}), args)


ARRAY_HEADS = [  # (a file's first bytes, whether they are a JSON array's)
    (b'[\n  {"order_id": "1"}\n]\n', True),  # pretty-printed
    (b'[{"order_id": "1"}, {"order_id": "2"}]\n', True),  # on one line
    (b'\xef\xbb\xbf  [\n{"a": 1}]', True),  # after a byte order mark
    (b'[1, 2]\n{"order_id": "1"}\n', False),  # JSON lines whose first record is bad
    (b'{"order_id": "1"}\n[\n', False),
]


@pytest.mark.parametrize(("head", "array"), ARRAY_HEADS)
def test_what_counts_as_a_json_array_file(head: bytes, array: bool) -> None:
    assert loader._json_array(head) is array


def test_a_json_object_over_several_lines_is_refused_before_connecting(tmp_path: Any) -> None:
    """Sent line by line, every line of a pretty-printed object went to the DLQ (counted in a
    warning after the fact)."""
    from app.settings import ConfigError

    path = tmp_path / "p.json"
    path.write_text('{\n "order_id": "1"\n}\n')
    args = build_parser().parse_args(["produce", "orders", "--file", str(path)])
    with pytest.raises(ConfigError) as refused:
        loader.run_produce(load_settings({}), args)
    assert str(refused.value) == (
        f"{path} holds a JSON object over several lines: kappa produce reads JSON lines, one "
        f"object per line (jq -c . {path} writes them)"
    )


MULTI_LINE_HEADS = [  # (a file's first bytes, whether they are an object over several lines)
    (b'{\n "order_id": "1"\n}\n', True),  # as jq and json.dumps(indent=...) write it
    (b'\xef\xbb\xbf\n\n  {  \r\n"a": 1}', True),  # after a byte order mark, blank lines
    (b"{", True),
    (b'{"order_id": "1",\n "user_id": "u1"}\n', True),  # the first line not alone
    (b'{"a": {"b": 1,\n "c": [1,\n 2]}}\n{"a": 2}\n', True),
    (b'{ "order_id": "1",\n "note": "' + b"x" * 5000, True),  # cut by the head's end
    (b'{"order_id": "1"}\n{"order_id": "2"}\n', False),  # JSON lines
    (b'  {"order_id": "1"}  \r\n{\n', False),
    (b'{"order_id": "1"}', False),
    (b'{bad json}\n{"order_id": "2"}\n', False),  # a broken first record
    (b'{"order_id": "1"\n{"order_id": "2"}\n', False),  # one cut short
    (b'{"order_id": "1", "note": "x\n"}\n', False),  # a string broken by its newline
    (b'{"order_id": "1"} trailing\n{"order_id": "2"}\n', False),
    (b'{"order_id": "' + b"x" * 5000, False),  # a long first line, its end not read yet
    (b"[\n{", False),  # an array, refused as one
    (b'\n"{"\n', False),
]


@pytest.mark.parametrize(("head", "pretty"), MULTI_LINE_HEADS)
def test_what_counts_as_a_json_object_over_several_lines(head: bytes, pretty: bool) -> None:
    assert loader._multi_line_object(head[:4096]) is pretty


@pytest.mark.parametrize("head", [head for head, _ in ARRAY_HEADS + MULTI_LINE_HEADS])
def test_a_pipes_head_read_line_by_line_is_refused_as_its_first_4_kib_would_be(
    head: bytes,
) -> None:
    """A pipe's head is read only up to the line that settles what it is (so that a slow
    writer's first record goes at once): an object over several lines whose first line is
    not `{` alone needs the lines after it."""
    read_end, write_end = os.pipe()
    os.write(write_end, head)  # within the pipe's buffer
    os.close(write_end)
    with open(read_end, "rb") as pipe:
        piped = loader._head(pipe)
    assert loader._json_array(piped) is loader._json_array(head[:4096])
    assert loader._multi_line_object(piped) is loader._multi_line_object(head[:4096])


@pytest.mark.parametrize("name", ["orders.jsonl", "orders.csv"])
def test_a_named_pipe_is_read_once_and_whole(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, name: str
) -> None:
    """`mkfifo orders.jsonl; zcat orders.jsonl.gz > orders.jsonl & kappa produce orders --file
    orders.jsonl`: its head was read to look for a JSON array, and then the pipe opened again,
    so the first 4 KiB were lost and the command waited for a second writer for ever."""
    header = "order_id,user_id,product_id,category,amount,quantity,ts\n"
    rows = [
        f"o{i:06d},u{i % 500},p{i % 1000:05d},books,12.50,1,{1_700_000_000_000 + i}\n"
        for i in range(20_000)
    ]  # over a pipe's buffer: the writer must wait for the reader
    if name.endswith(".csv"):
        text = header + "".join(rows)
    else:
        text = "".join(
            f'{{"order_id":"{o}","user_id":"{u}","product_id":"{p}"}}\n'
            for o, u, p, *_ in (row.split(",") for row in rows)
        )
    pipe = tmp_path / name
    os.mkfifo(pipe)

    def write() -> None:
        try:
            with open(pipe, "w") as f:
                f.write(text)
        except BrokenPipeError:  # the reader closed it early: let a second opening end too
            with open(pipe, "w"):
                pass

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    produced = _produced_from(monkeypatch, pipe)
    writer.join()
    assert len(produced) == len(rows)
    assert json.loads(produced[0])["order_id"] == "o000000"
    assert json.loads(produced[-1])["order_id"] == "o019999"


@pytest.mark.parametrize(
    ("name", "lines"),
    [
        ("orders.jsonl", ['{"order_id": "o1"}\n', '{"order_id": "o2"}\n']),
        ("orders.csv", [CSV_HEADER, "o1,u1,p1,books,1,1,1\n", "o2,u2,p2,books,1,1,1\n"]),
    ],
)
def test_a_named_pipes_first_record_is_sent_before_its_writer_writes_more(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, name: str, lines: list[str]
) -> None:
    """Its first 4 KiB were read at once, to look for a JSON array: from a writer slower than
    that (a line now and then) nothing was sent until 4 KiB had come, or it closed the pipe."""
    pipe = tmp_path / name
    os.mkfifo(pipe)
    first_sent = threading.Event()
    sent_before_more: list[bool] = []

    def write() -> None:
        *first, more = lines
        with open(pipe, "w") as f:
            f.write("".join(first))
            f.flush()  # and the pipe held open
            sent_before_more.append(first_sent.wait(WAIT_S))
            f.write(more)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    produced = _produced_from(monkeypatch, pipe, on_value=lambda _: first_sent.set())
    writer.join()
    assert sent_before_more == [True]
    assert [json.loads(value)["order_id"] for value in produced] == ["o1", "o2"]


@pytest.mark.parametrize(
    ("text", "refusal"),
    [
        ('[\n{"order_id": "1"}\n]\n', "holds a JSON array"),
        ('{"order_id": "1",\n "user_id": "u1"}\n', "holds a JSON object over several lines"),
    ],
)
def test_a_named_pipe_is_refused_before_connecting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, text: str, refusal: str
) -> None:
    """Its head is looked at by the thread that reads it: the loop awaits its first record,
    or its refusal, before connecting, so that nothing is created for a file refused."""
    pipe = tmp_path / "orders.json"
    os.mkfifo(pipe)
    threading.Thread(target=pipe.write_text, args=(text,), daemon=True).start()
    connected: list[bool] = []

    async def connect(*args: Any, **kwargs: Any) -> None:
        connected.append(True)

    monkeypatch.setattr(loader, "wait_for_broker", connect)
    args = build_parser().parse_args(["produce", "orders", "--file", str(pipe), "--no-progress"])
    with pytest.raises(ConfigError) as refused:
        loader.run_produce(load_settings({}), args)
    assert str(refused.value).startswith(f"{pipe} {refusal}: kappa produce reads JSON lines")
    assert connected == []


def test_lines_that_are_not_json_objects_are_counted_by_parsing_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """A line was counted as an object when it began with `{`: a truncated last line or a
    broken one went to the DLQ without a word, and a pretty-printed object's `{` counted."""
    path = tmp_path / "orders.jsonl"
    path.write_bytes(
        b'{"order_id": "1", "product_id": "p1"}\n'
        b'  {"order_id": "2"}\n'
        b"{bad json}\n"
        b"{\n"  # a pretty-printed object's first line
        b'\xef\xbb\xbf{"order_id": "3"}\n'  # a byte order mark: not JSON to the pipeline
        b"[1, 2]\n"
        b'{"order_id": "4", "product_id": "p1"'  # the last line, cut short
    )
    assert len(_produced_from(monkeypatch, path)) == 7
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"kappa produce: warning: 5 of the 7 records from {path} are not JSON objects (one "
        "object per line is expected); they go to the DLQ"
    )


def _generated(count: int, start_ms: int, span_ms: int) -> GeneratorSpec:
    return GeneratorSpec(count=count, start_ms=start_ms, span_ms=span_ms)


NOW_MS = 1_800_000_000_000
DAY_MS = 86_400_000


def test_generated_orders_lead_their_sending_by_the_span_unless_paced() -> None:
    """Sent as fast as possible, the last order is the span ahead of its record timestamp;
    at a rate, the sending keeps up with the event times."""
    assert loader.generated_lead_ms(_generated(1000, NOW_MS, 3_600_000), None, NOW_MS) == 3_600_000
    paced = _generated(1000, NOW_MS, 100_000)  # 10 orders/s of event time
    assert loader.generated_lead_ms(paced, 10.0, NOW_MS) == 0
    assert loader.generated_lead_ms(paced, 5.0, NOW_MS) == 0  # sent slower: never ahead
    assert loader.generated_lead_ms(paced, 20.0, NOW_MS) == 50_000
    later = _generated(10, NOW_MS + 2 * DAY_MS, 0)  # a start after the newest order in a topic
    assert loader.generated_lead_ms(later, None, NOW_MS) == 2 * DAY_MS
    assert loader.generated_lead_ms(_generated(10, 1_700_000_000_000, DAY_MS), None, NOW_MS) < 0


def test_orders_the_pipeline_would_dead_letter_as_ahead_are_refused_in_one_line() -> None:
    week = _generated(1000, NOW_MS, 7 * DAY_MS)
    with pytest.raises(ConfigError) as err:
        loader.refuse_ahead(week, None, DAY_MS, NOW_MS)
    assert str(err.value) == (
        f"generated orders would run up to {7 * DAY_MS:,} ms ahead of when they are sent (event "
        f"times {NOW_MS} to {NOW_MS + 7 * DAY_MS}), more than KAPPA_MAX_TS_AHEAD_MS={DAY_MS} "
        "allows: the orders pipeline would dead-letter them as timestamp_ahead; give --rate, a "
        "shorter --span-ms or an earlier --start-ms"
    )
    loader.refuse_ahead(week, None, 0, NOW_MS)  # the guard off
    loader.refuse_ahead(week, 1000 / (7 * 86_400), DAY_MS, NOW_MS)  # paced over the week
    loader.refuse_ahead(_generated(1000, NOW_MS, DAY_MS), None, DAY_MS, NOW_MS)  # at the bound
