"""Backfills as replays: the retained topics, from offset zero, through the same pipelines,
into a version's own outputs and state; then diff, promote (cut-over) or drop."""
