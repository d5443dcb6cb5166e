"""State and the pure core: windows, stream time, aggregates, and the RocksDB adapters.

Modules named `rocks*` are the only ones here that import `rocksdict`; the rest import no
Kafka, Faust or RocksDB code and are tested without a broker.
"""
