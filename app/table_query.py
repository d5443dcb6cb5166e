"""`kappa query`: ask any worker for a key of a table, and follow its `owner` answer to the
worker that holds the key (Kafka Streams' `queryMetadataForKey`, then the query, in one call).

A worker answers from its own state or names the holder as of the group's last rebalance, so a
caller never needs to know the partition layout. Workers in the middle of a rebalance can
disagree; the hops are bounded and a loop is reported rather than followed.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

TABLES = ("user-totals", "product-trends", "product-signals")
MAX_HOPS = 4  # workers asked at most: one holder, plus a few stale maps mid-rebalance

# (url, timeout s) -> (HTTP status, body); raises QueryFailed when nothing answers
Fetch = Callable[[str, float], tuple[int, bytes]]


class QueryFailed(Exception):
    """No answer could be had (one-line message): a worker unreachable, or no worker known to
    hold the key's partition."""


@dataclass(frozen=True, slots=True)
class Answer:
    """What the worker holding the key said: its entry (`found`), or why there is none."""

    url: str  # the worker that answered
    found: dict[str, Any] | None
    missing: str = ""  # the worker's reason when `found` is None, e.g. "no orders for user u1"


def query(
    worker_url: str, table: str, key: str, timeout_s: float = 5.0, fetch: Fetch | None = None
) -> Answer:
    """The key's entry in `table`, asked of `worker_url` and then of each `owner` it names."""
    get = fetch or http_get
    url = worker_url.rstrip("/")
    asked: list[str] = []
    while True:
        asked.append(url)
        status, raw = get(f"{url}/tables/{table}/{urllib.parse.quote(key, safe='')}", timeout_s)
        body = _json_object(raw)
        if status == 200 and body is not None:
            return Answer(url, body)
        if status != 404 or body is None or not isinstance(body.get("error"), str):
            said = body.get("error") if body is not None else None
            raise QueryFailed(
                _unexpected(url, table, status, said if isinstance(said, str) else None)
            )
        served = body.get("tables")
        if isinstance(served, list):  # the worker does not serve the table: it names those it does
            raise QueryFailed(_unexpected(url, table, status, None, [str(t) for t in served]))
        owner = body.get("owner")
        if isinstance(owner, str) and owner:
            owner = owner.rstrip("/")
            if owner in asked or len(asked) >= MAX_HOPS:
                raise QueryFailed(
                    f"the workers disagree on who holds partition {body.get('partition')} of "
                    f"{key!r} (asked {', '.join(asked)}): a rebalance may be under way; try again"
                )
            url = owner
            continue
        if "partition" in body:  # not held here, and no holder known
            raise QueryFailed(
                f"{url}: {body['error']}, and it knows no worker that holds it: a rebalance "
                "may be under way, or no worker of this version runs the pipeline; try again "
                "or ask another worker"
            )
        return Answer(url, None, body["error"])


def http_get(url: str, timeout_s: float) -> tuple[int, bytes]:
    """GET `url`: (status, body) for any HTTP answer; QueryFailed when none comes."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.read()
    except (urllib.error.URLError, OSError, ValueError) as e:
        why = getattr(e, "reason", None) or e
        why = getattr(why, "strerror", None) or why  # "Connection refused", not "[Errno 111] …"
        raise QueryFailed(f"no answer from the worker at {_origin(url)}: {why}") from None


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _unexpected(
    url: str, table: str, status: int, said: str | None, served: list[str] | None = None
) -> str:
    if status == 404 and served is not None:  # a worker naming the tables it serves
        tables = f"only {', '.join(served)}" if served else "no table"
        return (
            f"the worker at {url} serves no {table} queries ({tables}): the pipeline that keeps "
            "the table does not run there (see its --pipeline)"
        )
    if status == 404:  # not one of Kappa's table answers: the page itself is missing
        return (
            f"the worker at {url} serves no {table} queries: the pipeline that keeps the table "
            "does not run there (see its --pipeline), or it is not a Kappa worker"
        )
    why = f": {said}" if said else ""
    return f"the worker at {url} answered HTTP {status} to the {table} query{why}"


def _origin(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else url
