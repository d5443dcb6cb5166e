"""Pipelines: each module turns a batch of source records into outputs and state changes.

A pipeline knows nothing of Faust or Kafka clients; `app.runtime` delivers batches to it live
(under Faust agents) and `replay` delivers them from offset zero, so replay runs the same code.
"""
