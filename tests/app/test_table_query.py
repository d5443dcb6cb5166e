"""`kappa query`: ask one worker, follow its `owner` answer, report what cannot be had."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from app.cli import main
from app.table_query import MAX_HOPS, QueryFailed, query

Pages = dict[str, tuple[int, Any]]  # path -> (status, JSON body, or bytes as sent)


class _Workers:
    """Canned worker answers by URL (what `query` would GET): no network."""

    def __init__(self, pages: Pages) -> None:
        self.pages = pages
        self.asked: list[str] = []

    def __call__(self, url: str, timeout_s: float) -> tuple[int, bytes]:
        self.asked.append(url)
        if url not in self.pages:
            raise QueryFailed(f"no answer from {url}")
        status, body = self.pages[url]
        return status, body if isinstance(body, bytes) else json.dumps(body).encode()


def _not_here(partition: int, owner: str | None = None) -> tuple[int, dict[str, Any]]:
    body: dict[str, Any] = {"error": f"partition {partition} … is not on this worker"}
    body["partition"] = partition
    if owner is not None:
        body["owner"] = owner
    return 404, body


def test_a_key_held_by_the_asked_worker_is_answered_by_it() -> None:
    workers = _Workers({"http://a:1/tables/user-totals/u1": (200, {"orders": 2})})
    answer = query("http://a:1/", "user-totals", "u1", fetch=workers)
    assert (answer.url, answer.found) == ("http://a:1", {"orders": 2})


def test_a_key_held_elsewhere_is_asked_of_its_owner() -> None:
    workers = _Workers(
        {
            "http://a:1/tables/user-totals/u1": _not_here(3, "http://b:1/"),
            "http://b:1/tables/user-totals/u1": (200, {"orders": 5}),
        }
    )
    answer = query("http://a:1", "user-totals", "u1", fetch=workers)
    assert (answer.url, answer.found) == ("http://b:1", {"orders": 5})
    assert workers.asked == [
        "http://a:1/tables/user-totals/u1",
        "http://b:1/tables/user-totals/u1",
    ]


def test_a_missing_key_is_an_answer_with_the_workers_reason() -> None:
    pages: Pages = {"http://a:1/tables/product-trends/p9": (404, {"error": "no closed window"})}
    answer = query("http://a:1", "product-trends", "p9", fetch=_Workers(pages))
    assert (answer.found, answer.missing) == (None, "no closed window")


def test_the_key_is_percent_encoded_whole() -> None:
    workers = _Workers({"http://a:1/tables/user-totals/a%2Fb%20%7Bc%7D%C3%BC": (200, {})})
    assert query("http://a:1", "user-totals", "a/b {c}ü", fetch=workers).found == {}


def test_workers_naming_each_other_are_a_loop_reported_not_followed() -> None:
    workers = _Workers(
        {
            "http://a:1/tables/user-totals/u1": _not_here(3, "http://b:1"),
            "http://b:1/tables/user-totals/u1": _not_here(3, "http://a:1"),
        }
    )
    with pytest.raises(QueryFailed, match=r"disagree on who holds partition 3 .*a:1, http://b:1"):
        query("http://a:1", "user-totals", "u1", fetch=workers)
    assert len(workers.asked) == 2


def test_the_hops_are_bounded() -> None:
    chain = {
        f"http://w{i}:1/tables/user-totals/u1": _not_here(0, f"http://w{i + 1}:1")
        for i in range(10)
    }
    workers = _Workers(chain)
    with pytest.raises(QueryFailed, match="rebalance"):
        query("http://w0:1", "user-totals", "u1", fetch=workers)
    assert len(workers.asked) == MAX_HOPS


def test_a_partition_no_worker_is_known_to_hold_fails_in_one_line() -> None:
    workers = _Workers({"http://a:1/tables/user-totals/u1": _not_here(2)})
    with pytest.raises(QueryFailed, match="knows no worker that holds it") as e:
        query("http://a:1", "user-totals", "u1", fetch=workers)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("status", "body", "said"),
    [
        (404, b"404: Not Found", "serves no user-totals queries"),  # the page is not there
        (500, b"oops", "answered HTTP 500"),
        (500, b'{"error": "p partition 2: the stored t value"}', "query: p partition 2: the st"),
        (200, b"not json", "answered HTTP 200"),
        (200, b"[1]", "answered HTTP 200"),
    ],
)
def test_anything_but_a_kappa_answer_fails_in_one_line(status: int, body: bytes, said: str) -> None:
    workers = _Workers({"http://a:1/tables/user-totals/u1": (status, body)})
    with pytest.raises(QueryFailed, match=said):
        query("http://a:1", "user-totals", "u1", fetch=workers)


@pytest.mark.parametrize(
    ("served", "said"),
    [
        (["product-trends", "product-signals"], r"\(only product-trends, product-signals\)"),
        ([], r"\(no table\)"),
    ],
)
def test_a_worker_not_serving_the_table_fails_naming_those_it_serves(
    served: list[str], said: str
) -> None:
    """Its JSON 404 is not the key's absence (`kappa query` exited 1 with "no table …")."""
    not_served = {"error": "no table user-totals on this worker; it serves …", "tables": served}
    workers = _Workers({"http://a:1/tables/user-totals/u1": (404, not_served)})
    with pytest.raises(QueryFailed, match=f"serves no user-totals queries {said}: the pipeline"):
        query("http://a:1", "user-totals", "u1", fetch=workers)


@contextlib.contextmanager
def _serving(pages: dict[str, tuple[int, bytes]]) -> Iterator[str]:
    """A real HTTP server on a free local port answering `pages` by path; yields its URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = pages.get(self.path, (404, b"404: Not Found"))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_the_command_prints_the_owners_answer_over_http(capsys: pytest.CaptureFixture[str]) -> None:
    entry = {"user_id": "u1", "orders": 3, "spend": 12.5, "partition": 1}
    with _serving({"/tables/user-totals/u1": (200, json.dumps(entry).encode())}) as owner:
        not_here = json.dumps({"error": "not on this worker", "partition": 1, "owner": owner})
        with _serving({"/tables/user-totals/u1": (404, not_here.encode())}) as asked:
            assert main(["query", "user-totals", "u1", "--worker", asked]) == 0
    assert json.loads(capsys.readouterr().out) == entry


def test_the_command_exits_1_for_a_missing_key(capsys: pytest.CaptureFixture[str]) -> None:
    missing = json.dumps({"error": "no orders for user u2"}).encode()
    with _serving({"/tables/user-totals/u2": (404, missing)}) as url:
        assert main(["query", "user-totals", "u2", "--worker", url]) == 1
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err == f"kappa query: no orders for user u2 (asked {url})\n"


def test_the_command_reports_a_workers_400_in_one_line_and_exits_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A worker's JSON 400 (its answer to a path with no key or no table part, which
    `kappa query` itself never asks for) is said as the worker's error, not the key's absence."""
    no_key = json.dumps({"error": "a key is needed: /tables/user-totals/<user_id>"}).encode()
    with _serving({"/tables/user-totals/u1": (400, no_key)}) as url:
        assert main(["query", "user-totals", "u1", "--worker", url]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err == (
        f"kappa query: error: the worker at {url} answered HTTP 400 to the user-totals query: "
        "a key is needed: /tables/user-totals/<user_id>\n"
    )


def test_the_command_asks_the_configured_worker_by_default(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with _serving({"/tables/product-signals/p1": (200, b'{"level": 2}')}) as url:
        monkeypatch.setenv("KAPPA_ADVERTISED_URL", url)
        assert main(["query", "product-signals", "p1"]) == 0
    assert json.loads(capsys.readouterr().out) == {"level": 2}


def test_an_unreachable_worker_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with _serving({}) as url:
        pass  # closed: nothing listens there any more
    assert main(["query", "user-totals", "u1", "--worker", url, "--timeout", "2"]) == 2
    err = capsys.readouterr().err
    assert err == f"kappa query: error: no answer from the worker at {url}: Connection refused\n"


def test_an_empty_key_is_refused_before_asking(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["query", "user-totals", "", "--worker", "http://127.0.0.1:9"])
    assert e.value.code == 2
    assert "name a key" in capsys.readouterr().err
