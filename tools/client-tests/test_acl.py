"""ACLs as users meet them (`--authorizer acl`): an administrator (a super user) creates,
describes and deletes ACLs with confluent-kafka's AdminClient; SASL users produce, consume in a
group and see topics as the ACLs say, with Kafka's *_AUTHORIZATION_FAILED errors otherwise; a
DENY beats an ALLOW; a deleted ACL stops applying at once; ACLs survive a restart; the flags in
the TOML file; an ACL created through one broker of a cluster enforced by every broker; and no ACL API without an authorizer (SECURITY_DISABLED, as Kafka).

The users are written offline before the first start (`ferrite user set --data-dir`): with the
authorizer on, only a principal allowed to ALTER the cluster may add them online.
"""

import subprocess
import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

from kafka.protocol.admin import DescribeAclsRequest
from kafka.protocol.metadata import MetadataRequest

from cluster_support import Loopback, running_cluster
from conftest import FERRITE_BIN, Broker
from raw_protocol import RawConnection
from support import CLIENT_DEADLINE_S, topic_name, wait_until

LISTENERS = ("SASL_PLAINTEXT", "PLAINTEXT")
PASSWORDS = {"admin": "admin-secret", "alice": "alice-secret", "bob": "bob-secret"}
AUTHORIZER = ["--authorizer", "acl", "--super-users", "User:admin"]


def write_users_offline(data_dir):
    for user, password in PASSWORDS.items():
        done = subprocess.run(
            [FERRITE_BIN, "user", "set", user, "--data-dir", str(data_dir), "--password-stdin"],
            input=password + "\n",
            capture_output=True,
            text=True,
            timeout=CLIENT_DEADLINE_S,
        )
        assert done.returncode == 0, done.stderr


@pytest.fixture
def start_broker(request, tmp_path):
    """Starts the test's broker, with users admin, alice and bob, and `extra_args`; stopped
    with SIGTERM at the end, which must exit 0."""
    started = []

    def start(extra_args=AUTHORIZER):
        data_dir = tmp_path / "data"
        write_users_offline(data_dir)
        broker = Broker(FERRITE_BIN, data_dir, tmp_path, listeners=LISTENERS, extra_args=extra_args)
        request.node.ferrite_broker = broker
        started.append(broker)
        broker.start()
        return broker

    yield start
    for broker in started:
        if broker.running:
            assert broker.stop() == 0


def config_of(broker, user, **more):
    return {
        "bootstrap.servers": broker.addresses["SASL_PLAINTEXT"],
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": user,
        "sasl.password": PASSWORDS[user],
        **more,
    }


def admin_of(broker, user="admin"):
    return AdminClient(config_of(broker, user))


def create_acls(admin, bindings):
    for binding, future in admin.create_acls(bindings, request_timeout=CLIENT_DEADLINE_S).items():
        assert future.result(timeout=CLIENT_DEADLINE_S) is None, binding


def acl(resource_type, name, principal, operation, permission=AclPermissionType.ALLOW, pattern=None):
    return AclBinding(
        resource_type,
        name,
        pattern or ResourcePatternType.LITERAL,
        principal,
        "*",
        operation,
        permission,
    )


def everything():
    return AclBindingFilter(
        ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY, AclPermissionType.ANY
    )


def described(admin):
    return sorted(admin.describe_acls(everything(), request_timeout=CLIENT_DEADLINE_S).result(), key=str)


def produce(broker, user, topic, values):
    """The delivery error of each value (None when delivered)."""
    reports = []
    producer = Producer(config_of(broker, user, **{"message.timeout.ms": 10_000}))
    for value in values:
        producer.produce(topic, value=value.encode(), on_delivery=lambda error, _: reports.append(error))
    producer.flush(CLIENT_DEADLINE_S)
    assert len(reports) == len(values), "a delivery report is missing"
    return reports


def consume_in_group(broker, user, topic, group, count):
    """The values `user` consumes as a member of `group`, or the first error it is given."""
    consumer = Consumer(
        config_of(broker, user, **{"group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False})
    )
    consumer.subscribe([topic])
    values = []
    deadline = time.monotonic() + CLIENT_DEADLINE_S
    try:
        while len(values) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error() is not None:
                return message.error()
            values.append(message.value().decode())
        consumer.commit(asynchronous=False)
        return values
    finally:
        consumer.close()


def visible_topics(broker, user):
    return set(AdminClient(config_of(broker, user)).list_topics(timeout=CLIENT_DEADLINE_S).topics)


def test_acls_decide_who_produces_consumes_and_sees_what(start_broker):
    broker = start_broker()
    admin = admin_of(broker)
    orders, secret = topic_name("alice-orders"), topic_name("secret")
    for future in admin.create_topics([NewTopic(orders, 1, 1), NewTopic(secret, 1, 1)]).values():
        future.result(timeout=CLIENT_DEADLINE_S)
    alice_writes = acl(ResourceType.TOPIC, "alice-", "User:alice", AclOperation.WRITE, pattern=ResourcePatternType.PREFIXED)
    bob_reads = acl(ResourceType.TOPIC, orders, "User:bob", AclOperation.READ)
    bob_group = acl(ResourceType.GROUP, "bob-group", "User:bob", AclOperation.READ)
    create_acls(admin, [alice_writes, bob_reads, bob_group])
    assert described(admin) == sorted([alice_writes, bob_reads, bob_group], key=str)

    # alice may write the prefixed topics; bob may not.
    values = [f"v{index}" for index in range(10)]
    assert produce(broker, "alice", orders, values) == [None] * len(values)
    refused = produce(broker, "bob", orders, ["no"])
    assert refused[0] is not None and refused[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, refused

    # bob reads the topic in the group he may use, and in no other.
    assert consume_in_group(broker, "bob", orders, "bob-group", len(values)) == values
    error = consume_in_group(broker, "bob", orders, "another-group", len(values))
    assert isinstance(error, KafkaError) and error.code() == KafkaError.GROUP_AUTHORIZATION_FAILED, error

    # Metadata lists the topics each may describe (WRITE and READ imply DESCRIBE).
    assert orders in visible_topics(broker, "alice") and secret not in visible_topics(broker, "alice")
    assert orders in visible_topics(broker, "bob") and secret not in visible_topics(broker, "bob")
    assert {orders, secret} <= visible_topics(broker, "admin")

    # A DENY beats the prefixed ALLOW.
    blocked = topic_name("alice-blocked")
    admin.create_topics([NewTopic(blocked, 1, 1)])[blocked].result(timeout=CLIENT_DEADLINE_S)
    alice_denied = acl(ResourceType.TOPIC, blocked, "User:alice", AclOperation.WRITE, AclPermissionType.DENY)
    create_acls(admin, [alice_denied])
    refused = produce(broker, "alice", blocked, ["no"])
    assert refused[0] is not None and refused[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, refused
    assert produce(broker, "alice", orders, ["still"]) == [None]

    # Deleting an ACL takes effect at once; the answer lists what was deleted.
    deleted = admin.delete_acls(
        [AclBindingFilter(ResourceType.TOPIC, "alice-", ResourcePatternType.PREFIXED, None, None, AclOperation.ANY, AclPermissionType.ANY)],
        request_timeout=CLIENT_DEADLINE_S,
    )
    assert [list(future.result()) for future in deleted.values()] == [[alice_writes]]
    refused = produce(broker, "alice", orders, ["no"])
    assert refused[0] is not None and refused[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, refused

    # Only a principal that may ALTER the cluster manages ACLs.
    alice_admin, bob_admin = admin_of(broker, "alice"), admin_of(broker, "bob")
    with pytest.raises(KafkaException) as caught:
        create_acls(alice_admin, [acl(ResourceType.TOPIC, "x", "User:alice", AclOperation.ALL)])
    assert caught.value.args[0].code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED, caught.value
    # librdkafka drops DescribeAcls' top-level error (it shows bob nothing); the answer has it.
    assert bob_admin.describe_acls(everything(), request_timeout=CLIENT_DEADLINE_S).result() == []
    answer = raw_describe_acls(broker.addresses["PLAINTEXT"])
    assert (answer.error_code, answer.resources) == (KafkaError.CLUSTER_AUTHORIZATION_FAILED, []), answer

    # The ACLs survive a restart.
    before = described(admin)
    assert broker.stop() == 0
    broker.start()
    admin = admin_of(broker)
    assert described(admin) == before
    assert consume_in_group(broker, "bob", orders, "bob-group", 1) == ["still"]


def test_the_flags_in_the_toml_file(start_broker, tmp_path):
    config = tmp_path / "ferrite.toml"
    config.write_text('authorizer = "acl"\nsuper-users = "User:admin"\nallow-everyone-if-no-acl-found = true\n')
    broker = start_broker(extra_args=["--config", str(config)])
    admin = admin_of(broker)
    open_topic, guarded = topic_name("open"), topic_name("guarded")
    for future in admin.create_topics([NewTopic(open_topic, 1, 1), NewTopic(guarded, 1, 1)]).values():
        future.result(timeout=CLIENT_DEADLINE_S)
    # No ACL on a topic: everyone may use it; one ACL on it: only those it allows.
    create_acls(admin, [acl(ResourceType.TOPIC, guarded, "User:bob", AclOperation.WRITE)])
    assert produce(broker, "alice", open_topic, ["yes"]) == [None]
    refused = produce(broker, "alice", guarded, ["no"])
    assert refused[0] is not None and refused[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, refused
    assert produce(broker, "bob", guarded, ["yes"]) == [None]


def test_without_an_authorizer_acls_are_refused_and_everything_allowed(start_broker):
    broker = start_broker(extra_args=[])
    admin = admin_of(broker, "alice")
    with pytest.raises(KafkaException) as caught:
        create_acls(admin, [acl(ResourceType.TOPIC, "t", "User:bob", AclOperation.READ)])
    assert caught.value.args[0].code() == KafkaError.SECURITY_DISABLED, caught.value
    assert produce(broker, "bob", topic_name("free"), ["yes"]) == [None]


def test_super_users_need_an_authorizer(tmp_path):
    done = subprocess.run(
        [FERRITE_BIN, "serve", "--data-dir", str(tmp_path / "data"), "--super-users", "User:admin"],
        capture_output=True,
        text=True,
        timeout=CLIENT_DEADLINE_S,
    )
    assert done.returncode == 2 and "--authorizer acl" in done.stderr, done.stderr


def raw_describe_acls(bootstrap):
    connection = RawConnection(bootstrap)
    try:
        return connection.request(
            DescribeAclsRequest(
                resource_type_filter=1,
                resource_name_filter=None,
                pattern_type_filter=1,
                principal_filter=None,
                host_filter=None,
                operation=1,
                permission_type=1,
            ),
            version=1,
        )
    finally:
        connection.close()


def raw_topics_listed(bootstrap):
    connection = RawConnection(bootstrap)
    try:
        return {topic[1] for topic in connection.request(MetadataRequest(topics=None), version=1).topics}
    finally:
        connection.close()


@pytest.fixture
def open_cluster(request, tmp_path):
    """Three brokers authorizing with ACLs, which allow everyone where there is none (the
    cluster's PLAINTEXT clients are all User:ANONYMOUS)."""
    yield from running_cluster(
        request,
        tmp_path,
        Loopback(),
        broker_args=("--authorizer", "acl", "--allow-everyone-if-no-acl-found", "true"),
    )


def test_an_acl_created_through_one_broker_is_enforced_by_all(open_cluster):
    one, two, three = (open_cluster.brokers[node].bootstrap for node in open_cluster.node_ids)
    admin = AdminClient({"bootstrap.servers": one})
    hidden, shown = topic_name("hidden"), topic_name("shown")
    for future in admin.create_topics([NewTopic(hidden, 1, 3), NewTopic(shown, 1, 3)]).values():
        future.result(timeout=CLIENT_DEADLINE_S)
    for bootstrap in (one, two, three):
        wait_until(lambda: {hidden, shown} <= raw_topics_listed(bootstrap), f"both topics at {bootstrap}")
    denied = acl(ResourceType.TOPIC, hidden, "User:ANONYMOUS", AclOperation.ALL, AclPermissionType.DENY)
    create_acls(admin, [denied])
    for bootstrap in (one, two, three):
        wait_until(lambda: len(raw_describe_acls(bootstrap).resources) == 1, f"the ACL at {bootstrap}")
        listed = raw_topics_listed(bootstrap)
        assert shown in listed and hidden not in listed, (bootstrap, listed)
    refused = produce_anonymously(two, hidden)
    assert refused is not None and refused.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, refused
    # Deleted through another broker, it goes everywhere.
    other_admin = AdminClient({"bootstrap.servers": three})
    deleted = other_admin.delete_acls([everything()], request_timeout=CLIENT_DEADLINE_S)
    assert [list(future.result()) for future in deleted.values()] == [[denied]]
    for bootstrap in (one, two, three):
        wait_until(lambda: hidden in raw_topics_listed(bootstrap), f"the topic listed again at {bootstrap}")
    assert produce_anonymously(two, hidden) is None


def produce_anonymously(bootstrap, topic):
    """The delivery error of one message produced over PLAINTEXT (None when delivered)."""
    reports = []
    producer = Producer({"bootstrap.servers": bootstrap, "message.timeout.ms": 10_000})
    producer.produce(topic, value=b"x", on_delivery=lambda error, _: reports.append(error))
    producer.flush(CLIENT_DEADLINE_S)
    assert len(reports) == 1, "the delivery report is missing"
    return reports[0]


def ferrite_acl(*arguments, check=True):
    done = subprocess.run(
        [FERRITE_BIN, "acl", *arguments], capture_output=True, text=True, timeout=CLIENT_DEADLINE_S
    )
    if check:
        assert done.returncode == 0, f"ferrite acl {' '.join(arguments)}: {done.stderr}"
    return done


def test_the_ferrite_acl_command_round_trip(start_broker):
    broker = start_broker()
    plaintext = broker.addresses["PLAINTEXT"]
    # The command connects as User:ANONYMOUS: refused until an ACL lets it manage ACLs.
    refused = ferrite_acl("list", "--bootstrap", plaintext, check=False)
    assert refused.returncode != 0 and "CLUSTER_AUTHORIZATION_FAILED" in refused.stderr, refused.stderr
    admin = admin_of(broker)
    create_acls(
        admin,
        [
            AclBinding(ResourceType.BROKER, "kafka-cluster", ResourcePatternType.LITERAL, "User:ANONYMOUS", "127.0.0.1", operation, AclPermissionType.ALLOW)
            for operation in (AclOperation.ALTER, AclOperation.DESCRIBE)
        ],
    )
    added = ferrite_acl(
        "add", "--bootstrap", plaintext, "--topic", "cli-", "--pattern", "prefixed",
        "--principal", "User:alice", "--operation", "write,describe",
    ).stdout.splitlines()
    assert added == [
        "added acl TOPIC cli- pattern PREFIXED principal User:alice host * operation WRITE permission ALLOW",
        "added acl TOPIC cli- pattern PREFIXED principal User:alice host * operation DESCRIBE permission ALLOW",
    ]
    ferrite_acl("add", "--bootstrap", plaintext, "--group", "g", "--principal", "User:bob", "--operation", "READ", "--deny")
    # What a client sees: alice writes to the prefixed topics.
    topic = topic_name("cli-orders")
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=CLIENT_DEADLINE_S)
    assert produce(broker, "alice", topic, ["via the CLI"]) == [None]
    listed = ferrite_acl("list", "--bootstrap", plaintext, "--principal", "User:alice").stdout.splitlines()
    assert listed == sorted(line.removeprefix("added ") for line in added)
    # MATCH: every ACL that applies to the topic named.
    matching = ferrite_acl("list", "--bootstrap", plaintext, "--topic", topic, "--pattern", "match").stdout
    assert matching.splitlines() == listed
    removed = ferrite_acl("remove", "--bootstrap", plaintext, "--topic", "cli-", "--pattern", "prefixed").stdout
    assert sorted(removed.splitlines()) == sorted(line.replace("added", "removed") for line in added)
    assert ferrite_acl("list", "--bootstrap", plaintext, "--principal", "User:alice").stdout == ""
    assert ferrite_acl("list", "--bootstrap", plaintext, "--group", "g").stdout.splitlines() == [
        "acl GROUP g pattern LITERAL principal User:bob host * operation READ permission DENY"
    ]
    refused = produce(broker, "alice", topic, ["no"])
    assert refused[0] is not None and refused[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, refused
