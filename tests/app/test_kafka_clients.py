"""Security settings reach every Kafka client the project creates (plumbing only: the embedded
broker cannot speak TLS or SASL), and secrets never show up in logs, errors or /metrics."""

from __future__ import annotations

import ast
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from app.kafka_clients import new_admin, new_consumer, new_producer
from app.settings import ConfigError, load_settings

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("app", "agents", "tables", "replay")
CLIENTS = {"AIOKafkaConsumer", "AIOKafkaProducer", "AIOKafkaAdminClient"}
SECRET = "s3cr3t-value"

SASL = {
    "KAPPA_BROKER": "kafka.example:9093",
    "KAPPA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
    "KAPPA_SASL_MECHANISM": "SCRAM-SHA-512",
    "KAPPA_SASL_USERNAME": "kappa",
    "KAPPA_SASL_PASSWORD": SECRET,
}


def _inner(client: object) -> object:
    """The aiokafka client object that holds the connection settings."""
    return getattr(client, "_client", None) or client.client  # type: ignore[attr-defined]


async def _closed(client: object) -> None:
    close = getattr(client, "close", None) or client.stop  # type: ignore[attr-defined]
    await close()


def test_only_kafka_clients_module_constructs_kafka_clients() -> None:
    offenders = []
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            if path.name == "kafka_clients.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call):
                    name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                    if name in CLIENTS:
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, f"construct Kafka clients via app.kafka_clients: {offenders}"


async def test_sasl_settings_reach_consumers_producers_and_admin_clients() -> None:
    kafka = load_settings(SASL).kafka
    for client in (new_consumer(kafka), new_producer(kafka), new_admin(kafka)):
        inner = _inner(client)
        assert inner._bootstrap_servers == "kafka.example:9093"
        assert inner._security_protocol == "SASL_PLAINTEXT"
        assert inner._sasl_mechanism == "SCRAM-SHA-512"
        assert inner._sasl_plain_username == "kappa"
        assert inner._sasl_plain_password == SECRET
        await _closed(client)


@pytest.fixture
def tls_files(tmp_path: Path) -> dict[str, str]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=kappa-test",
        ],
        check=True,
        capture_output=True,
    )
    return {
        "KAPPA_SSL_CAFILE": str(cert),
        "KAPPA_SSL_CERTFILE": str(cert),
        "KAPPA_SSL_KEYFILE": str(key),
    }


async def test_tls_settings_reach_clients_and_the_faust_app(
    tls_files: dict[str, str], tmp_path: Path
) -> None:
    from app.worker import create_app

    env = {
        **SASL,
        **tls_files,
        "KAPPA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAPPA_STATE_DIR": str(tmp_path),
    }
    settings = load_settings(env)
    for client in (
        new_consumer(settings.kafka),
        new_producer(settings.kafka),
        new_admin(settings.kafka),
    ):
        assert _inner(client)._security_protocol == "SASL_SSL"
        assert _inner(client)._ssl_context is not None
        await _closed(client)
    app = create_app(settings, 1)
    creds = app.conf.broker_credentials
    assert creds.username == "kappa" and creds.password == SECRET
    assert creds.ssl_context is not None
    assert "SCRAM_SHA_512" in str(creds.mechanism)


async def test_secrets_stay_out_of_repr_errors_and_metrics(tmp_path: Path) -> None:
    from app.worker import create_app

    settings = load_settings({**SASL, "KAPPA_STATE_DIR": str(tmp_path)})
    assert SECRET not in repr(settings)
    assert SECRET not in repr(settings.kafka) and SECRET not in str(settings.kafka)
    create_app(settings, 1)
    assert SECRET.encode() not in generate_latest()
    with pytest.raises(ConfigError) as e:
        load_settings({**SASL, "KAPPA_SASL_USERNAME": ""})
    assert SECRET not in str(e.value)


def test_bad_security_settings_are_one_line_errors() -> None:
    with pytest.raises(ConfigError, match="KAPPA_SECURITY_PROTOCOL"):
        load_settings({"KAPPA_SECURITY_PROTOCOL": "TLS"})
    with pytest.raises(ConfigError, match="KAPPA_SASL_MECHANISM"):
        load_settings({**SASL, "KAPPA_SASL_MECHANISM": "GSSAPI"})
    with pytest.raises(ConfigError, match="not a readable file"):
        load_settings({"KAPPA_SECURITY_PROTOCOL": "SSL", "KAPPA_SSL_CAFILE": "/nonexistent.pem"})


async def test_web_server_binds_loopback_unless_configured(tmp_path: Path) -> None:
    from app.worker import create_app

    app = create_app(load_settings({"KAPPA_STATE_DIR": str(tmp_path)}), 1)
    assert app.conf.web_bind == "127.0.0.1"
    app = create_app(
        load_settings({"KAPPA_STATE_DIR": str(tmp_path), "KAPPA_WEB_HOST": "0.0.0.0"}), 1
    )
    assert app.conf.web_bind == "0.0.0.0"
