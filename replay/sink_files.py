"""How `kappa sink` lays a version's results out in files, and how it resumes (no broker).

Each output partition has a directory, `OUTPUT/partition=P/`. Its finished files are named by
the first and last offsets they cover, `FIRST-LAST.jsonl` (20 digits each, so names sort as
offsets), and they tile the partition's log: each file starts at the offset after the one
before it, and ends at the record of its last line. Records that give no line (a window still
open) count in the range of the file after them. A file is written under a hidden temporary
name and renamed when finished, so the finished files are the sink's only record of its
progress: a sink stopped at any point (a `kill -9` included) drops its temporary files and
reads on after its last finished file, once the records of that file's range still give its
lines (`NewestFileCheck`: the topic is the one the files came from). No result is lost or
written twice; only where files end depends on when records came.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

from app.atomic_file import AtomicFile, made_directories, synced_directory

MANIFEST = "sink.json"  # the version, topics and keys a sink directory's files hold
_FINISHED = re.compile(r"^(\d{20})-(\d{20})\.jsonl$")
_DIGITS = 20  # an int64 offset's decimal digits, at most 19: zero-padded, names sort as offsets


def partition_directory(root: Path, output: str, partition: int) -> Path:
    return root / output / f"partition={partition}"


def partitions_with_files(root: Path, output: str) -> list[int]:
    """The partitions of `output` that have a finished file under a sink's directory."""
    found = []
    for d in (root / output).glob("partition=*"):
        number = d.name.removeprefix("partition=")
        if number.isdigit() and last_finished(d) is not None:
            found.append(int(number))
    return sorted(found)


def file_name(first: int, last: int) -> str:
    """A finished file's name: the first and last offsets it covers, inclusive."""
    return f"{first:0{_DIGITS}d}-{last:0{_DIGITS}d}.jsonl"


def finished_range(name: str) -> tuple[int, int] | None:
    """(first, last) offsets of a finished file's name; None for any other name."""
    m = _FINISHED.match(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def resume_offset(directory: Path) -> int:
    """The offset after the last finished file's (0 for none): where reading goes on."""
    last = last_finished(directory)
    return last[1] + 1 if last else 0


def last_finished(directory: Path) -> tuple[Path, int] | None:
    """The last finished file and its LAST offset (the record of its last line); None for
    none."""
    ends = {r[1]: n for n in _names(directory) if (r := finished_range(n)) is not None}
    if not ends:
        return None
    last = max(ends)
    return directory / ends[last], last


class NewestFileCheck:
    """That a partition read again over its newest finished file's range gives that file's
    lines, before the sink writes anything after them: a topic made anew (a restarted dev
    broker) or with records deleted is told from the one the files came from.

    The whole file is compared when the log still starts at or before its FIRST; when
    retention has taken its first records, only its last line (at LAST, where lines can no
    longer be lined up with offsets). A log that starts after LAST cannot be checked (the
    caller refuses it: records after the files may be gone too)."""

    def __init__(self, path: Path, first: int, last: int, log_start: int) -> None:
        if log_start > last:
            raise ValueError(f"the log starts at {log_start}, after the file's last offset {last}")
        self.path, self.last = path, last
        self.start = first if log_start <= first else last  # where to read from
        self.whole = self.start == first
        self.done = False
        self._lines: Iterator[bytes] = (
            _lines_of(path) if self.whole else iter([last_line(path) + b"\n"])
        )

    def close(self) -> None:
        """Close the file (a check given up before its end)."""
        if isinstance(self._lines, Generator):
            self._lines.close()

    def take(self, offset: int, line: bytes | None) -> str | None:
        """The record at `offset` read (`line` its result, None if it gives none); what does
        not match, or None. `done` once the record at LAST was read and matched."""
        if self.done or offset < self.start:
            return None
        if offset > self.last:
            return f"holds no record at offset {self.last}, where its files' last line is"
        if line is not None and line != next(self._lines, None):
            return f"holds at offset {offset} another result than its files"
        if offset == self.last:
            if line is None:
                return f"gives no result at offset {offset}, where its files' last line is"
            if next(self._lines, None) is not None:
                return f"holds fewer results up to offset {offset} than its files"
            self.done = True
        return None


def _lines_of(path: Path) -> Generator[bytes, None, None]:
    with path.open("rb") as f:
        yield from f


def last_line(path: Path, chunk: int = 64 * 1024) -> bytes:
    """A file's last line, without its newline, read from the end (files can be large)."""
    with path.open("rb") as f:
        end = f.seek(0, 2)
        tail = b""
        while True:
            start = max(0, end - chunk)
            f.seek(start)
            tail = f.read(end - start) + tail
            body = tail[:-1] if tail.endswith(b"\n") else tail
            cut = body.rfind(b"\n")
            if cut >= 0 or start == 0:
                return body[cut + 1 :]
            end = start


def remove_unfinished(directory: Path) -> int:
    """Remove the temporary files a stopped sink left (they are written again); returns how
    many. Only one sink writes a directory (its lock), so none of them is being written."""
    removed = 0
    for name in _names(directory):
        if name.startswith(".") and name.endswith(".tmp"):
            (directory / name).unlink(missing_ok=True)
            removed += 1
    return removed


def remove_every_unfinished(root: Path) -> int:
    """`remove_unfinished` in every output's partitions under a sink's directory, followed now
    or not: a sink started again with fewer `--output`s leaves none of its files behind."""
    return sum(remove_unfinished(d) for d in sorted(root.glob("*/partition=*")))


def _names(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir()] if directory.is_dir() else []


@dataclass(frozen=True)
class RollPolicy:
    """When an open file is finished: at its `max_results`th line, or `max_age_s` seconds (of
    the sink's clock) after its first line, whichever comes first. Files that end on the
    count end at the same results however the records were fetched."""

    max_results: int = 100_000
    max_age_s: float = 60.0


@dataclass(frozen=True)
class Finished:
    path: Path
    first: int
    last: int
    results: int


class UnsyncedFile(Exception):
    """A file renamed into place whose directory could not be synced after: readers see it,
    but a power cut may take the rename back (its records are then read again)."""

    def __init__(self, done: Finished, error: OSError) -> None:
        super().__init__(done, error)
        self.done, self.error = done, error


class PartitionFile:
    """One output partition's open file: lines are appended as records are read, and
    `finish` renames it to the offsets it covers and opens the next (lazily, at its first
    line: a partition with nothing new has no temporary file)."""

    def __init__(self, directory: Path, first: int) -> None:
        self.directory = directory
        self.first = first  # the offset after the last finished file's
        self.last_read = first - 1  # the last offset read (offsets only grow in one topic)
        self.last_line = first - 1  # the offset of the open file's last line
        self.results = 0
        self.opened_at: float | None = None  # the sink's clock at the first line
        self._file: AtomicFile | None = None

    def add(self, offset: int, line: bytes | None, now: float) -> None:
        """The record at `offset` read; `line` is its result, None if it gives none.
        OSError if the file cannot be made or written."""
        if line is not None:
            if self._file is None:
                if not self.directory.is_dir():
                    made_directories(self.directory)  # survives a crash, its output's too
                self._file = AtomicFile(self.directory, f"{self.first:0{_DIGITS}d}.jsonl")
                self.opened_at = now
            self._file.file.write(line)
            self.results += 1
            self.last_line = offset
        self.last_read = offset

    def due(self, now: float, policy: RollPolicy) -> bool:
        if self.results == 0 or self.opened_at is None:
            return False
        return self.results >= policy.max_results or now - self.opened_at >= policy.max_age_s

    def finish(self) -> Finished | None:
        """Rename the open file to the offsets it covers, up to its last line (None if it has
        none yet). Records read after that line give none: they are the next file's, and are
        read again after a restart. OSError if it could not be renamed (it is dropped:
        `discard`); UnsyncedFile if it was, and only the directory's sync failed."""
        if self._file is None:
            return None
        path = self.directory / file_name(self.first, self.last_line)
        self._file.commit(path)
        done = Finished(path, self.first, self.last_line, self.results)
        self._file, self.opened_at = None, None
        self.first, self.results = self.last_line + 1, 0
        try:
            synced_directory(self.directory)
        except OSError as e:
            raise UnsyncedFile(done, e) from e
        return done

    def discard(self) -> None:
        """Drop the open file (its records are read again after a restart)."""
        if self._file is not None:
            self._file.discard()
            self._file, self.opened_at, self.results = None, None, 0
