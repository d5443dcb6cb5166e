"""Kafka errors that retrying cannot fix: the broker refuses the write itself (authorization,
record size, topic policy, timestamps), or a read cannot succeed (authorization, a codec this
client lacks, a corrupt batch). A worker or replay stops on them with one line naming what to
change, instead of retrying forever behind a healthy `/health` (Kafka Streams fails its thread
on these too). Broker and network trouble is still retried."""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka import errors

_AUTH = "grant this client's principal Write and Describe on these topics (ACLs)"
_SIZE = (
    "raise these topics' max.message.bytes to at least 1000000 (Kappa's record batches are up "
    "to that size; DLQ and late copies follow KAPPA_COPY_MAX_BYTES)"
)
_HINTS: dict[type[errors.KafkaError], str] = {
    errors.TopicAuthorizationFailedError: _AUTH,
    errors.ClusterAuthorizationFailedError: "grant this client's principal IdempotentWrite on "
    "the cluster (ACLs)",
    errors.TransactionalIdAuthorizationFailed: "grant this client's principal Write on its "
    "transactional ids (exactly_once)",
    errors.SaslAuthenticationFailed: "check KAPPA_SASL_USERNAME and KAPPA_SASL_PASSWORD",
    errors.AuthenticationFailedError: "check KAPPA_SASL_USERNAME and KAPPA_SASL_PASSWORD",
    errors.UnsupportedSaslMechanismError: "check KAPPA_SASL_MECHANISM",
    errors.MessageSizeTooLargeError: _SIZE,
    errors.RecordListTooLargeError: _SIZE,
    errors.RecordTooLargeError: _SIZE,
    errors.InvalidTimestampError: "the topics refuse records stamped with these event times: "
    "raise their message.timestamp.after.max.ms (future times) and message.timestamp.before.max.ms "
    "(past times; message.timestamp.difference.max.ms before Kafka 3.6)",
    errors.PolicyViolationError: "the broker's policy refuses these writes",
    errors.InvalidTopicError: "the broker refuses these topic names",
    errors.InvalidRequiredAcksError: "the broker refuses acks=all",
    errors.UnsupportedVersionError: "the broker is too old for this client's requests",
    errors.UnsupportedForMessageFormatError: "the topics' message.format.version is too old",
}


class SendRefused(RuntimeError):
    """The broker refused a produce in a way retrying cannot fix (one-line message)."""


def refusal(error: BaseException, topics: Iterable[str]) -> SendRefused | None:
    """The one-line error for `error` if retrying the send cannot help, else None."""
    hint = next((h for kind, h in _HINTS.items() if isinstance(error, kind)), None)
    if hint is None:
        return None
    names = ", ".join(sorted(set(topics))) or "(no topic)"
    return SendRefused(
        f"the broker refused writes to {names}: {type(error).__name__}: {error} "
        f"(not retried: {hint}; then restart)"
    )


_READ_HINTS: dict[type[errors.KafkaError], str] = {
    errors.TopicAuthorizationFailedError: "grant this client's principal Read and Describe on "
    "the version's topics (ACLs)",
    errors.GroupAuthorizationFailedError: "grant this client's principal Read on its consumer "
    "groups (ACLs)",
    errors.UnsupportedCodecError: "this installation lacks the codec: reinstall Kappa with its "
    "dependencies (cramjam)",
    errors.CorruptRecordException: "a record batch on the broker is corrupt: check the broker's "
    "log and disks",
    errors.UnsupportedVersionError: "the broker is too old for this client's requests",
}


class ReadRefused(RuntimeError):
    """A read failed in a way retrying cannot fix (one-line message)."""


def read_refusal(error: BaseException, what: str) -> ReadRefused | None:
    """The one-line error for a failed read of `what` if retrying cannot help, else None."""
    hint = next((h for kind, h in _READ_HINTS.items() if isinstance(error, kind)), None)
    if hint is None:
        return None
    return ReadRefused(
        f"{what}: reading failed: {type(error).__name__}: {error} (not retried: {hint}; "
        "then restart)"
    )
