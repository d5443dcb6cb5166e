"""One typed settings object, read from `KAPPA_*` environment variables.

Defaults point at the embedded development broker, so `make run` needs no configuration;
pointing the workers at Apache Kafka or Redpanda is `KAPPA_BROKER=host:9092`.
"""

from __future__ import annotations

import difflib
import os
import re
import ssl
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from agents.base import MIN_COPY_BYTES
from app.kafka_clients import SASL_MECHANISMS, SECURITY_PROTOCOLS, KafkaConnection
from tables.cleaning import DEFAULT_MAX_TS_AHEAD_MS
from tables.quiet import QuietConfig
from tables.trends import TrendConfig


class ConfigError(ValueError):
    """Bad configuration: reported as one line, never as a traceback."""


DEFAULT_BROKER = "127.0.0.1:9092"  # the embedded broker's default address


# A worker's web address, as other workers and clients use it: scheme, host (an IPv6 address in
# brackets) and an optional port only; `web_url_problem` checks the host and port further.
WEB_URL = re.compile(r"https?://(?:\[[^\]\s/?#@]+\]|[^\s/?#@\[\]:]+)(?::[0-9]*)?/?")


@dataclass(frozen=True)
class Settings:
    broker: str = DEFAULT_BROKER  # bootstrap servers, comma-separated host:port
    app_id: str = "kappa"  # prefix of consumer groups, changelogs and internal topics
    topic_prefix: str = ""  # prepended to every topic name (to share a cluster)
    state_dir: Path = Path(
        ".kappa/state"
    )  # RocksDB state root (one dir per version/pipeline/partition)
    partitions: int = 4  # partitions of topics Kappa creates
    replication: int = 1  # replication factor of topics Kappa creates
    window_ms: int = 60_000  # revenue window size
    # orders.revenue-hopping: windows of this size starting every step (0: none emitted)
    hopping_size_ms: int = 0
    hopping_step_ms: int = 0
    grace_ms: int = 10_000  # how long after a window's end late events are still accepted
    emit_updates: bool = False  # also emit running window values on every change
    # orders whose ts is further than this after their Kafka record's timestamp go to the DLQ
    # (timestamp_ahead) instead of moving stream time on (0: no limit)
    max_ts_ahead_ms: int = DEFAULT_MAX_TS_AHEAD_MS
    # product-trends: windows in the moving average; half-life (in windows) of the trend's and
    # the anomaly baseline's weights; |z| above which a window is an anomaly, after a warm-up
    trend_windows: int = 5
    trend_half_life: float = 10.0
    anomaly_z: float = 3.0
    anomaly_warmup: int = 10
    top_k: int = 10  # top-products: products ranked per window
    # quiet-products: a product is quiet once a silence this unlikely under its rate has passed
    quiet_p: float = 0.001
    demand_levels: int = 3  # product-trends: demand levels (clusters) learned per product
    batch_max: int = 20_000  # live: records buffered per pipeline before the consumer waits
    fetch_max_wait_ms: int = 20  # live: longest a fetch waits for data (latency when idle)
    batch_linger_ms: int = 10  # live: wait up to this long for a batch of batch_max/4 records
    replay_batch_max: int = 25_000  # max records per replay batch: its outputs are held until sent
    # largest DLQ or late copy written (bytes, a one-record batch): a bigger source record's
    # value is cut to fit. Under the broker's max.message.bytes (Kafka's default: 1,048,588)
    copy_max_bytes: int = 1_000_000
    session_timeout_ms: int = (
        10_000  # consumer-group session timeout: how fast a dead worker is noticed
    )
    rebalance_timeout_ms: int = 10_000  # how long a rebalance waits for members to rejoin
    # static group membership (Kafka's group.instance.id, KIP-345): this worker process's id in
    # its version's consumer group, so a restart within the session timeout gets its partitions
    # back without a rebalance. Empty: dynamic membership (a restart rebalances the group).
    group_instance_id: str = ""
    # live: longest the worker's fetch loop may go without polling before its consumer leaves
    # the group (Kafka's max.poll.interval.ms and default). A pipeline that takes no records
    # (a restore) holds back only its own source and the loop polls on; past it the worker
    # stops (exit 1), as faust would never rejoin.
    max_poll_interval_ms: int = 300_000
    # live: a worker told to stop (SIGTERM, Ctrl-C) exits after this long even if its orderly
    # shutdown has not finished; nothing is lost (state commits batch by batch)
    shutdown_timeout_ms: int = 20_000
    # how long a source partition's end may stay at or before what the state applied before
    # it counts as lost (a new partition leader can briefly report an older end, KIP-207)
    source_end_grace_ms: int = 30_000
    web_host: str = "127.0.0.1"  # bind address of the worker's web server (/metrics, /health)
    web_port: int = 6066
    # the URL other workers' table queries name for this worker's web server (empty: derived
    # from web_host and web_port, the host name for 0.0.0.0 or ::)
    advertised_url: str = ""
    log_level: str = "info"
    processing_guarantee: str = "at_least_once"  # or exactly_once (needs broker transactions)
    # Kafka security (reaches every client: see app/kafka_clients.py). Secrets stay out of repr.
    security_protocol: str = "PLAINTEXT"  # PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL
    ssl_cafile: str = ""  # CA bundle to verify the brokers (SSL, SASL_SSL)
    ssl_certfile: str = ""  # client certificate (mutual TLS)
    ssl_keyfile: str = ""  # client private key (mutual TLS)
    ssl_password: str = field(default="", repr=False)  # password of the private key
    sasl_mechanism: str = "PLAIN"  # PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512
    sasl_username: str = ""
    sasl_password: str = field(default="", repr=False)
    # Not a setting: the names of those the environment or the command line gave (the others
    # hold their defaults, and a version's recorded ones replace them: `settings_for_version`).
    given: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    @property
    def exactly_once(self) -> bool:
        return self.processing_guarantee == "exactly_once"

    @property
    def kafka(self) -> KafkaConnection:
        """Bootstrap servers and security, as every Kafka client of the project gets them."""
        return KafkaConnection(
            self.broker,
            self.security_protocol,
            self.ssl_cafile or None,
            self.ssl_certfile or None,
            self.ssl_keyfile or None,
            self.ssl_password or None,
            self.sasl_mechanism if self.security_protocol.startswith("SASL") else None,
            self.sasl_username or None,
            self.sasl_password or None,
            read_committed=self.exactly_once,
        )

    @property
    def bootstrap(self) -> list[str]:
        return [s.strip() for s in self.broker.split(",") if s.strip()]


_ENV_PREFIX = "KAPPA_"
# The fields a `KAPPA_*` variable sets (`given` is no setting).
SETTING_FIELDS = tuple(f for f in fields(Settings) if f.name != "given")


def load_settings(env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Settings from the environment (and explicit overrides); raises `ConfigError`."""
    env = os.environ if env is None else env
    values: dict[str, object] = {}
    for f in SETTING_FIELDS:
        name = _ENV_PREFIX + f.name.upper()
        if name in env:
            values[f.name] = _convert(name, env[name], f.type)
    values.update({k: v for k, v in overrides.items() if v is not None})
    settings = Settings(**values, given=frozenset(values))  # type: ignore[arg-type]
    _validate(settings)
    return settings


def validated(settings: Settings) -> Settings:
    """`settings` if every value is in range; raises `ConfigError` naming the first that is not."""
    _validate(settings)
    return settings


TEST_ONLY_VARIABLES = frozenset(
    {
        "KAPPA_CHAOS_KILL",
        "KAPPA_CHAOS_STOP",
        "KAPPA_CHAOS_ROUNDS",
        "KAPPA_CHAOS_SEED",
        "KAPPA_CHAOS_HANG_ON_STOP",
    }
)


def unknown_variables(env: Mapping[str, str]) -> list[str]:
    """A line for each `KAPPA_*` variable that is no setting (a typo would otherwise be
    silently ignored), naming the setting it most resembles, if any."""
    known = {_ENV_PREFIX + f.name.upper() for f in SETTING_FIELDS} | TEST_ONLY_VARIABLES
    out = []
    for name in sorted(n for n in env if n.startswith(_ENV_PREFIX) and n not in known):
        if name.upper() in known:  # KAPPA_web_port: the names are upper case
            close = [name.upper()]
        else:
            close = difflib.get_close_matches(name.upper(), sorted(known), n=1, cutoff=0.75)
        hint = f" (did you mean {close[0]}?)" if close else ""
        out.append(f"{name} is not a setting{hint}; ignored")
    return out


def _convert(name: str, raw: str, typ: object) -> object:
    typ = str(typ)
    try:
        if typ == "int":
            return int(raw)
        if typ == "float":
            return float(raw)
        if typ == "bool":
            low = raw.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if typ == "Path":
            return Path(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a valid {typ}") from None
    return raw


# Longest window or grace (ms): window keys are signed 64-bit window ends, and a window of
# more than a year is a configuration mistake, not a use case.
MAX_WINDOW_MS = 366 * 24 * 3600 * 1000


def _shared_directory(state_dir: Path) -> str | None:
    """What `state_dir` is if it holds more than Kappa's state (`kappa demo` clears the `vN/`
    and `faust/` directories in it): the current directory, the root, the home directory."""
    if not str(state_dir).strip() or state_dir == Path("."):  # Path("") is "."
        return "the current directory"
    try:
        where = state_dir.expanduser().resolve()
        if where == Path.cwd().resolve():
            return f"the current directory ({where})"
        if where == Path(where.anchor):
            return f"the filesystem root ({where})"
        if where == Path.home().resolve():
            return f"the home directory ({where})"
    except (OSError, RuntimeError):  # no home, a symlink loop: left to the commands
        return None
    return None


# Most hopping windows an event counts in (size / step): each is a state update per event.
MAX_HOPS_PER_EVENT = 60


def _check_hopping(size_ms: int, step_ms: int) -> None:
    """Hopping windows are off (both 0) or a size with a step that divides it into at most
    `MAX_HOPS_PER_EVENT` overlapping windows."""
    if size_ms == 0 and step_ms == 0:
        return
    if size_ms <= 0 or step_ms <= 0:
        raise ConfigError(
            "KAPPA_HOPPING_SIZE_MS and KAPPA_HOPPING_STEP_MS must both be > 0 (or both 0: no "
            f"hopping windows), got {size_ms} and {step_ms}"
        )
    if size_ms > MAX_WINDOW_MS:
        raise ConfigError(f"KAPPA_HOPPING_SIZE_MS must be at most {MAX_WINDOW_MS} (366 days)")
    if size_ms % step_ms or size_ms // step_ms > MAX_HOPS_PER_EVENT:
        raise ConfigError(
            f"KAPPA_HOPPING_STEP_MS={step_ms} must divide KAPPA_HOPPING_SIZE_MS={size_ms} into "
            f"1 to {MAX_HOPS_PER_EVENT} steps (each order counts in size/step windows)"
        )


# Longest timeout (ms) a setting may ask for: Kafka's protocol carries them as signed 32-bit
# ints, and faust needs the session timeout under its request timeout (90 s).
MAX_SESSION_TIMEOUT_MS = 85_000
# Partitions per topic. Far above what a Python worker needs (a partition's records go
# through one process), and far below what stalls a broker: asked for 999,999,999 partitions
# the embedded one grew to 4.7 GB and died, and 100,000 made every command take minutes.
MAX_PARTITIONS = 1_000
MAX_TIMEOUT_MS = 3_600_000
MAX_INT32 = 2**31 - 1
# Kafka's topic names: ASCII letters, digits, '.', '_' and '-', at most 249 characters.
_TOPIC_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
MAX_TOPIC_CHARS = 249
# The app id and the prefix both go into changelog names (`{prefix}{app_id}-vN-...-changelog`).
MAX_APP_ID = 64
# Versions go into topic, group and directory names; six digits keep every name within Kafka's
# 249 characters whatever the app id and prefix.
MAX_VERSION = 999_999


def topic_name_problem(name: str) -> str | None:
    """Why Kafka would refuse this topic name, or None if it is a valid one."""
    if not name:
        return "is empty"
    if name in (".", ".."):
        return "cannot be '.' or '..'"
    if len(name) > MAX_TOPIC_CHARS:
        return f"is longer than {MAX_TOPIC_CHARS} characters"
    if not set(name) <= _TOPIC_CHARS:
        return "may only hold ASCII letters, digits, ., _ and -"
    return None


def address_problem(address: str) -> str | None:
    """Why `address` is not a usable host:port, or None if it is one."""
    host, sep, port = address.rpartition(":")
    if not sep or not host.strip("[]"):
        return "must be host:port"
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        return "needs a port number from 1 to 65535"
    return host_problem(host.strip("[]"))


def host_problem(host: str) -> str | None:
    """Why `host` cannot be looked up (an empty or over-63-character DNS label), or None."""
    if ":" in host:  # an IPv6 address
        return None
    try:
        host.encode("idna")
    except UnicodeError:
        return "is not a host name (a dot-separated label is empty or over 63 characters)"
    return None


def web_url_problem(url: str) -> str | None:
    """Why `url` is not a worker's web address (http or https, a host, a port from 1 to 65535
    if any, nothing after), or None: what both KAPPA_ADVERTISED_URL and `--worker` take."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as e:  # "Invalid IPv6 URL", a bracketed host that is no IP address
        return f"is not a URL: {e}"
    if not WEB_URL.fullmatch(url):
        return "must be http://host:port or https://host:port"
    try:
        port = parts.port
    except ValueError:  # digits only (WEB_URL), so out of range
        port = 0
    if port == 0:
        return "needs a port number from 1 to 65535"
    return host_problem(parts.hostname or "")


def _validate(s: Settings) -> None:
    if not s.bootstrap:
        raise ConfigError(f"KAPPA_BROKER={s.broker!r} must be host:port[,host:port...]")
    for address in s.bootstrap:
        problem = address_problem(address)
        if problem:
            raise ConfigError(
                f"KAPPA_BROKER={s.broker!r}: {address!r} {problem} (host:port[,host:port...])"
            )
    shared = _shared_directory(s.state_dir)
    if shared:
        raise ConfigError(f"KAPPA_STATE_DIR must name a directory for Kappa's state, not {shared}")
    if not s.web_host.strip():
        raise ConfigError("KAPPA_WEB_HOST must not be empty (e.g. 127.0.0.1 or 0.0.0.0)")
    problem = host_problem(s.web_host)
    if problem:
        raise ConfigError(f"KAPPA_WEB_HOST={s.web_host!r} {problem}")
    problem = web_url_problem(s.advertised_url) if s.advertised_url else None
    if problem:
        raise ConfigError(
            f"KAPPA_ADVERTISED_URL={s.advertised_url!r} {problem}: the address at which other "
            "workers and clients reach this worker's web server"
        )
    if s.partitions > MAX_PARTITIONS:
        raise ConfigError(
            f"KAPPA_PARTITIONS must be at most {MAX_PARTITIONS}, got {s.partitions} (each "
            "partition is a state store per pipeline on the worker that holds it)"
        )
    if s.replication > 2**15 - 1:  # Kafka's protocol carries it as an int16
        raise ConfigError(f"KAPPA_REPLICATION must be at most {2**15 - 1}, got {s.replication}")
    if s.session_timeout_ms > MAX_SESSION_TIMEOUT_MS:
        raise ConfigError(
            f"KAPPA_SESSION_TIMEOUT_MS must be at most {MAX_SESSION_TIMEOUT_MS}, got "
            f"{s.session_timeout_ms}"
        )
    for name in (
        "rebalance_timeout_ms",
        "shutdown_timeout_ms",
        "source_end_grace_ms",
        "fetch_max_wait_ms",
        "batch_linger_ms",
    ):
        if getattr(s, name) > MAX_TIMEOUT_MS:
            raise ConfigError(
                f"KAPPA_{name.upper()} must be at most {MAX_TIMEOUT_MS} (1 hour), got "
                f"{getattr(s, name)}"
            )
    if s.group_instance_id:
        problem = topic_name_problem(s.group_instance_id)  # Kafka checks it as a topic name
        if problem:
            shown = s.group_instance_id
            shown = f"{shown[:60]}…" if len(shown) > 60 else shown
            raise ConfigError(
                f"KAPPA_GROUP_INSTANCE_ID={shown!r} {problem} (empty: dynamic membership)"
            )
    if s.max_poll_interval_ms > MAX_INT32:
        raise ConfigError(
            f"KAPPA_MAX_POLL_INTERVAL_MS must be at most {MAX_INT32} (Kafka's int32), got "
            f"{s.max_poll_interval_ms}"
        )
    for name in (
        "partitions",
        "replication",
        "window_ms",
        "batch_max",
        "replay_batch_max",
        "web_port",
        "session_timeout_ms",
        "rebalance_timeout_ms",
        "max_poll_interval_ms",
        "shutdown_timeout_ms",
    ):
        if getattr(s, name) <= 0:
            raise ConfigError(f"KAPPA_{name.upper()} must be > 0, got {getattr(s, name)}")
    if s.window_ms > MAX_WINDOW_MS or s.grace_ms > MAX_WINDOW_MS:
        raise ConfigError(
            f"KAPPA_WINDOW_MS and KAPPA_GRACE_MS must be at most {MAX_WINDOW_MS} (366 days)"
        )
    if not 0 <= s.max_ts_ahead_ms <= MAX_WINDOW_MS:
        raise ConfigError(
            f"KAPPA_MAX_TS_AHEAD_MS must be from 0 (no limit) to {MAX_WINDOW_MS} (366 days), "
            f"got {s.max_ts_ahead_ms}"
        )
    _check_hopping(s.hopping_size_ms, s.hopping_step_ms)
    try:
        trend_config(s)
    except ValueError as err:  # "average_windows must be ...": named as the variable
        name, _, rest = str(err).partition(" ")
        raise ConfigError(f"{_TREND_VARIABLES[name]} {rest}") from None
    if not 1 <= s.top_k <= 100:  # a ranking of long ids must stay one record (~620 KB at 100)
        raise ConfigError(f"KAPPA_TOP_K must be from 1 to 100, got {s.top_k}")
    if not 1e-12 <= s.quiet_p <= 0.5:  # also refuses NaN
        raise ConfigError(f"KAPPA_QUIET_P must be from 1e-12 to 0.5, got {s.quiet_p}")
    if not 1 <= s.demand_levels <= 10:
        raise ConfigError(f"KAPPA_DEMAND_LEVELS must be from 1 to 10, got {s.demand_levels}")
    if s.web_port > 65535:
        raise ConfigError(f"KAPPA_WEB_PORT must be a port number (1-65535), got {s.web_port}")
    if s.copy_max_bytes < MIN_COPY_BYTES:
        raise ConfigError(
            f"KAPPA_COPY_MAX_BYTES must be >= {MIN_COPY_BYTES}, got {s.copy_max_bytes}"
        )
    if min(s.grace_ms, s.batch_linger_ms, s.fetch_max_wait_ms, s.source_end_grace_ms) < 0:
        raise ConfigError(
            "KAPPA_GRACE_MS, KAPPA_BATCH_LINGER_MS, KAPPA_FETCH_MAX_WAIT_MS and "
            "KAPPA_SOURCE_END_GRACE_MS must be >= 0"
        )
    if not s.app_id or not set(s.app_id) <= _TOPIC_CHARS - {"."} or len(s.app_id) > MAX_APP_ID:
        raise ConfigError(
            f"KAPPA_APP_ID={s.app_id!r} may only hold ASCII letters, digits, - and _ (at most "
            f"{MAX_APP_ID} characters)"
        )
    if s.processing_guarantee not in ("at_least_once", "exactly_once"):
        raise ConfigError(
            f"KAPPA_PROCESSING_GUARANTEE={s.processing_guarantee!r} must be at_least_once or "
            "exactly_once"
        )
    if s.security_protocol not in SECURITY_PROTOCOLS:
        choices = ", ".join(SECURITY_PROTOCOLS)
        raise ConfigError(
            f"KAPPA_SECURITY_PROTOCOL={s.security_protocol!r} must be one of {choices}"
        )
    if s.security_protocol.startswith("SASL"):
        if s.sasl_mechanism not in SASL_MECHANISMS:
            raise ConfigError(f"KAPPA_SASL_MECHANISM must be one of {', '.join(SASL_MECHANISMS)}")
        if not s.sasl_username or not s.sasl_password:
            raise ConfigError("SASL needs KAPPA_SASL_USERNAME and KAPPA_SASL_PASSWORD")
    for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        path = getattr(s, name)
        try:
            readable = not path or Path(path).is_file()
        except OSError as e:  # a name too long, a path the user may not search
            readable, path = False, f"{path[:80]}…" if len(path) > 80 else path
            path += f" ({e.strerror})"
        if not readable:
            raise ConfigError(f"KAPPA_{name.upper()}={path!r} is not a readable file")
    if (s.ssl_keyfile or s.ssl_password) and not s.ssl_certfile:
        # The key belongs to a client certificate; without one it would be ignored silently.
        raise ConfigError(
            "KAPPA_SSL_KEYFILE/PASSWORD need KAPPA_SSL_CERTFILE (the client certificate)"
        )
    try:  # certificates and keys are read here, so a bad file is said at once, in one line
        s.kafka.ssl_context()
    except (ssl.SSLError, OSError) as e:
        raise ConfigError(
            f"KAPPA_SSL_CAFILE/CERTFILE/KEYFILE/PASSWORD: cannot set up TLS: {e}"
        ) from None
    if not set(s.topic_prefix) <= _TOPIC_CHARS or len(s.topic_prefix) > MAX_TOPIC_CHARS // 2:
        raise ConfigError(
            f"KAPPA_TOPIC_PREFIX={s.topic_prefix!r} may only hold ASCII letters, digits, ., _ "
            f"and - (at most {MAX_TOPIC_CHARS // 2} characters)"
        )
    if s.log_level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"KAPPA_LOG_LEVEL={s.log_level!r} must be debug, info, warning or error")


_TREND_VARIABLES = {
    "average_windows": "KAPPA_TREND_WINDOWS",
    "half_life_windows": "KAPPA_TREND_HALF_LIFE",
    "anomaly_z": "KAPPA_ANOMALY_Z",
    "warmup_windows": "KAPPA_ANOMALY_WARMUP",
}


def trend_config(s: Settings) -> TrendConfig:
    """The product-trends pipeline's analytics settings; raises ValueError when out of range."""
    return TrendConfig(s.trend_windows, s.trend_half_life, s.anomaly_z, s.anomaly_warmup)


def quiet_config(s: Settings) -> QuietConfig:
    """orders.quiet-products: a product's order rate fades with the trends' half-life, its
    silences count after the anomalies' warm-up, and one is quiet below `KAPPA_QUIET_P`."""
    return QuietConfig(0.5 ** (1.0 / s.trend_half_life), s.anomaly_warmup, s.quiet_p)
