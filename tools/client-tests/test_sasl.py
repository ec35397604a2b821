"""SASL as users meet it: clients authenticating with SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN on
a SASL_PLAINTEXT listener (confluent-kafka, kafka-python, kcat), a wrong password refused, an
unauthenticated request closing the connection, users set and deleted online with `ferrite
user` (or offline before the first start) and usable or refused at once, sessions that expire
and are renewed (KIP-368), the settings in the TOML file, a user set through one broker of
a cluster known to the others, and a cluster whose brokers have a PLAINTEXT and a SASL listener
each (every client told the addresses of the listener it came in on) with a user set in one
broker's data directory before the cluster first started.

Every broker here also has a PLAINTEXT listener, where the tests administer users (nothing
authorizes requests yet, as Kafka without an authorizer). kafka-python speaks SASL PLAIN over
SASL_PLAINTEXT: TLS listeners are the `tls` work's.
"""

import struct
import subprocess
import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from kafka import KafkaConsumer, KafkaProducer
from kafka.protocol.metadata import MetadataRequest
from kafka.protocol.sasl import SaslAuthenticateRequest, SaslHandshakeRequest

from cluster_support import Loopback, cluster, metadata_from, running_cluster  # noqa: F401 (cluster: a fixture)
from conftest import FERRITE_BIN, Broker
from raw_protocol import RawConnection
from support import CLIENT_DEADLINE_S, topic_name, wait_until

LISTENERS = ("PLAINTEXT", "SASL_PLAINTEXT")
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
MECHANISMS = (*SCRAM_MECHANISMS, "PLAIN")


def ferrite_user(*arguments, password=None, check=True):
    """Runs `ferrite user ARGUMENTS` (the password on standard input) and returns it."""
    done = subprocess.run(
        [FERRITE_BIN, "user", *arguments],
        input=None if password is None else password + "\n",
        capture_output=True,
        text=True,
        timeout=CLIENT_DEADLINE_S,
    )
    if check:
        assert done.returncode == 0, f"ferrite user {' '.join(arguments)}: {done.stderr}"
    return done


def set_user(bootstrap, user, password, mechanisms=SCRAM_MECHANISMS):
    for mechanism in mechanisms:
        ferrite_user(
            "set", user, "--bootstrap", bootstrap, "--password-stdin", "--mechanism", mechanism, password=password
        )


def sasl_config(broker, mechanism, user, password, **more):
    return {
        "bootstrap.servers": broker.addresses["SASL_PLAINTEXT"],
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": mechanism,
        "sasl.username": user,
        "sasl.password": password,
        **more,
    }


def authenticates(broker, mechanism, user, password):
    """Whether a new librdkafka client gets metadata as `user`: True, or the authentication
    error it reported."""
    errors = []
    producer = Producer(sasl_config(broker, mechanism, user, password, error_cb=errors.append))
    try:
        producer.list_topics(timeout=10)
        return True
    except KafkaException:
        # Errors reach error_cb only through poll.
        def refused():
            producer.poll(0.1)
            return [error for error in errors if error.code() == KafkaError._AUTHENTICATION]

        wait_until(lambda: refused(), f"an authentication error (reported: {errors})")
        return refused()[0]
    finally:
        producer.flush(0)


def produce(config, topic, values):
    """Produces `values` with librdkafka and returns the delivery errors (None each when
    delivered)."""
    reports = []
    producer = Producer({"message.timeout.ms": 10_000, **config})
    for value in values:
        producer.produce(topic, value=value.encode(), on_delivery=lambda error, _: reports.append(error))
    producer.flush(CLIENT_DEADLINE_S)
    assert len(reports) == len(values), "a delivery report is missing"
    return reports


def consume(config, topic, count):
    consumer = Consumer({**config, "group.id": "sasl-test", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    values = []
    deadline = time.monotonic() + CLIENT_DEADLINE_S
    while len(values) < count and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None:
            assert message.error() is None, message.error()
            values.append(message.value().decode())
    consumer.close()
    return values


@pytest.mark.listeners(*LISTENERS)
def test_confluent_kafka_produces_and_consumes_with_scram_and_plain(broker):
    set_user(broker.addresses["PLAINTEXT"], "alice", "alice-secret")
    topic = topic_name("sasl")
    sent = []
    for mechanism in MECHANISMS:
        values = [f"{mechanism}-{index}" for index in range(20)]
        config = sasl_config(broker, mechanism, "alice", "alice-secret")
        assert produce(config, topic, values) == [None] * len(values), mechanism
        sent += values
    for mechanism in MECHANISMS:
        assert consume(sasl_config(broker, mechanism, "alice", "alice-secret"), topic, len(sent)) == sent


@pytest.mark.listeners(*LISTENERS)
def test_a_wrong_password_is_refused_and_nothing_is_produced(broker):
    set_user(broker.addresses["PLAINTEXT"], "alice", "alice-secret")
    topic = topic_name("refused")
    for mechanism in MECHANISMS:
        refused = authenticates(broker, mechanism, "alice", "not-the-password")
        assert refused is not True, mechanism
        assert "Authentication failed" in refused.str(), refused.str()
        errors = []
        config = sasl_config(broker, mechanism, "alice", "wrong", error_cb=errors.append, **{"message.timeout.ms": 3000})
        reports = produce(config, topic, ["never"])
        assert reports[0] is not None, "a message was delivered without authentication"
        assert any(error.code() == KafkaError._AUTHENTICATION for error in errors), errors
    listed = subprocess.run(
        [FERRITE_BIN, "topic", "list", "--bootstrap", broker.addresses["PLAINTEXT"]],
        capture_output=True,
        text=True,
        timeout=CLIENT_DEADLINE_S,
    )
    assert listed.returncode == 0 and topic not in listed.stdout, listed.stdout
    wait_until(lambda: "SASL authentication failed" in broker.stderr_tail(), "the broker's log line")


@pytest.mark.listeners(*LISTENERS)
def test_kafka_python_with_sasl_plain(broker):
    set_user(broker.addresses["PLAINTEXT"], "kp", "kp-secret", mechanisms=("SCRAM-SHA-512",))
    topic = topic_name("kafka-python")
    settings = dict(
        bootstrap_servers=broker.addresses["SASL_PLAINTEXT"],
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_plain_username="kp",
        sasl_plain_password="kp-secret",
    )
    producer = KafkaProducer(**settings)
    for index in range(10):
        producer.send(topic, f"v{index}".encode()).get(timeout=CLIENT_DEADLINE_S)
    producer.close()
    consumer = KafkaConsumer(topic, auto_offset_reset="earliest", consumer_timeout_ms=5000, **settings)
    values = [message.value.decode() for message in consumer]
    consumer.close()
    assert values == [f"v{index}" for index in range(10)]


@pytest.mark.listeners(*LISTENERS)
def test_kcat_with_scram(broker):
    set_user(broker.addresses["PLAINTEXT"], "kc", "kc-secret", mechanisms=("SCRAM-SHA-512",))
    topic = topic_name("kcat")
    sasl = [
        *("-b", broker.addresses["SASL_PLAINTEXT"]),
        *("-X", "security.protocol=SASL_PLAINTEXT"),
        *("-X", "sasl.mechanisms=SCRAM-SHA-512"),
        *("-X", "sasl.username=kc"),
        *("-X", "sasl.password=kc-secret"),
    ]
    lines = [f"line {index}" for index in range(10)]
    produced = subprocess.run(
        ["kcat", *sasl, "-P", "-t", topic], input="\n".join(lines) + "\n", capture_output=True, text=True,
        timeout=CLIENT_DEADLINE_S,
    )
    assert produced.returncode == 0, produced.stderr
    consumed = subprocess.run(
        ["kcat", *sasl, "-C", "-t", topic, "-o", "beginning", "-e", "-q"], capture_output=True, text=True,
        timeout=CLIENT_DEADLINE_S,
    )
    assert consumed.returncode == 0, consumed.stderr
    assert consumed.stdout.splitlines() == lines


@pytest.mark.listeners(*LISTENERS)
def test_a_request_before_authentication_closes_the_connection(broker):
    # ApiVersions is served before authentication (clients ask it first) ...
    connection = RawConnection(broker.addresses["SASL_PLAINTEXT"])
    # ... anything else closes the connection, as Kafka does.
    with pytest.raises(AssertionError, match="closed the connection"):
        connection.request(MetadataRequest(topics=[]), version=1)
    connection.close()
    wait_until(lambda: "before SASL authentication" in broker.stderr_tail(), "the broker's log line")
    # A PLAINTEXT listener needs none.
    plaintext = RawConnection(broker.addresses["PLAINTEXT"])
    plaintext.request(MetadataRequest(topics=[]), version=1)
    plaintext.close()


@pytest.mark.listeners(*LISTENERS)
def test_handshake_v0_takes_raw_tokens_as_old_clients_send_them(broker):
    set_user(broker.addresses["PLAINTEXT"], "old", "old-secret", mechanisms=("SCRAM-SHA-256",))
    connection = RawConnection(broker.addresses["SASL_PLAINTEXT"])
    assert connection.request(SaslHandshakeRequest(mechanism="PLAIN"), version=0).error_code == 0
    # The PLAIN token as a frame of its own, no Kafka header; the answer likewise (empty).
    token = b"\0old\0old-secret"
    connection.socket.sendall(struct.pack(">i", len(token)) + token)
    assert connection._receive(4) == b"\0\0\0\0"
    connection.request(MetadataRequest(topics=[]), version=1)
    connection.close()


@pytest.mark.listeners(*LISTENERS)
def test_users_set_online_work_at_once_and_deleted_ones_are_refused(broker):
    admin = broker.addresses["PLAINTEXT"]
    assert authenticates(broker, "SCRAM-SHA-256", "bob", "bob-secret") is not True
    set_user(admin, "bob", "bob-secret")
    assert authenticates(broker, "SCRAM-SHA-256", "bob", "bob-secret") is True
    listed = ferrite_user("list", "--bootstrap", admin).stdout.splitlines()
    assert listed == [
        "user bob mechanism SCRAM-SHA-256 iterations 4096",
        "user bob mechanism SCRAM-SHA-512 iterations 4096",
    ]
    # A new password replaces the old one.
    set_user(admin, "bob", "new-secret", mechanisms=("SCRAM-SHA-256",))
    assert authenticates(broker, "SCRAM-SHA-256", "bob", "bob-secret") is not True
    assert authenticates(broker, "SCRAM-SHA-256", "bob", "new-secret") is True
    ferrite_user("delete", "bob", "--bootstrap", admin)
    for mechanism in MECHANISMS:
        assert authenticates(broker, mechanism, "bob", "new-secret") is not True, mechanism
    assert ferrite_user("list", "--bootstrap", admin).stdout == ""
    # Kafka's refusals: an unknown user to delete, too few iterations.
    missing = ferrite_user("delete", "bob", "--bootstrap", admin, "--mechanism", "SCRAM-SHA-256", check=False)
    assert missing.returncode == 1 and "RESOURCE_NOT_FOUND" in missing.stderr, missing.stderr
    few = ferrite_user(
        "set", "bob", "--bootstrap", admin, "--password-stdin", "--iterations", "100", password="x", check=False
    )
    assert few.returncode == 2, few.stderr


def test_a_user_set_offline_authenticates_at_the_first_start(request, tmp_path):
    data_dir = tmp_path / "data"
    ferrite_user(
        "set", "carol", "--data-dir", str(data_dir), "--password-stdin", "--mechanism", "SCRAM-SHA-512",
        password="carol-secret",
    )
    broker = Broker(FERRITE_BIN, data_dir, tmp_path, listeners=LISTENERS)
    request.node.ferrite_broker = broker
    broker.start()
    try:
        assert authenticates(broker, "SCRAM-SHA-512", "carol", "carol-secret") is True
        assert authenticates(broker, "PLAIN", "carol", "carol-secret") is True
        assert authenticates(broker, "PLAIN", "carol", "wrong") is not True
        # And it is still there after a restart.
        assert broker.stop() == 0
        broker.start()
        assert authenticates(broker, "SCRAM-SHA-512", "carol", "carol-secret") is True
    finally:
        assert broker.stop() == 0


def test_settings_in_the_toml_file_and_sessions_that_expire(request, tmp_path):
    config = tmp_path / "ferrite.toml"
    config.write_text('sasl-mechanisms = ["PLAIN"]\nconnections-max-reauth-ms = 1500\n')
    broker = Broker(FERRITE_BIN, tmp_path / "data", tmp_path, listeners=LISTENERS, extra_args=["--config", str(config)])
    request.node.ferrite_broker = broker
    broker.start()
    try:
        set_user(broker.addresses["PLAINTEXT"], "erin", "erin-secret", mechanisms=("SCRAM-SHA-256",))
        assert authenticates(broker, "SCRAM-SHA-256", "erin", "erin-secret") is not True, "SCRAM is not enabled"
        assert authenticates(broker, "PLAIN", "erin", "erin-secret") is True

        # A raw client told its session's lifetime, which sends a request after it without
        # re-authenticating, is cut off.
        connection = RawConnection(broker.addresses["SASL_PLAINTEXT"])
        handshake = connection.request(SaslHandshakeRequest(mechanism="PLAIN"), version=1)
        assert handshake.error_code == 0 and handshake.mechanisms == ["PLAIN"]
        answer = connection.request(SaslAuthenticateRequest(auth_bytes=b"\0erin\0erin-secret"), version=1)
        assert answer.error_code == 0 and answer.session_lifetime_ms == 1500
        connection.request(MetadataRequest(topics=[]), version=1)
        time.sleep(1.6)
        with pytest.raises(AssertionError, match="closed the connection"):
            connection.request(MetadataRequest(topics=[]), version=1)
        connection.close()

        # librdkafka re-authenticates on its connection before the session ends (KIP-368):
        # producing for several lifetimes loses nothing.
        topic = topic_name("reauth")
        config = sasl_config(broker, "PLAIN", "erin", "erin-secret")
        producer = Producer({**config, "message.timeout.ms": 10_000})
        reports = []
        deadline = time.monotonic() + 5
        sent = 0
        while time.monotonic() < deadline:
            producer.produce(topic, value=str(sent).encode(), on_delivery=lambda error, _: reports.append(error))
            sent += 1
            producer.flush(CLIENT_DEADLINE_S)
            time.sleep(0.1)
        assert reports == [None] * sent
        assert consume(config, topic, sent) == [str(index) for index in range(sent)]
    finally:
        assert broker.stop() == 0


def test_a_user_set_through_one_broker_is_known_to_the_others(cluster):  # noqa: F811
    one, two, three = (cluster.brokers[node].bootstrap for node in cluster.node_ids)
    set_user(one, "dave", "dave-secret")

    def listed(bootstrap):
        return ferrite_user("list", "--bootstrap", bootstrap).stdout.splitlines()

    expected = [f"user dave mechanism {mechanism} iterations 4096" for mechanism in SCRAM_MECHANISMS]
    for bootstrap in (one, two, three):
        wait_until(lambda: listed(bootstrap) == expected, f"dave's credentials at {bootstrap}")
    ferrite_user("delete", "dave", "--bootstrap", two, "--mechanism", "SCRAM-SHA-256")
    for bootstrap in (one, two, three):
        wait_until(lambda: listed(bootstrap) == expected[1:], f"dave's deletion at {bootstrap}")


@pytest.fixture
def two_listener_cluster(request, tmp_path):
    """Three brokers with a PLAINTEXT and a SASL_PLAINTEXT listener each; broker 1's data
    directory got frank's SCRAM-SHA-512 credential before its first start."""

    def user_before_first_start(node, data_dir):
        if node == 1:
            ferrite_user(
                "set", "frank", "--data-dir", str(data_dir), "--password-stdin", "--mechanism", "SCRAM-SHA-512",
                password="frank-secret",
            )

    yield from running_cluster(
        request, tmp_path, Loopback(), listeners=LISTENERS, before_first_start=user_before_first_start
    )


def listed_over_sasl(broker, user, password):
    """node id -> "host:port" of the brokers a SASL client of `broker` is told about."""
    producer = Producer(sasl_config(broker, "SCRAM-SHA-512", user, password))
    try:
        listed = producer.list_topics(timeout=CLIENT_DEADLINE_S).brokers
    finally:
        producer.flush(0)
    return {node: f"{each.host}:{each.port}" for node, each in listed.items()}


def test_a_cluster_of_two_listeners_names_each_clients_listener_and_knows_a_user_set_before_it_started(
    two_listener_cluster,
):
    cluster = two_listener_cluster
    brokers = [cluster.brokers[node] for node in cluster.node_ids]
    plaintext = {node: cluster.brokers[node].addresses["PLAINTEXT"] for node in cluster.node_ids}
    sasl = {node: cluster.brokers[node].addresses["SASL_PLAINTEXT"] for node in cluster.node_ids}
    assert not set(plaintext.values()) & set(sasl.values())

    # The user set offline in broker 1's directory reached every broker through the metadata log.
    for broker in brokers:
        wait_until(
            lambda broker=broker: authenticates(broker, "SCRAM-SHA-512", "frank", "frank-secret") is True,
            f"frank authenticating at {broker.addresses['SASL_PLAINTEXT']}",
        )
    assert authenticates(brokers[1], "SCRAM-SHA-512", "frank", "wrong") is not True

    for broker in brokers:
        listed = metadata_from(broker.addresses["PLAINTEXT"]).brokers
        assert {node: f"{host}:{port}" for node, (host, port) in listed.items()} == plaintext
        assert listed_over_sasl(broker, "frank", "frank-secret") == sasl

    # Produced with acks=all through broker 3's SASL listener, read in a group (its coordinator
    # found through broker 2's SASL listener): only SASL addresses are ever given to the client.
    topic = topic_name("two-listeners")
    config = sasl_config(brokers[2], "SCRAM-SHA-512", "frank", "frank-secret", acks="all")
    values = [f"value-{index}" for index in range(30)]
    assert produce(config, topic, values) == [None] * len(values)
    consumer = Consumer({
        **sasl_config(brokers[1], "SCRAM-SHA-512", "frank", "frank-secret"),
        "group.id": f"{topic}-group", "auto.offset.reset": "earliest",
    })
    consumer.subscribe([topic])
    read = []
    deadline = time.monotonic() + CLIENT_DEADLINE_S
    try:
        while len(read) < len(values) and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None:
                assert message.error() is None, message.error()
                read.append(message.value().decode())
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    assert read == values
