"""Contract: a history of one replication test run and the checks made on it.

Producers record every acknowledged write (`acked`: partition, offset, key, value) and every
write they know failed (`failed`); readers record every record they were served (`read`, with
the reader's name). Values are unique per run (`Value.make`: producer, partition, sequence), so
a value identifies one produce call. `check(final)` verifies, and returns every violation found
(an empty list means the history is consistent):
  - no offset ever read with two different records (across readers and across the run), and no
    acknowledged offset read with another record than the one acknowledged there;
  - every acknowledged write is in `final` (a complete read of every partition after the run)
    at its acknowledged offset with its key and value: nothing acknowledged lost;
  - no value twice in `final` (the idempotent producer writes each record exactly once);
  - per partition and producer, sequences increase with offsets in `final` (order kept), and
    every reader saw offsets of a partition strictly increasing within one of its sessions;
  - values recorded as `never_committed` (written to a leader cut off from the quorum and not
    acknowledged) are absent from `final`: the old leader truncated them.
Thread-safe: producer callbacks and reader threads record concurrently.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Value:
    producer: str
    partition: int
    seq: int

    def encode(self) -> bytes:
        return f"{self.producer}|{self.partition}|{self.seq}".encode()

    @staticmethod
    def make(producer: str, partition: int, seq: int) -> bytes:
        return Value(producer, partition, seq).encode()

    @staticmethod
    def parse(raw: Optional[bytes]) -> Optional["Value"]:
        try:
            producer, partition, seq = (raw or b"").decode().split("|")
            return Value(producer, int(partition), int(seq))
        except (ValueError, UnicodeDecodeError):
            return None


class History:
    def __init__(self):
        self._lock = threading.Lock()
        self.acks: dict = {}  # (partition, offset) -> (key, value)
        self.ack_list: list = []  # (partition, offset, key, value) in ack order
        self.failed: list = []  # (partition, value, error)
        self.unplaced: list = []  # (partition, key, value) acknowledged without an offset
        self.reads: dict = {}  # (partition, offset) -> (key, value, reader)
        self.conflicts: list = []
        self.reader_last: dict = {}  # (reader, partition) -> last offset
        self.order_errors: list = []
        self.never_committed: set = set()
        self.read_count = 0

    # --- recording -----------------------------------------------------------

    def acked(self, partition: int, offset: Optional[int], key: Optional[bytes], value: bytes) -> None:
        with self._lock:
            if offset is None or offset < 0:
                # acknowledged without an offset (librdkafka gives none for a batch the broker
                # reported as a duplicate of one already written): checked by value
                self.unplaced.append((partition, key, value))
                self.ack_list.append((partition, None, key, value))
                return
            prev = self.acks.get((partition, offset))
            if prev is not None and prev != (key, value):
                self.conflicts.append(f"offset {partition}/{offset} acknowledged twice: {prev!r} and {(key, value)!r}")
            self.acks[(partition, offset)] = (key, value)
            self.ack_list.append((partition, offset, key, value))

    def failed_write(self, partition: int, value: bytes, error: str) -> None:
        with self._lock:
            self.failed.append((partition, value, error))

    def new_session(self, reader: str) -> None:
        """The reader starts over (e.g. a new consumer): its offsets may go back."""
        with self._lock:
            for k in [k for k in self.reader_last if k[0] == reader]:
                del self.reader_last[k]

    def read(self, reader: str, partition: int, offset: int, key: Optional[bytes], value: Optional[bytes]) -> None:
        with self._lock:
            self.read_count += 1
            last = self.reader_last.get((reader, partition))
            if last is not None and offset <= last and len(self.order_errors) < 20:
                self.order_errors.append(f"{reader} read {partition}/{offset} after {partition}/{last}")
            self.reader_last[(reader, partition)] = offset
            prev = self.reads.get((partition, offset))
            if prev is None:
                self.reads[(partition, offset)] = (key, value, reader)
            elif (prev[0], prev[1]) != (key, value) and len(self.conflicts) < 50:
                self.conflicts.append(f"offset {partition}/{offset} read as {prev[:2]!r} by {prev[2]} "
                                      f"and as {(key, value)!r} by {reader}")

    def mark_never_committed(self, value: bytes) -> None:
        with self._lock:
            self.never_committed.add(value)

    def acked_in(self, partition: int) -> int:
        with self._lock:
            return sum(1 for p, *_ in self.ack_list if p == partition)

    # --- checking ------------------------------------------------------------

    def check(self, final: dict) -> list:
        """`final`: {partition: [(offset, key, value), ...]} read completely after the run."""
        errors = list(self.conflicts) + list(self.order_errors)
        with self._lock:
            acks = dict(self.acks)
            reads = dict(self.reads)
        final_at = {}
        for p, recs in final.items():
            for off, key, value in recs:
                final_at[(p, off)] = (key, value)
        for (p, off), (key, value, _reader) in reads.items():
            got = final_at.get((p, off))
            if got is not None and got != (key, value):
                errors.append(f"offset {p}/{off} was read as {(key, value)!r}, now holds {got!r}")
        lost = 0
        for (p, off), kv in sorted(acks.items()):
            if final_at.get((p, off)) != kv:
                lost += 1
                if lost <= 20:
                    errors.append(f"acknowledged {p}/{off} {kv!r} is {'missing' if (p, off) not in final_at else 'replaced by ' + repr(final_at[(p, off)])}")
            r = reads.get((p, off))
            if r is not None and (r[0], r[1]) != kv:
                errors.append(f"acknowledged {p}/{off} {kv!r} was read as {r[:2]!r} by {r[2]}")
        with self._lock:
            unplaced = list(self.unplaced)
        final_kv = {p: {(k, v) for _off, k, v in recs} for p, recs in final.items()}
        for p, key, value in unplaced:
            if (key, value) not in final_kv.get(p, set()):
                lost += 1
                if lost <= 20:
                    errors.append(f"acknowledged (without offset) {p} {(key, value)!r} is missing")
        if lost > 20:
            errors.append(f"... {lost} acknowledged records lost in all")
        seen: dict = {}
        dups = 0
        last_seq: dict = {}
        for p in sorted(final):
            for off, _key, value in sorted(final[p]):
                if value in seen:
                    dups += 1
                    if dups <= 20:
                        errors.append(f"value {value!r} at {p}/{off} and at {seen[value]}")
                seen[value] = f"{p}/{off}"
                v = Value.parse(value)
                if v is None:
                    continue
                prev = last_seq.get((p, v.producer))
                if prev is not None and v.seq <= prev[0]:
                    errors.append(f"order: {v.producer} seq {v.seq} at {p}/{off} after seq {prev[0]} at {p}/{prev[1]}")
                last_seq[(p, v.producer)] = (v.seq, off)
                if value in self.never_committed:
                    errors.append(f"{value!r}, never acknowledged by a leader cut off from the quorum, is at {p}/{off}")
        return errors

    def summary(self) -> str:
        with self._lock:
            return (f"{len(self.ack_list)} acknowledged ({len(self.unplaced)} without an offset), "
                    f"{len(self.failed)} failed writes, {self.read_count} records read "
                    f"({len(self.reads)} distinct offsets)")
