"""Errors a user can cause print one line (argparse: its usage, then one error line), exit 2,
and never a traceback. Runs `python -m app.cli` as a user would; no broker is needed: the
configured one is a closed port, and every command here must fail before needing it (or, for
`topics --timeout`, fail cleanly because it is not there)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agents.orders import OrdersPipeline
from app.broker import free_port
from app.settings import ConfigError, load_settings, quiet_config
from app.topology import build_pipelines
from replay.registry import (
    RegistryView,
    differing_settings,
    recorded_definition,
    settings_for_version,
    version_definition,
)
from tests.support.processes import taken_port

ROOT = Path(__file__).resolve().parents[2]


def _env(tmp_path: Path, **env: str) -> dict[str, str]:
    """This environment without KAPPA_* settings, a broker address nothing listens on, and `env`."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("KAPPA_")}
    base.update(
        KAPPA_BROKER=f"127.0.0.1:{free_port()}",  # nothing listens there
        KAPPA_STATE_DIR=str(tmp_path / "state"),
        PYTHONPATH=str(ROOT),
    )
    return base | env


def _kappa(
    args: list[str], tmp_path: Path, timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [sys.executable, "-m", "app.cli", *args],
            env=_env(tmp_path, **env),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as e:  # run() has killed it
        raise AssertionError(f"kappa {' '.join(args)} hung:\n{e.stdout!r}\n{e.stderr!r}") from None


def _error_line(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr + r.stdout, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("kappa ") and ": error: " in lines[0], lines[0]
    return lines[0]


def _usage_error(r: subprocess.CompletedProcess[str]) -> str:
    """argparse's format: a usage block, then exactly one error line."""
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines[0].startswith("usage: kappa"), r.stderr
    errors = [ln for ln in lines if ": error: " in ln]
    assert len(errors) == 1 and errors[0] == lines[-1], r.stderr
    assert all(ln.startswith(("usage:", " ")) for ln in lines[:-1]), r.stderr
    return lines[-1]


@pytest.mark.parametrize(
    "env,args,words",
    [
        ({"KAPPA_PARTITIONS": "abc"}, ["topics"], "KAPPA_PARTITIONS='abc'"),
        ({"KAPPA_BROKER": "nohostport"}, ["topics"], "KAPPA_BROKER='nohostport'"),
        ({"KAPPA_GRACE_MS": "-1"}, ["worker"], "KAPPA_GRACE_MS"),
        ({"KAPPA_WINDOW_MS": "0"}, ["topics"], "KAPPA_WINDOW_MS must be > 0"),
        (
            {"KAPPA_HOPPING_SIZE_MS": "60000"},
            ["topics"],
            "KAPPA_HOPPING_SIZE_MS and KAPPA_HOPPING_STEP_MS must both be > 0 (or both 0",
        ),
        (
            {"KAPPA_HOPPING_SIZE_MS": "60000", "KAPPA_HOPPING_STEP_MS": "7000"},
            ["worker"],
            "KAPPA_HOPPING_STEP_MS=7000 must divide KAPPA_HOPPING_SIZE_MS=60000 into 1 to 60",
        ),
        (
            {"KAPPA_HOPPING_SIZE_MS": "61000", "KAPPA_HOPPING_STEP_MS": "1000"},
            ["topics"],
            "into 1 to 60 steps",
        ),
        (
            {"KAPPA_SHUTDOWN_TIMEOUT_MS": "0"},
            ["topics"],
            "KAPPA_SHUTDOWN_TIMEOUT_MS must be > 0",
        ),
        ({"KAPPA_EMIT_UPDATES": "maybe"}, ["worker"], "KAPPA_EMIT_UPDATES='maybe'"),
        ({"KAPPA_MAX_TS_AHEAD_MS": "1d"}, ["worker"], "KAPPA_MAX_TS_AHEAD_MS='1d'"),
        (
            {"KAPPA_MAX_TS_AHEAD_MS": "-1"},
            ["topics"],
            "KAPPA_MAX_TS_AHEAD_MS must be from 0 (no limit) to 31622400000 (366 days), got -1",
        ),
        ({"KAPPA_QUIET_P": "0.9"}, ["worker"], "KAPPA_QUIET_P must be from 1e-12 to 0.5, got 0.9"),
        ({"KAPPA_QUIET_P": "nan"}, ["topics"], "KAPPA_QUIET_P must be from 1e-12 to 0.5"),
        ({"KAPPA_LOG_LEVEL": "loud"}, ["worker"], "KAPPA_LOG_LEVEL='loud'"),
        ({"KAPPA_APP_ID": "a/b"}, ["topics"], "KAPPA_APP_ID='a/b'"),
        ({"KAPPA_TOPIC_PREFIX": "a b"}, ["produce", "x", "--generate", "1"], "KAPPA_TOPIC_PREFIX"),
    ],
)
def test_bad_configuration_is_one_line(
    tmp_path: Path, env: dict[str, str], args: list[str], words: str
) -> None:
    assert words in _error_line(_kappa(args, tmp_path, **env))


def test_an_unknown_pipeline_is_reported_before_waiting_for_the_broker(tmp_path: Path) -> None:
    line = _error_line(_kappa(["worker", "--pipeline", "nope"], tmp_path))
    assert "unknown pipeline(s) nope" in line and "orders" in line


@pytest.mark.parametrize(
    "args", [["worker", "--pipeline", ""], ["replay", "orders", "", "--version", "2"]]
)
def test_an_empty_pipeline_name_is_named_before_waiting_for_the_broker(
    tmp_path: Path, args: list[str]
) -> None:
    """It was invisible (`unknown pipeline(s) ; known: …`), and a replay asked the broker first."""
    line = _error_line(_kappa(args, tmp_path))
    assert line.endswith(
        ": error: unknown pipeline(s) ''; known: orders, user-totals, product-trends, top-products"
    ), line


def test_a_missing_file_is_reported_before_connecting(tmp_path: Path) -> None:
    line = _error_line(_kappa(["produce", "orders", "--file", "/nonexistent.jsonl"], tmp_path))
    assert "cannot read /nonexistent.jsonl" in line


def test_a_missing_file_is_reported_as_missing_whatever_its_suffix(tmp_path: Path) -> None:
    line = _error_line(_kappa(["produce", "orders", "--file", "no-such-orders"], tmp_path))
    assert "cannot read no-such-orders: No such file or directory" in line, line


def test_a_file_of_unknown_type_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "orders.txt").write_text("{}\n")
    line = _error_line(_kappa(["produce", "orders", "--file", "orders.txt"], tmp_path))
    assert "unknown suffix '.txt'" in line


def test_an_unreachable_broker_is_one_line_without_client_noise(tmp_path: Path) -> None:
    line = _error_line(_kappa(["topics", "--timeout", "1"], tmp_path))
    assert "cannot reach the Kafka broker at 127.0.0.1:" in line


def test_an_unusable_state_dir_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    r = _kappa(["worker", "--version", "1"], tmp_path, KAPPA_STATE_DIR=str(tmp_path / "file"))
    assert f"state directory {tmp_path / 'file' / 'v1'}" in _error_line(r)


def test_a_web_port_in_use_is_reported_before_waiting_for_the_broker(tmp_path: Path) -> None:
    with taken_port() as port:
        line = _error_line(_kappa(["worker", "--web-port", str(port)], tmp_path))
    assert line == (
        f"kappa worker: error: cannot serve metrics on 127.0.0.1:{port}: Address already in use "
        "(set KAPPA_WEB_PORT or --web-port)"
    )


@pytest.mark.parametrize(
    "env,words",
    [
        ({"KAPPA_BROKER": "host:notaport"}, "'host:notaport' needs a port number from 1 to 65535"),
        ({"KAPPA_BROKER": "127.0.0.1:99999"}, "needs a port number from 1 to 65535"),
        ({"KAPPA_BROKER": ":9092"}, "':9092' must be host:port"),
        ({"KAPPA_BROKER": "a:1,b"}, "'b' must be host:port"),
        ({"KAPPA_STATE_DIR": ""}, "must name a directory for Kappa's state, not the current"),
        ({"KAPPA_STATE_DIR": "."}, "not the current directory"),
        ({"KAPPA_STATE_DIR": os.getcwd()}, f"not the current directory ({Path.cwd()})"),
        ({"KAPPA_STATE_DIR": "/"}, "not the filesystem root (/)"),
        ({"KAPPA_STATE_DIR": "~"}, f"not the home directory ({Path.home().resolve()})"),
        ({"KAPPA_WEB_HOST": ""}, "KAPPA_WEB_HOST must not be empty"),
        # names the resolver cannot encode (it raised UnicodeError from deep in a command)
        ({"KAPPA_BROKER": "a..b:9092"}, "'a..b:9092' is not a host name"),
        ({"KAPPA_BROKER": "x" * 64 + ".io:9092"}, "label is empty or over 63 characters"),
        ({"KAPPA_WEB_HOST": "a..b"}, "KAPPA_WEB_HOST='a..b' is not a host name"),
        ({"KAPPA_ADVERTISED_URL": "worker-1:6066"}, "must be http://host:port or https://"),
        ({"KAPPA_ADVERTISED_URL": "http://w 1:6066"}, "KAPPA_ADVERTISED_URL='http://w 1:6066'"),
        # URLs urllib refuses when asked (they passed here, then failed as tracebacks)
        ({"KAPPA_ADVERTISED_URL": "http://[::1"}, "'http://[::1' is not a URL: Invalid IPv6"),
        ({"KAPPA_ADVERTISED_URL": "http://[w-1]:6066"}, "does not appear to be an IPv4 or IPv6"),
        ({"KAPPA_ADVERTISED_URL": "http://w:99999"}, "needs a port number from 1 to 65535"),
        ({"KAPPA_ADVERTISED_URL": "http://w:0"}, "needs a port number from 1 to 65535"),
        ({"KAPPA_ADVERTISED_URL": "http://[::1]x:6066"}, "must be http://host:port or https://"),
        ({"KAPPA_ADVERTISED_URL": "http://a..b:6066"}, "'http://a..b:6066' is not a host name"),
        ({"KAPPA_PARTITIONS": str(2**31)}, "KAPPA_PARTITIONS must be at most 1000, got"),
        ({"KAPPA_PARTITIONS": "1001"}, "KAPPA_PARTITIONS must be at most 1000, got 1001"),
        ({"KAPPA_REPLICATION": str(2**15)}, "KAPPA_REPLICATION must be at most 32767"),
        ({"KAPPA_SSL_CERTFILE": "c" * 300}, "(File name too long)' is not a readable file"),
        ({"KAPPA_SESSION_TIMEOUT_MS": "120000"}, "KAPPA_SESSION_TIMEOUT_MS must be at most"),
        ({"KAPPA_REBALANCE_TIMEOUT_MS": "99999999999"}, "KAPPA_REBALANCE_TIMEOUT_MS must be at"),
        ({"KAPPA_FETCH_MAX_WAIT_MS": "4000000000"}, "KAPPA_FETCH_MAX_WAIT_MS must be at most"),
        ({"KAPPA_SHUTDOWN_TIMEOUT_MS": "99999999999999"}, "KAPPA_SHUTDOWN_TIMEOUT_MS must be at"),
        ({"KAPPA_MAX_POLL_INTERVAL_MS": str(2**31)}, "KAPPA_MAX_POLL_INTERVAL_MS must be at"),
        ({"KAPPA_MAX_POLL_INTERVAL_MS": "0"}, "KAPPA_MAX_POLL_INTERVAL_MS must be > 0"),
        ({"KAPPA_TOPIC_PREFIX": "é."}, "may only hold ASCII letters"),
        ({"KAPPA_TOPIC_PREFIX": "p" * 200}, "at most 124 characters"),
        ({"KAPPA_APP_ID": "ü"}, "KAPPA_APP_ID='ü' may only hold ASCII letters"),
        ({"KAPPA_APP_ID": ""}, "KAPPA_APP_ID=''"),
        ({"KAPPA_APP_ID": "a" * 65}, "at most 64 characters"),
        # a client key without its certificate was ignored silently
        ({"KAPPA_SSL_KEYFILE": "/etc/hostname"}, "KAPPA_SSL_KEYFILE/PASSWORD need KAPPA_SSL_CERT"),
    ],
)
def test_settings_kafka_or_the_worker_would_refuse_later_are_refused_at_load(
    tmp_path: Path, env: dict[str, str], words: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings({"KAPPA_STATE_DIR": str(tmp_path), **env})
    assert words in str(refused.value)


@pytest.mark.parametrize(
    "url",
    ["http://w-1:6066", "https://kappa-0.kappa:6066/", "http://[::1]:7000", "http://w"],
)
def test_a_worker_web_address_is_taken_as_advertised(tmp_path: Path, url: str) -> None:
    settings = load_settings({"KAPPA_STATE_DIR": str(tmp_path), "KAPPA_ADVERTISED_URL": url})
    assert settings.advertised_url == url


def test_a_bad_advertised_url_is_one_line_where_a_query_would_use_it(tmp_path: Path) -> None:
    r = _kappa(["query", "user-totals", "u1"], tmp_path, KAPPA_ADVERTISED_URL="http://[::1")
    assert _error_line(r) == (
        "kappa query: error: KAPPA_ADVERTISED_URL='http://[::1' is not a URL: Invalid IPv6 URL: "
        "the address at which other workers and clients reach this worker's web server"
    )


def test_a_certificate_file_that_is_no_certificate_is_refused_at_load(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("not a certificate\n")
    env = {"KAPPA_SECURITY_PROTOCOL": "SSL", "KAPPA_SSL_CAFILE": str(tmp_path / "ca.pem")}
    with pytest.raises(ConfigError, match="cannot set up TLS"):
        load_settings({"KAPPA_STATE_DIR": str(tmp_path), **env})


@pytest.mark.parametrize(
    "args,words",
    [
        (
            ["produce", "x", "--generate", "1", "--start-ms", "4102444700000"],
            "event times from 4102444700000 over 3600000 ms leave 1970..2100",
        ),
        (["diff", "3", "3"], "both versions are 3: name two different versions"),
    ],
)
def test_arguments_that_cannot_go_together_are_one_line_before_connecting(
    tmp_path: Path, args: list[str], words: str
) -> None:
    assert words in _error_line(_kappa(args, tmp_path))


def test_a_demo_that_cannot_write_its_logs_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "generator.log").mkdir()  # where the demo appends the generator's log
    line = _error_line(_kappa(["demo"], tmp_path, KAPPA_STATE_DIR=str(tmp_path / "state")))
    assert line == (
        f"kappa demo: error: cannot use the log directory {tmp_path} "
        f"({tmp_path / 'generator.log'}: Is a directory); set KAPPA_STATE_DIR to a writable "
        "directory"
    )


def test_a_broker_port_that_is_no_number_is_one_line(tmp_path: Path) -> None:
    line = _error_line(_kappa(["topics"], tmp_path, KAPPA_BROKER="host:notaport"))
    assert "needs a port number from 1 to 65535" in line


def test_a_broker_host_that_does_not_resolve_is_one_line(tmp_path: Path) -> None:
    line = _error_line(_kappa(["broker", "--address", "no-such-host.invalid:9092"], tmp_path))
    assert line.startswith("kappa broker: error: broker address no-such-host.invalid:9092: ")


def test_an_empty_file_name_is_one_line(tmp_path: Path) -> None:
    assert "--file needs a path" in _error_line(
        _kappa(["produce", "orders", "--file", ""], tmp_path)
    )


@pytest.mark.parametrize(
    "args,words",
    [
        (["produce", "orders", "--generate", "10", "--rate", "nan"], "'nan' is not a finite"),
        (["produce", "orders", "--generate", "10", "--rate", "inf"], "'inf' is not a finite"),
        (["topics", "--timeout", "nan"], "'nan' is not a finite number"),
        (["topics", "--timeout", "-1"], "'-1' must be >= 0"),
        (["produce", "", "--generate", "1"], "topic name '' is empty"),
        (["produce", "a b", "--generate", "1"], "may only hold ASCII letters"),
        (["produce", "..", "--generate", "1"], "cannot be '.' or '..'"),
        (["tail", "é"], "topic name 'é' may only hold ASCII letters"),
        (["export", ""], "argument directory: name a directory to write to"),  # not "."
        (["sink", " "], "argument directory: name a directory to write to"),
        (["sink", "out", "--roll-seconds", "0"], "'0' must be > 0 and <= 86400"),
        (["produce", "x", "--generate", "1", "--keys", "99999999999999"], "between 1 and"),
        (["worker", "--web-port", "1" + "0" * 400], "must be between 1 and 65535"),
        # numbers past what floats hold, or whose derived times leave 1970..2100: these raised
        # OverflowError, or produced orders that were all out of range
        (["produce", "x", "--generate", "1" + "0" * 400], "…00000000' must be between 1 and"),
        (["produce", "x", "--generate", "1", "--span-ms", "9" * 40], "must be > 0 and <="),
        (["produce", "x", "--generate", "1", "--disorder-ms", "9" * 40], "must be between 0"),
        (["produce", "x", "--generate", "1", "--start-ms", "-1"], "must be between 0 and"),
        (["produce", "x", "--generate", "1", "--rate", "1e-307"], "must be >= 0.001"),
        (["demo", "--rate", "1e9"], "'1e9' must be between 0.001 and 1,000,000"),
        # argv bytes that are not UTF-8 (a UnicodeEncodeError traceback when URL-quoted)
        (["query", "user-totals", "\udcff"], "argument key: '\\xff' is not UTF-8: every id is"),
        (["query", "product-trends", "caf\udcc3"], "'caf\\xc3' is not UTF-8"),
        # worker URLs urllib refuses (a ValueError traceback), or a port nothing can listen on
        (["query", "user-totals", "u1", "--worker", "http://[::1"], "is not a URL: Invalid IPv6"),
        (["query", "user-totals", "u1", "--worker", "http://h:99999"], "port number from 1 to"),
        (["query", "user-totals", "u1", "--worker", "ftp://h:21"], "must be http://host:port or"),
        (["topics", "--version", "1000000"], "must be between 1 and 999,999"),
        (["promote", "9" * 300], "must be between 1 and 999,999"),
        (["replay", "--version", "2", "--processes", "1000"], "must be between 1 and 256"),
        (["replay", "--version", "2", "--since", "99999999999999999"], "is outside 1970..2100"),
        # epoch ms are whole: these were floored (1.5 to 1 ms, a time typed in seconds)
        (["replay", "--version", "2", "--since", "1.5"], "'1.5' is not whole epoch milliseconds"),
        (["replay", "--version", "2", "--since", "1.7e12"], "'1.7e12' is not whole epoch"),
        (["replay", "--version", "2", "--since", "1700000000000.0"], "is not whole epoch"),
    ],
)
def test_arguments_that_would_fail_later_are_refused_by_the_parser(
    tmp_path: Path, args: list[str], words: str
) -> None:
    assert words in _usage_error(_kappa(args, tmp_path))


def test_an_ipv6_address_for_the_embedded_broker_is_one_line(tmp_path: Path) -> None:
    """Tansu would listen there but advertise "[::1]", which no Kafka client resolves."""
    line = _error_line(_kappa(["broker", "--address", "[::1]:9092"], tmp_path))
    assert line == (
        "kappa broker: error: broker address '[::1]:9092': the embedded broker serves IPv4 "
        "only (e.g. 127.0.0.1:9092); real brokers may use IPv6"
    )


@pytest.mark.parametrize("where", ["KAPPA_BROKER", "--address"])
def test_a_list_of_addresses_for_the_embedded_broker_is_one_line(
    tmp_path: Path, where: str
) -> None:
    """Workers take a bootstrap list; the one broker `kappa broker` runs binds one address (it
    was said to be an IPv6 address, as the list's first port looked like part of one)."""
    addresses = "127.0.0.1:19397,127.0.0.1:19398"
    if where == "KAPPA_BROKER":
        r = _kappa(["broker"], tmp_path, KAPPA_BROKER=addresses)
    else:
        r = _kappa(["broker", "--address", addresses], tmp_path)
    assert _error_line(r) == (
        f"kappa broker: error: broker address '{addresses}' is a list: the embedded broker "
        "listens on one host:port (give `kappa broker` --address HOST:PORT; KAPPA_BROKER may "
        "list several only for the workers and commands of a real cluster)"
    )


def test_a_bad_broker_address_is_one_line(tmp_path: Path) -> None:
    assert "must be host:port" in _error_line(_kappa(["broker", "--address", "nope"], tmp_path))


@pytest.mark.parametrize(
    "args,words",
    [
        ([], "the following arguments are required: COMMAND"),
        (["nope"], "invalid choice: 'nope'"),
        (["replay"], "the following arguments are required: --version"),
        (["replay", "--version", "2", "--process", "3/2"], "must be I/N"),
        (["replay", "--version", "2", "--since", "yesterday"], "is not epoch milliseconds"),
        (["produce", "orders", "--generate", "0"], "'0' must be between 1 and"),
        (["produce", "orders"], "one of the arguments --file --generate is required"),
        (["produce", "orders", "--generate", "5", "--bad-fraction", "2"], "between 0 and 1"),
        (["worker", "--web-port", "http"], "'http' is not an integer"),
        (["worker", "--web-port", "70000"], "'70000' must be between 1 and 65535"),
        (["replay", "--version", "2", "--metrics-port", "0"], "'0' must be between 1 and 65535"),
        (["tail", "orders", "--limit", "-1"], "must be > 0"),
        (["diff", "1", "2", "--limit", "-1"], "'-1' must be >= 0"),  # 0: the counts only
        # the command's own usage and name, not the top-level "usage: kappa [-h] COMMAND ..."
        (["status", "--version", "2"], "kappa status: error: unrecognized arguments: --version"),
    ],
)
def test_bad_arguments_get_argparse_usage_and_one_error(
    tmp_path: Path, args: list[str], words: str
) -> None:
    assert words in _usage_error(_kappa(args, tmp_path))


def test_diff_limit_zero_asks_for_the_counts_only() -> None:
    from app.cli import build_parser

    assert build_parser().parse_args(["diff", "1", "2", "--limit", "0"]).limit == 0


def test_an_unknown_argument_shows_the_commands_usage(tmp_path: Path) -> None:
    r = _kappa(["status", "--version", "2"], tmp_path)
    assert r.stderr.splitlines()[0] == "usage: kappa status [-h]"


def test_settings_from_a_mapping() -> None:
    s = load_settings({"KAPPA_PARTITIONS": "8", "KAPPA_EMIT_UPDATES": "yes", "KAPPA_BROKER": "a:1"})
    assert (s.partitions, s.emit_updates, s.bootstrap) == (8, True, ["a:1"])
    bad = (
        {"KAPPA_PARTITIONS": "abc"},
        {"KAPPA_BROKER": "a:1,b"},
        {"KAPPA_GRACE_MS": "-1"},
        {"KAPPA_COPY_MAX_BYTES": "100"},  # no room left for the reason and source headers
        {"KAPPA_WINDOW_MS": str(2**63)},  # window ends past a signed 64-bit key
        {"KAPPA_GRACE_MS": str(400 * 24 * 3600 * 1000)},
        {"KAPPA_WEB_PORT": "70000"},
    )
    for env in bad:
        with pytest.raises(ConfigError):
            load_settings(env)


VERSION_COMMANDS = (
    ["versions"],
    ["status"],
    ["diff", "1", "2"],
    ["replay", "--version", "2"],
    ["promote", "2"],
    ["drop", "2"],
)


def test_version_commands_without_a_broker_are_one_line(tmp_path: Path) -> None:
    """Each retries for a while before it gives up: they run side by side."""
    env = _env(tmp_path)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "app.cli", *command],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for command in VERSION_COMMANDS
    ]
    for command, proc in zip(VERSION_COMMANDS, procs, strict=True):
        try:
            out, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
        r = subprocess.CompletedProcess(command, proc.returncode, out, err)
        assert "cannot reach the Kafka broker at 127.0.0.1:" in _error_line(r), command


@pytest.mark.parametrize(
    "extra,words",
    [
        (["--process", "0/2"], "--processes N and --process I/N cannot be combined"),
        (["--metrics-port", "9100"], "--metrics-port is not served with --processes"),
    ],
)
def test_replay_options_that_do_not_go_together_are_refused_at_once(
    tmp_path: Path, extra: list[str], words: str
) -> None:
    line = _error_line(_kappa(["replay", "--version", "2", "--processes", "2", *extra], tmp_path))
    assert words in line


def test_a_misspelt_setting_is_named_with_the_one_meant(tmp_path: Path) -> None:
    r = _kappa(["worker", "--pipeline", "nope"], tmp_path, KAPPA_GRACE="5000", KAPPA_CHAOS_SEED="1")
    warning, error = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert warning == (
        "kappa worker: warning: KAPPA_GRACE is not a setting (did you mean KAPPA_GRACE_MS?); "
        "ignored"
    )
    assert "nope" in error  # the command still runs; test-only variables are known


def _refused() -> BaseException:
    from app.send_refusals import SendRefused

    return SendRefused("the broker refused writes to orders.dlq: ...")


@pytest.mark.parametrize(
    ("error", "line"),
    [
        # A replay (or any command) whose writes the broker refuses for good (ACLs, sizes).
        (_refused(), "the broker refused writes to orders.dlq: ..."),
        # A read that never reached the end of a topic (an offline partition, a slow broker).
        (
            TimeoutError("reading orders.revenue-1m made no progress for 60s"),
            "Kafka broker at 127.0.0.1:1: TimeoutError: reading orders.revenue-1m made no "
            "progress for 60s",
        ),
        (TimeoutError(), "Kafka broker at 127.0.0.1:1: TimeoutError: no answer in time"),
    ],
)
def test_broker_trouble_met_by_a_command_is_one_line(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    error: BaseException,
    line: str,
) -> None:
    from app import cli

    def failing(args: object) -> int:
        raise error

    monkeypatch.setenv("KAPPA_BROKER", "127.0.0.1:1")
    monkeypatch.setattr(cli, "cmd_status", failing)
    assert cli.main(["status"]) == 2
    assert capsys.readouterr().err == f"kappa status: error: {line}\n"


def test_a_setting_in_the_wrong_case_is_named_in_upper_case() -> None:
    """`KAPPA_web_port` was "not a setting" with no hint: close matches compared case."""
    from app.settings import unknown_variables

    assert unknown_variables({"KAPPA_web_port": "1", "KAPPA_Anomaly_Zz": "5"}) == [
        "KAPPA_Anomaly_Zz is not a setting (did you mean KAPPA_ANOMALY_Z?); ignored",
        "KAPPA_web_port is not a setting (did you mean KAPPA_WEB_PORT?); ignored",
    ]


def test_kappa_max_ts_ahead_ms_reaches_the_orders_pipeline_and_the_versions_definition() -> None:
    for env, want in (({}, 86_400_000), ({"KAPPA_MAX_TS_AHEAD_MS": "0"}, 0)):
        settings = load_settings(env)
        orders = build_pipelines(settings)[0]
        assert isinstance(orders, OrdersPipeline) and orders.config.max_ts_ahead_ms == want
        assert version_definition(settings)["max_ts_ahead_ms"] == want
    for bad in ("-1", str(366 * 86_400_000 + 1), "1e3", ""):
        with pytest.raises(ConfigError, match=r"^KAPPA_MAX_TS_AHEAD_MS"):
            load_settings({"KAPPA_MAX_TS_AHEAD_MS": bad})
    # A version recorded before the setting existed was built without the guard, and keeps
    # its rule: its definition reads as built with 0, which a worker whose environment does
    # not set the guard takes from it; one that sets the guard on is refused.
    old = {k: v for k, v in version_definition(load_settings({})).items() if k != "max_ts_ahead_ms"}
    view = RegistryView({}, {}, definitions={2: old})
    built = recorded_definition(view, 2)
    assert built == {**version_definition(load_settings({})), "max_ts_ahead_ms": 0}
    assert settings_for_version(load_settings({}), view, 2).max_ts_ahead_ms == 0
    on = load_settings({"KAPPA_MAX_TS_AHEAD_MS": "86400000"})
    assert differing_settings(built, version_definition(on)) == ["max_ts_ahead_ms"]
    assert settings_for_version(on, view, 2).max_ts_ahead_ms == 86_400_000  # then refused


def test_kappa_quiet_p_sets_how_unlikely_a_silence_must_be() -> None:
    strict = quiet_config(load_settings({"KAPPA_QUIET_P": "1e-6"}))
    assert strict.p_quiet == 1e-6 and strict.quiet_windows(1.0) == 14  # ln(1e6) = 13.8
    assert quiet_config(load_settings({})).quiet_windows(1.0) == 7


def test_since_takes_whole_epoch_milliseconds_and_iso_times_with_a_zone() -> None:
    from app.cli import build_parser

    def since(value: str) -> int:
        return build_parser().parse_args(["replay", "--version", "2", "--since", value]).since

    assert since("1700000000000") == since("2023-11-14T22:13:20Z") == 1_700_000_000_000
