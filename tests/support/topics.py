"""Topics listed and deleted by hand, as an operator would, under a running worker."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient


async def list_topics(broker: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=broker)
    await admin.start()
    try:
        return list(await admin.list_topics())
    finally:
        await admin.close()


async def delete_topics(broker: str, topics: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=broker)
    await admin.start()
    try:
        await admin.delete_topics(topics)
    finally:
        await admin.close()
