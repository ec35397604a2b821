"""kcat (librdkafka) against Ferrite, as someone tries a new broker from the shell: list the
cluster, pipe keyed lines in, read them back."""

import re
import subprocess

from clients import Confluent, created_topic
from support import CLIENT_DEADLINE_S, Consumed, check_log, messages, partitions_of_keys, topic_name

# kcat -C output format: partition, offset, key and value, one message a line.
CONSUME_FORMAT = r"%p\t%o\t%k\t%s\n"


def kcat(broker, *arguments, stdin=None):
    """Runs kcat against the broker; returns its stdout, failing with its stderr if it failed."""
    return kcat_with_log(broker, *arguments, stdin=stdin)[0]


def kcat_with_log(broker, *arguments, stdin=None):
    """kcat() that returns stdout and stderr (where `-d` sends librdkafka's debug log)."""
    command = ["kcat", "-b", broker.bootstrap, *arguments]
    try:
        completed = subprocess.run(
            command, check=False, input=stdin, capture_output=True, timeout=CLIENT_DEADLINE_S * 2
        )
    except subprocess.TimeoutExpired as timeout:
        raise AssertionError(
            f"{' '.join(command)} did not finish within {timeout.timeout:.0f} s; its stderr:\n"
            f"{(timeout.stderr or b'').decode(errors='replace')[-4000:]}"
        ) from None
    stderr = completed.stderr.decode(errors="replace")
    assert completed.returncode == 0 and "ERROR" not in stderr, (
        f"{' '.join(command)} exited with {completed.returncode}; its stderr:\n{stderr[-4000:]}"
    )
    return completed.stdout.decode(), stderr


def listed_topics(broker):
    """kcat -L's human-readable listing as {topic: partition count}, after checking that it
    names exactly one broker, at the address the client bootstrapped from, which leads every
    partition of every topic."""
    listing = kcat(broker, "-L")
    brokers = re.findall(r"^\s+broker (\d+) at (\S+)", listing, re.MULTILINE)
    assert len(brokers) == 1, f"kcat -L should list one broker:\n{listing}"
    broker_id, address = brokers[0]
    assert address == broker.bootstrap, (
        f"the broker advertises {address}, clients bootstrapped from {broker.bootstrap}"
    )
    declared = {}  # topic -> the partition count in its heading
    leaders = {}  # topic -> {partition: leader id}
    topic = None
    for line in listing.splitlines():
        topic_line = re.match(r'^\s+topic "([^"]+)" with (\d+) partitions:', line)
        if topic_line:
            topic = topic_line[1]
            declared[topic] = int(topic_line[2])
            leaders[topic] = {}
            continue
        partition_line = re.match(r"^\s+partition (\d+), leader (-?\d+),", line)
        if partition_line and topic is not None:
            assert "Err" not in line, f"kcat -L reports an error for a partition of {topic}: {line}"
            leaders[topic][int(partition_line[1])] = partition_line[2]
    for topic, count in declared.items():
        assert sorted(leaders[topic]) == list(range(count)), (
            f"{topic}: partitions {sorted(leaders[topic])} listed of {count}\n{listing}"
        )
        assert set(leaders[topic].values()) == {broker_id}, (
            f"{topic}: leaders {set(leaders[topic].values())}, but the broker is {broker_id}\n{listing}"
        )
    return declared


def produce_lines(broker, topic, sent, *options):
    """Produces `sent` as key:value lines; returns kcat's stderr."""
    lines = b"".join(message.key + b":" + message.value + b"\n" for message in sent)
    return kcat_with_log(broker, "-P", "-K:", "-t", topic, *options, stdin=lines)[1]


def consume_all(broker, topic):
    output = kcat(broker, "-C", "-e", "-o", "beginning", "-t", topic, "-f", CONSUME_FORMAT)
    consumed = []
    for line in output.splitlines():
        partition, offset, key, value = line.split("\t")
        consumed.append(Consumed(int(partition), int(offset), key.encode(), value.encode()))
    return consumed


def test_kcat_lists_the_broker_topics_and_partitions(broker):
    three = created_topic(Confluent(broker.bootstrap), "three", 3)
    one = created_topic(Confluent(broker.bootstrap), "one", 1)
    topics = listed_topics(broker)
    assert {topic: count for topic, count in topics.items() if topic in (three, one)} == {
        three: 3,
        one: 1,
    }, f"kcat -L lists {topics}"


def test_kcat_round_trips_10000_keyed_messages(broker):
    partitions = 4
    topic = created_topic(Confluent(broker.bootstrap), "kcat", partitions)
    sent = messages(10_000, key_count=100)
    produce_lines(broker, topic, sent)
    consumed = consume_all(broker, topic)
    check_log(consumed, sent)
    used = set(partitions_of_keys(consumed).values())
    assert len(used) > 1, f"100 keys all landed in partitions {used} of {partitions}"


def test_kcat_produce_to_a_new_topic_creates_it(broker):
    topic = topic_name("auto")
    sent = messages(100, key_count=10)
    produce_lines(broker, topic, sent)
    assert topic in listed_topics(broker), "the topic kcat produced to is not listed"
    check_log(consume_all(broker, topic), sent)


def test_kcat_compresses_with_every_codec_it_is_asked_for(broker):
    """librdkafka before 2.8 (Debian 12's kcat is 2.0.2) uses gzip, snappy or lz4 only if the
    broker advertises Produce v0, and otherwise sends every batch uncompressed without a word;
    Ferrite advertises it as Kafka 4 does (KAFKA-18659) while answering v0-2 UNSUPPORTED_VERSION."""
    topic = created_topic(Confluent(broker.bootstrap), "kcat-codecs", 1)
    sent = []
    for codec in ("gzip", "snappy", "lz4", "zstd"):
        batch = messages(50, key_count=5, label=codec)
        log = produce_lines(broker, topic, batch, "-z", codec, "-d", "msg")
        assert "does not support compression" not in log, log[-4000:]
        assert re.search(rf"Produce MessageSet with \d+ message\(s\) \([^)]*, {codec}\)", log), (
            f"no {codec} batch in kcat's log:\n{log[-4000:]}"
        )
        sent += batch
    check_log(consume_all(broker, topic), sent)
