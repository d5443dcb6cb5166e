"""Hot functions from py-spy's raw (collapsed-stack) output: `frame;frame;… count` per line.

A frame is `name (file:line)`; functions are keyed by name and file, lines merged. Generated
code (file `<string>`: dataclass `__init__`s, namedtuple constructors) is named after its
caller. Self samples count the leaf frame of each stack; total samples count each of the
project's own functions once per stack (the framework frames around them are left out).
py-spy records only non-idle samples by default, so shares are of CPU time, not wall time.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<name>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")
PROJECT_DIRS = ("app/", "agents/", "tables/", "replay/")


def _split(frame: str) -> tuple[str, str]:
    m = _FRAME.match(frame.strip())
    if m is None:
        return frame.strip(), ""
    return m["name"], m["file"]


def _functions(stack: str) -> list[tuple[str, str]]:
    """(label, file) per frame; generated frames are labelled with their caller."""
    out: list[tuple[str, str]] = []
    for frame in stack.split(";"):
        if frame.startswith("process "):
            continue
        name, file = _split(frame)
        if file == "<string>" and out:
            label = f"{name} (generated, called from {out[-1][0]})"
        else:
            label = f"{name} ({file})" if file else name
        out.append((label, file))
    return out


def hot_functions(raw: Path, top: int = 10) -> dict[str, Any]:
    """The `top` functions by self samples and the project's by total, with their shares."""
    self_samples: Counter[str] = Counter()
    total_samples: Counter[str] = Counter()
    samples = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        samples += n
        frames = _functions(stack)
        if not frames:
            continue
        self_samples[frames[-1][0]] += n
        for label in {label for label, file in frames if file.startswith(PROJECT_DIRS)}:
            total_samples[label] += n

    def table(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"function": fn, "samples": n, "share": n / samples if samples else 0.0}
            for fn, n in counter.most_common(top)
        ]

    return {"samples": samples, "self": table(self_samples), "total": table(total_samples)}
