"""The log check must catch what it claims to, or every client test could pass vacuously: each
kind of damage a broker could do to a log is fed to it and must be reported."""

import dataclasses

import pytest

from support import Consumed, check_log, messages

SENT = messages(12, key_count=3)
# A correct log: key-0 and key-2 on partition 0, key-1 on partition 1, in send order.
PARTITION_OF_KEY = {b"key-0": 0, b"key-1": 1, b"key-2": 0}


def correct_log():
    next_offset = {0: 0, 1: 0}
    log = []
    for message in SENT:
        partition = PARTITION_OF_KEY[message.key]
        log.append(Consumed(partition, next_offset[partition], message.key, message.value))
        next_offset[partition] += 1
    return log


def acknowledged(log):
    return {message.value: (message.partition, message.offset) for message in log}


def test_a_correct_log_passes():
    log = correct_log()
    check_log(log, SENT, acked=acknowledged(log))


def renumbered(log):
    """The same messages with offsets reassigned contiguously, so only the damage under test
    remains."""
    next_offset = {}
    result = []
    for message in log:
        offset = next_offset.get(message.partition, 0)
        result.append(dataclasses.replace(message, offset=offset))
        next_offset[message.partition] = offset + 1
    return result


def damaged(kind):
    log = correct_log()
    if kind == "missing":
        return log[:-1], "missing"
    if kind == "duplicated":
        return renumbered([*log, log[-1]]), "more than once"
    if kind == "gap":
        return [dataclasses.replace(m, offset=m.offset + (m.offset >= 2)) for m in log], "without gaps"
    if kind == "reordered":
        first, second = [i for i, m in enumerate(log) if m.partition == 1][:2]
        log[first], log[second] = log[second], log[first]
        return renumbered(log), "out of send order"
    if kind == "wrong key":
        return [dataclasses.replace(log[0], key=b"other"), *log[1:]], "wrong key"
    if kind == "split key":
        moved = dataclasses.replace(log[0], partition=1)
        return renumbered([moved, *log[1:]]), "more than one partition"
    if kind == "never sent":
        return [*log, Consumed(1, 4, b"key-1", b"stranger")], "never sent"
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind", ["missing", "duplicated", "gap", "reordered", "wrong key", "split key", "never sent"]
)
def test_damage_is_reported(kind):
    log, reported_as = damaged(kind)
    with pytest.raises(AssertionError, match=reported_as):
        check_log(log, SENT)


def test_a_message_away_from_its_acknowledged_offset_is_reported():
    log = correct_log()
    acked = acknowledged(log)
    acked[SENT[0].value] = (0, 99)
    with pytest.raises(AssertionError, match="acknowledged at"):
        check_log(log, SENT, acked=acked)


def test_unacknowledged_messages_may_be_absent_but_not_duplicated():
    log = correct_log()
    acked = acknowledged(log[:-2])
    check_log(log[:-2], SENT, acked=acked, exact=False)
    with pytest.raises(AssertionError, match="more than once"):
        check_log(renumbered([*log[:-2], log[0]]), SENT, acked=acked, exact=False)
