"""End offsets for a bounded replay, taken from fetch responses.

ListOffsets(latest) is wrong on the embedded broker whenever the last batch held several
records; the high watermark a fetch response carries is right there and on Apache Kafka.
"""

from app.topic_reader import high_watermarks

__all__ = ["high_watermarks"]
