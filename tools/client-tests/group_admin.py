"""confluent-kafka admin calls that a group's coordinator answers (DescribeConsumerGroups,
ListConsumerGroupOffsets), each made in a process of its own: `described_group` and
`committed_offsets` run this file as a program and read its one JSON line.

Why a process: librdkafka (2.16 here; confluentinc/librdkafka#4605, open) aborts the process
that made such a call when the call times out while the client is still looking for the
coordinator, and the coordinator is then found before the client is destroyed.
rd_kafka_coord_req_fsm (rdkafka_coord.c) still holds the call's coordinator request: it calls
rd_kafka_admin_coord_request (rdkafka_admin.c), which drops the last reference to the call's
enqueue-once object (freed) and returns ERR__DESTROY, so rd_kafka_coord_req_fail queues an error
reply whose rd_kafka_admin_coord_response_parse drops a reference to it again:
`rd_kafka_enq_once_del_source_return: assert: eonce->refcnt > 0`. A test that kills a group's
coordinator does exactly that (asking for the coordinator until another broker answers for
it); made in the pytest process, the call ended the whole suite. In a process of its own an
abort fails only that call; a call that died of exactly this assertion is made once more, with
a LibrdkafkaAbortRetried warning (listed in pytest's warnings summary): once, so that a client
that aborts every time still fails the test.

Usage as a program: group_admin.py CALL_JSON; it prints {"answer": ...} or {"error": text} (the
client's error, e.g. the coordinator not available yet) and exits 0.
"""

import json
import signal
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import confluent_kafka
import confluent_kafka.admin

from support import CLIENT_DEADLINE_S

# The child's own wait for the answer is CLIENT_DEADLINE_S; this is on top, for the
# interpreter's start and the client's destruction.
PROCESS_MARGIN_S = 15.0
KNOWN_ABORT = "rd_kafka_enq_once_del_source_return"
STDERR_TAIL_LINES = 20


class AdminCallFailed(Exception):
    """The client answered the call with an error (a Kafka error, e.g. the coordinator not
    available yet, or a timeout): the call may be made again."""


class LibrdkafkaAbortRetried(UserWarning):
    """A call's process died of librdkafka's known assertion and the call was made once more."""


@dataclass(frozen=True)
class GroupDescription:
    coordinator_id: int
    type: confluent_kafka.ConsumerGroupType
    state: confluent_kafka.ConsumerGroupState
    partition_assignor: str
    member_ids: tuple


def described_group(bootstrap, group, request_timeout_s):
    """`group` as DescribeConsumerGroups (or DescribeGroups, for a classic group) describes it."""
    answer = _call(
        {"call": "describe", "bootstrap": bootstrap, "group": group, "request_timeout_s": request_timeout_s}
    )
    return GroupDescription(
        coordinator_id=answer["coordinator_id"],
        type=confluent_kafka.ConsumerGroupType[answer["type"]],
        state=confluent_kafka.ConsumerGroupState[answer["state"]],
        partition_assignor=answer["partition_assignor"],
        member_ids=tuple(answer["member_ids"]),
    )


def committed_offsets(bootstrap, group, topic, partition_count, request_timeout_s):
    """partition -> the offset `group` committed on `topic` (OffsetFetch); AdminCallFailed if
    the call or any partition failed."""
    answer = _call(
        {
            "call": "committed_offsets",
            "bootstrap": bootstrap,
            "group": group,
            "topic": topic,
            "partition_count": partition_count,
            "request_timeout_s": request_timeout_s,
        }
    )
    return {int(partition): offset for partition, offset in answer.items()}


def _call(call):
    what = f"{call['call']} of group {call['group']}"
    for attempt in (1, 2):
        try:
            completed = subprocess.run(
                [sys.executable, str(Path(__file__)), json.dumps(call)],
                capture_output=True,
                text=True,
                timeout=CLIENT_DEADLINE_S + PROCESS_MARGIN_S,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as expired:
            raise AssertionError(
                f"the {what} did not end within {expired.timeout:.0f} s:\n{_tail(expired.stderr)}"
            ) from None
        if completed.returncode == 0:
            result = json.loads(completed.stdout)
            if "error" in result:
                raise AdminCallFailed(result["error"])
            return result["answer"]
        known_abort = completed.returncode == -signal.SIGABRT and KNOWN_ABORT in completed.stderr
        if known_abort and attempt == 1:
            warnings.warn(
                f"librdkafka aborted the {what} with its known assertion in {KNOWN_ABORT} "
                "(confluentinc/librdkafka#4605): made once more",
                LibrdkafkaAbortRetried,
                stacklevel=3,
            )
            continue
        raise AssertionError(f"the {what} exited with {completed.returncode}:\n{_tail(completed.stderr)}")


def _tail(stderr):
    if isinstance(stderr, bytes):
        stderr = stderr.decode(errors="replace")
    return "\n".join((stderr or "(no stderr)").splitlines()[-STDERR_TAIL_LINES:])


def _describe(admin, call):
    group = call["group"]
    future = admin.describe_consumer_groups([group], request_timeout=call["request_timeout_s"])[group]
    description = future.result(timeout=CLIENT_DEADLINE_S)
    return {
        "coordinator_id": description.coordinator.id,
        "type": description.type.name,
        "state": description.state.name,
        "partition_assignor": description.partition_assignor,
        "member_ids": [member.member_id for member in description.members],
    }


def _committed_offsets(admin, call):
    group = call["group"]
    request = confluent_kafka.ConsumerGroupTopicPartitions(
        group,
        [confluent_kafka.TopicPartition(call["topic"], partition) for partition in range(call["partition_count"])],
    )
    future = admin.list_consumer_group_offsets([request], request_timeout=call["request_timeout_s"])[group]
    answer = future.result(timeout=CLIENT_DEADLINE_S)
    failed = [f"partition {each.partition}: {each.error}" for each in answer.topic_partitions if each.error is not None]
    if failed:
        raise confluent_kafka.KafkaException("; ".join(failed))
    return {each.partition: each.offset for each in answer.topic_partitions}


CALLS = {"describe": _describe, "committed_offsets": _committed_offsets}


def main():
    call = json.loads(sys.argv[1])
    admin = confluent_kafka.admin.AdminClient({"bootstrap.servers": call["bootstrap"]})
    try:
        result = {"answer": CALLS[call["call"]](admin, call)}
    except confluent_kafka.KafkaException as error:
        result = {"error": str(error)}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
