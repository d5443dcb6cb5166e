"""A `PipelineRunner` wired to Kafka for the settings' processing guarantee.

The worker and the replay build their runners here, so both run a pipeline the same way:
what replay equals live rests on (one produce request per cycle and changelog entries held
for the next one under at_least_once; one transaction per source partition, its previous
owner fenced before the state is opened, under exactly_once).
"""

from __future__ import annotations

from agents.base import Pipeline
from app.batch_producer import BatchSender, OwnProducerSender, TransactionalSender, retrying
from app.changelog import KafkaChangelog
from app.runtime import GapReader, PipelineRunner
from app.settings import Settings
from app.topology import Topology


def kafka_pipeline_runner(
    settings: Settings,
    topology: Topology,
    pipeline: Pipeline,
    sender: BatchSender | OwnProducerSender | TransactionalSender,
    read_gap: GapReader | None = None,
) -> PipelineRunner:
    """`sender` is transactional exactly when the settings say exactly_once; its sends are
    retried until they succeed or are refused for good (`retrying`)."""
    transactional = isinstance(sender, TransactionalSender)
    if transactional != settings.exactly_once:
        raise ValueError(f"{type(sender).__name__} is not {settings.processing_guarantee}")
    return PipelineRunner(
        pipeline,
        topology,
        retrying(sender.send, (pipeline.name, str(topology.version))),
        read_gap,
        KafkaChangelog(settings.kafka, topology.changelog(pipeline)),
        one_request=not transactional,
        hold_changelog=not transactional,
        before_open=sender.fence if isinstance(sender, TransactionalSender) else None,
    )
