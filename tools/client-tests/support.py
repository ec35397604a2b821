"""What every client test shares: the messages it sends, waiting on a condition with a
deadline, and the one check of a consumed log against what was produced.

The check is written once so that kcat, kafka-python and confluent-kafka are held to the same
standard: every message exactly once, with its key and value, in the order it was sent within
its partition, at the offset the producer was told, with one partition per key.
"""

import itertools
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass

# How long a client operation (a flush, a consume to the end, an admin call) may take before
# the test fails: generous for a debug build on a busy 2-core machine, short enough that a hang
# is reported well within the per-test timeout.
CLIENT_DEADLINE_S = 30.0
# How many discrepancies of each kind a failure message lists.
SHOWN_MAX = 10


@dataclass(frozen=True)
class Sent:
    """One message as the test produced it."""

    key: bytes
    value: bytes
    timestamp_ms: int | None = None


@dataclass(frozen=True)
class Consumed:
    """One message as a consumer received it."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None


def topic_name(label):
    """A topic name no other test uses."""
    return f"{label}-{uuid.uuid4().hex[:8]}"


def messages(count, key_count, label="m", timestamp_ms_first=None, timestamp_ms_step=10):
    """`count` messages over `key_count` keys with unique values of varied lengths (so that
    compression has something to do and a value identifies its message)."""
    assert key_count >= 1
    sent = []
    for index in range(count):
        timestamp_ms = None
        if timestamp_ms_first is not None:
            timestamp_ms = timestamp_ms_first + index * timestamp_ms_step
        sent.append(
            Sent(
                key=f"key-{index % key_count}".encode(),
                value=f"{label}-{index:06d}-".encode() + b"x" * (index % 97),
                timestamp_ms=timestamp_ms,
            )
        )
    return sent


def wait_until(condition, what, deadline_s=CLIENT_DEADLINE_S, interval_s=0.05):
    """Polls `condition` until it returns a true value (returned) or the deadline passes
    (AssertionError naming `what` and the last value seen)."""
    deadline = time.monotonic() + deadline_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {deadline_s:.0f} s waiting for {what} (last: {value!r})")
        time.sleep(interval_s)


def check_log(consumed, sent, acked=None, first_offsets=None, exact=True):
    """Checks consumed messages against the sent ones; raises AssertionError listing every
    kind of discrepancy found.

    - `acked`: value -> (partition, offset) from the producer's acknowledgements, when it
      learnt offsets (acks=0 does not); each message must be found exactly there.
    - `first_offsets`: partition -> the offset consumption started at (0 when absent); a
      partition's offsets must run on from it without gaps.
    - `exact`: every sent message must have been consumed. When False, only those in `acked`
      must be (the others may or may not have reached the log), but none may appear twice.
    """
    first_offsets = first_offsets or {}
    problems = []
    sent_by_value = {message.value: message for message in sent}
    assert len(sent_by_value) == len(sent), "the test sent duplicate values"
    counts = Counter(message.value for message in consumed)

    duplicated = [value for value, count in counts.items() if count > 1]
    if duplicated:
        problems.append(_listed(f"{len(duplicated)} message(s) consumed more than once", duplicated))
    unexpected = [value for value in counts if value not in sent_by_value]
    if unexpected:
        problems.append(_listed(f"{len(unexpected)} consumed message(s) were never sent", unexpected))
    required = sent_by_value.keys() if exact else (acked or {}).keys()
    missing = [value for value in required if value not in counts]
    if missing:
        problems.append(
            _listed(f"{len(missing)} of {len(required)} message(s) that must be there are missing", missing)
        )

    wrong_key = [
        (message.value, message.key, sent_by_value[message.value].key)
        for message in consumed
        if message.value in sent_by_value and message.key != sent_by_value[message.value].key
    ]
    if wrong_key:
        problems.append(
            _listed(f"{len(wrong_key)} message(s) with the wrong key (value, got, sent)", wrong_key)
        )

    wrong_timestamp = [
        (message.value, message.timestamp_ms, sent_by_value[message.value].timestamp_ms)
        for message in consumed
        if message.value in sent_by_value
        and sent_by_value[message.value].timestamp_ms is not None
        and message.timestamp_ms != sent_by_value[message.value].timestamp_ms
    ]
    if wrong_timestamp:
        problems.append(
            _listed(
                f"{len(wrong_timestamp)} message(s) with the wrong timestamp (value, got, sent)",
                wrong_timestamp,
            )
        )

    if acked:
        misplaced = [
            (message.value, (message.partition, message.offset), acked[message.value])
            for message in consumed
            if message.value in acked and (message.partition, message.offset) != acked[message.value]
        ]
        if misplaced:
            problems.append(
                _listed(
                    f"{len(misplaced)} message(s) not at the (partition, offset) they were "
                    "acknowledged at (value, found, acknowledged)",
                    misplaced,
                )
            )

    partitions_of_key = defaultdict(set)
    by_partition = defaultdict(list)
    for message in consumed:
        partitions_of_key[message.key].add(message.partition)
        by_partition[message.partition].append(message)
    split_keys = {
        key: sorted(partitions) for key, partitions in partitions_of_key.items() if len(partitions) > 1
    }
    if split_keys:
        problems.append(
            _listed(f"{len(split_keys)} key(s) found in more than one partition", split_keys.items())
        )

    sent_index = {message.value: index for index, message in enumerate(sent)}
    for partition, messages_in_partition in sorted(by_partition.items()):
        offsets = [message.offset for message in messages_in_partition]
        first = first_offsets.get(partition, 0)
        if offsets != list(range(first, first + len(offsets))):
            problems.append(
                f"partition {partition}: offsets do not run on from {first} without gaps: {_runs(offsets)}"
            )
        order = [sent_index[m.value] for m in messages_in_partition if m.value in sent_index]
        out_of_order = [(a, b) for a, b in itertools.pairwise(order) if b <= a]
        if out_of_order:
            problems.append(
                _listed(
                    f"partition {partition}: {len(out_of_order)} message(s) out of send order "
                    "(index sent, index of the next one consumed)",
                    out_of_order,
                )
            )

    if problems:
        summary = f"consumed {len(consumed)} message(s) of {len(sent)} sent"
        if acked is not None:
            summary += f", {len(acked)} acknowledged"
        raise AssertionError(summary + ":\n- " + "\n- ".join(problems))


def partitions_of_keys(consumed):
    """key -> the partition its messages were found in (check_log has checked it is one)."""
    return {message.key: message.partition for message in consumed}


def _listed(what, items):
    items = list(items)
    shown = ", ".join(repr(item) for item in items[:SHOWN_MAX])
    more = f", … ({len(items) - SHOWN_MAX} more)" if len(items) > SHOWN_MAX else ""
    return f"{what}: {shown}{more}"


def _runs(offsets):
    """Offsets as ranges, e.g. '0-99, 120-130', so a gap or a repeat is visible at a glance."""
    if not offsets:
        return "(none)"
    runs = []
    start = previous = offsets[0]
    for offset in offsets[1:]:
        if offset != previous + 1:
            runs.append((start, previous))
            start = offset
        previous = offset
    runs.append((start, previous))
    return ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in runs[:SHOWN_MAX]) + (
        ", …" if len(runs) > SHOWN_MAX else ""
    )
