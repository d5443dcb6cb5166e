"""Which pipelines run, and the names of everything they touch, for one version.

A version owns its consumer groups, changelogs, state directories and output topics, so a
replay into version 2 never touches version 1. Version 1 uses the bare names
(`orders.revenue-1m`); version N >= 2 suffixes them (`orders.revenue-1m.v2`). External source
topics (those no pipeline writes, like `orders`) are shared by every version.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from agents.base import Pipeline
from agents.orders import OrdersConfig, OrdersPipeline
from agents.product_trends import ProductTrendsPipeline
from agents.top_products import TopProductsPipeline
from agents.user_totals import UserTotalsPipeline
from app.admin import KEEP_FOREVER
from app.settings import MAX_VERSION, ConfigError, Settings, quiet_config, trend_config


def readable_name(name: str) -> str:
    """A name as a user gave it, quoted when it would not read as itself in a message: empty,
    blank, with a comma (`--pipeline orders,user-totals`) or anything but letters, digits,
    `.`, `_` and `-`."""
    return name if re.fullmatch(r"[\w.-]+", name) else repr(name)


def build_pipelines(settings: Settings, since_ms: int | None = None) -> list[Pipeline]:
    hopping = (settings.hopping_size_ms, settings.hopping_step_ms)
    orders = OrdersPipeline(
        OrdersConfig(
            settings.window_ms,
            settings.grace_ms,
            settings.emit_updates,
            since_ms,
            hopping if settings.hopping_size_ms else None,
            settings.max_ts_ahead_ms,
        )
    )
    return [
        orders,
        UserTotalsPipeline(),
        ProductTrendsPipeline(trend_config(settings), settings.window_ms, settings.demand_levels),
        TopProductsPipeline(
            settings.top_k, settings.partitions, settings.window_ms, quiet_config(settings)
        ),
    ]


def _one_reader_per_source(pipelines: list[Pipeline]) -> None:
    """A worker delivers each source topic to one pipeline (one batch buffer and one set of
    committed offsets per topic): a second reader would stop the worker at the topic's first
    record. Refused here, before anything runs. A bug in the pipeline list, so a plain error
    rather than a ConfigError."""
    readers: dict[str, str] = {}
    for p in pipelines:
        if p.source in readers:
            raise ValueError(
                f"pipelines {readers[p.source]} and {p.name} both read {p.source}: a topic has "
                "one reading pipeline; fold the second into the first (as quiet-products is "
                "in top-products)"
            )
        readers[p.source] = p.name


def registry_topic(settings: Settings) -> str:
    """The compacted topic holding the version registry (one per app and topic prefix)."""
    return f"{settings.topic_prefix}{settings.app_id}-versions"


def version_suffix(topic: str) -> tuple[str, int | None]:
    """A topic name without its version suffix, and the version: an output of version N >= 2
    is named `NAME.vN` (version 1's has no suffix, and neither has a source)."""
    base, dot, n = topic.rpartition(".v")
    if dot and base and n.isascii() and n.isdigit():
        return base, int(n)
    return topic, None


def written_by_kappa(settings: Settings, topic: str) -> str | None:
    """What `topic` is if Kappa itself writes it (any version's output or changelog, or the
    version registry), else None: a record produced there by hand would be read as Kappa's."""
    if topic == registry_topic(settings):
        return "the version registry"
    pipelines = build_pipelines(settings)
    prefix = settings.topic_prefix
    if topic.startswith(prefix):
        base, _ = version_suffix(topic[len(prefix) :])
        for p in pipelines:
            if base in p.outputs:
                return f"an output of the {p.name} pipeline"
    names = "|".join(re.escape(p.name) for p in pipelines)
    if re.fullmatch(rf"{re.escape(prefix + settings.app_id)}-v\d+-({names})-changelog", topic):
        return "a changelog of Kappa's state"
    return None


@dataclass
class Topology:
    settings: Settings
    version: int = 1
    pipelines: list[Pipeline] = field(default_factory=list)
    since_ms: int | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.version <= MAX_VERSION:
            raise ConfigError(f"version must be between 1 and {MAX_VERSION:,}")
        if not self.pipelines:
            self.pipelines = build_pipelines(self.settings, self.since_ms)
        _one_reader_per_source(self.pipelines)

    def select(self, names: list[str]) -> Topology:
        """The same version restricted to the named pipelines (all when `names` is empty); a
        name given twice selects its pipeline once (it would otherwise run twice)."""
        if not names:
            return self
        names = list(dict.fromkeys(names))
        known = {p.name: p for p in self.pipelines}
        unknown = [n for n in names if n not in known]
        if unknown:
            said = ", ".join(readable_name(n) for n in unknown)
            raise ConfigError(f"unknown pipeline(s) {said}; known: {', '.join(known)}")
        return Topology(self.settings, self.version, [known[n] for n in names], self.since_ms)

    @cached_property
    def all_pipelines(self) -> list[Pipeline]:
        """Every pipeline of the application, selected or not."""
        return build_pipelines(self.settings, self.since_ms)

    @cached_property
    def produced(self) -> set[str]:
        return {t for p in self.all_pipelines for t in p.outputs}

    @property
    def external_sources(self) -> list[str]:
        return sorted({p.source for p in self.pipelines} - self.produced)

    def physical(self, logical: str) -> str:
        name = self.settings.topic_prefix + logical
        if logical not in self.produced or self.version == 1:
            return name
        return f"{name}.v{self.version}"

    @property
    def group_id(self) -> str:
        return f"{self.settings.app_id}-v{self.version}"

    def changelog(self, pipeline: Pipeline) -> str:
        return f"{self.settings.topic_prefix}{self.group_id}-{pipeline.name}-changelog"

    def state_path(self, pipeline: Pipeline, partition: int) -> Path:
        return self.settings.state_dir / f"v{self.version}" / pipeline.name / f"p{partition}"

    def stages(self) -> list[Pipeline]:
        """Pipelines in dependency order: a pipeline comes after the one producing its source."""
        return [p for level in self.levels() for p in level]

    def levels(self) -> list[list[Pipeline]]:
        """Pipelines grouped by dependency depth: each reads only what earlier levels (or the
        outside) produce, so the pipelines of one level can run at the same time."""
        levels: list[list[Pipeline]] = []
        remaining = list(self.pipelines)
        while remaining:
            done_outputs = {t for level in levels for p in level for t in p.outputs}
            selected_outputs = {t for p in remaining for t in p.outputs}
            ready = [
                p for p in remaining if p.source in done_outputs or p.source not in selected_outputs
            ]
            if not ready:
                raise ConfigError("pipelines form a cycle")
            levels.append(ready)
            remaining = [p for p in remaining if p not in ready]
        return levels

    def state_root(self) -> Path:
        return self.settings.state_dir / f"v{self.version}"

    def output_topics(self) -> list[str]:
        return sorted({self.physical(t) for p in self.pipelines for t in p.outputs})

    def kept_topics(self) -> list[str]:
        """The sources and outputs: topics whose records must all be kept (`KEEP_FOREVER`)."""
        return sorted({self.physical(t) for t in self.external_sources} | {*self.output_topics()})

    def all_topics(self) -> dict[str, dict[str, str]]:
        """Every topic this version needs → its topic config (for those Kappa creates)."""
        topics = {t: dict(KEEP_FOREVER) for t in self.kept_topics()}
        for p in self.pipelines:
            topics[self.changelog(p)] = {"cleanup.policy": "compact"}
        return topics

    def compacted_topics(self) -> list[str]:
        """The changelogs: topics that must keep each key's latest record (`cleanup.policy`)."""
        return sorted(t for t, cfg in self.all_topics().items() if "compact" in cfg.values())

    def topic_spec(self) -> dict[str, tuple[int, dict[str, str]]]:
        """`all_topics` with each one's partition count, as `app.admin.ensure_topics` takes it
        (every topic of a version has the source's partition count)."""
        return {t: (self.settings.partitions, cfg) for t, cfg in self.all_topics().items()}
