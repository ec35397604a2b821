"""TLS listeners as a user secures a broker: a certificate authority and certificates made with
openssl, a broker with a PLAINTEXT and an SSL listener (`--listeners`), and kcat, confluent-kafka
and kafka-python over SSL; mutual TLS; a certificate replaced on SIGHUP; Metadata naming the
addresses of the listener a client came in on; a plaintext client on the SSL port refused; a
cluster whose brokers listen on SSL only; SASL over SSL (SASL_SSL)."""

import re
import signal
import socket
import subprocess
import time
import urllib.request

import confluent_kafka
import kafka
import pytest

from cluster_support import Cluster, Loopback
from conftest import FERRITE_BIN, Broker
from support import CLIENT_DEADLINE_S, topic_name, wait_until
from test_sasl import set_user

SSL_LISTENERS = ("--listeners", "PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0")


def openssl(*arguments, cwd):
    subprocess.run(["openssl", *arguments], cwd=cwd, check=True, capture_output=True)


def make_ca(directory, name):
    """A self-signed CA: `name`.pem and `name`.key in `directory`."""
    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
        "-keyout", f"{name}.key", "-out", f"{name}.pem", cwd=directory,
    )
    return directory / f"{name}.pem"


def make_certificate(directory, ca, name, subject, usage):
    """A certificate of `subject` signed by the CA `ca` (v3, with the extensions webpki wants):
    `name`.pem and `name`.key; `usage` is serverAuth (for 127.0.0.1) or clientAuth."""
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", subject,
        "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=directory,
    )
    extensions = directory / f"{name}.ext"
    alt_names = "subjectAltName=IP:127.0.0.1,DNS:localhost\n" if usage == "serverAuth" else ""
    extensions.write_text(f"basicConstraints=CA:FALSE\nextendedKeyUsage={usage}\n{alt_names}")
    openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-days", "2", "-extfile", extensions.name, "-out", f"{name}.pem",
        cwd=directory,
    )
    return directory / f"{name}.pem", directory / f"{name}.key"


@pytest.fixture
def certificates(tmp_path):
    """A CA, the broker's certificate for 127.0.0.1 and a client's, in tmp_path/certs."""
    directory = tmp_path / "certs"
    directory.mkdir()
    make_ca(directory, "ca")
    make_certificate(directory, "ca", "server", "/CN=localhost", "serverAuth")
    make_certificate(directory, "ca", "client", "/C=GB/O=Example/OU=eng/CN=client", "clientAuth")
    return directory


def start_broker(tmp_path, *flags):
    instance = Broker(FERRITE_BIN, tmp_path / "data", tmp_path, extra_args=flags)
    instance.start()
    return instance


def tls_flags(certs, *more):
    return (
        *SSL_LISTENERS,
        "--tls-cert", str(certs / "server.pem"), "--tls-key", str(certs / "server.key"), *more,
    )


def kcat(address, *arguments, stdin=None, check=True):
    completed = subprocess.run(
        ["kcat", "-b", address, *arguments], input=stdin, capture_output=True,
        timeout=CLIENT_DEADLINE_S * 2, check=False,
    )
    stderr = completed.stderr.decode(errors="replace")
    if check:
        assert completed.returncode == 0 and "ERROR" not in stderr, stderr[-4000:]
    return completed.returncode, completed.stdout.decode(), stderr


def kcat_ssl(certs, client_certificate=True, ca="ca", client="client"):
    """kcat's flags for SSL trusting `ca`, with the certificate `client` unless told not to."""
    flags = ["-X", "security.protocol=ssl", "-X", f"ssl.ca.location={certs / (ca + '.pem')}"]
    if client_certificate:
        flags += [
            "-X", f"ssl.certificate.location={certs / (client + '.pem')}",
            "-X", f"ssl.key.location={certs / (client + '.key')}",
        ]
    return flags


def listed_brokers(listing):
    return re.findall(r"^\s+broker \d+ at (\S+)", listing, re.MULTILINE)


def metric(broker, name):
    text = urllib.request.urlopen(broker.metrics_url, timeout=CLIENT_DEADLINE_S).read().decode()
    return sum(float(value) for value in re.findall(rf"^{name}{{[^}}]*}} (\S+)$", text, re.MULTILINE))


def test_kcat_over_ssl_and_metadata_names_the_listener_the_client_came_in_on(tmp_path, certificates):
    broker = start_broker(tmp_path, *tls_flags(certificates))
    try:
        secure = broker.addresses["SSL"]
        ssl = kcat_ssl(certificates, client_certificate=False)
        topic = topic_name("tls")
        lines = "".join(f"key-{n}:value-{n}\n" for n in range(50))
        kcat(secure, *ssl, "-t", topic, "-P", "-K", ":", stdin=lines.encode())
        _, consumed, _ = kcat(secure, *ssl, "-t", topic, "-C", "-e", "-o", "beginning", "-f", "%k:%s\n")
        assert consumed == lines
        _, listing, _ = kcat(secure, *ssl, "-L")
        assert listed_brokers(listing) == [secure], listing
        _, listing, _ = kcat(broker.bootstrap, "-L")
        assert listed_brokers(listing) == [broker.bootstrap], listing

        # A plaintext client on the SSL port: refused, and the broker carries on.
        failures_before = metric(broker, "ferrite_tls_handshakes_failed_total")
        code, _, _ = kcat(secure, "-L", "-m", "3", check=False)
        assert code != 0
        assert metric(broker, "ferrite_tls_handshakes_failed_total") > failures_before
        _, listing, _ = kcat(secure, *ssl, "-L")
        assert listed_brokers(listing) == [secure]
    finally:
        assert broker.stop() == 0


def test_confluent_kafka_and_kafka_python_over_ssl(tmp_path, certificates):
    broker = start_broker(tmp_path, *tls_flags(certificates))
    try:
        secure = broker.addresses["SSL"]
        topic = topic_name("tls-clients")
        ssl = {"security.protocol": "SSL", "ssl.ca.location": str(certificates / "ca.pem")}
        producer = confluent_kafka.Producer({"bootstrap.servers": secure, **ssl})
        for n in range(100):
            producer.produce(topic, key=b"k", value=f"confluent-{n}".encode())
        assert producer.flush(CLIENT_DEADLINE_S) == 0

        python_producer = kafka.KafkaProducer(
            bootstrap_servers=secure, security_protocol="SSL", ssl_cafile=str(certificates / "ca.pem"),
        )
        for n in range(100):
            python_producer.send(topic, key=b"k", value=f"python-{n}".encode())
        python_producer.flush(CLIENT_DEADLINE_S)
        python_producer.close()

        consumer = kafka.KafkaConsumer(
            topic, bootstrap_servers=secure, security_protocol="SSL",
            ssl_cafile=str(certificates / "ca.pem"), auto_offset_reset="earliest",
            consumer_timeout_ms=int(CLIENT_DEADLINE_S * 1000),
        )
        values = []
        for message in consumer:
            values.append(message.value.decode())
            if len(values) == 200:
                break
        consumer.close()
        assert values == [f"confluent-{n}" for n in range(100)] + [f"python-{n}" for n in range(100)]

        confluent_consumer = confluent_kafka.Consumer(
            {"bootstrap.servers": secure, "group.id": "tls", "auto.offset.reset": "earliest", **ssl}
        )
        confluent_consumer.subscribe([topic])
        seen = []
        deadline = time.monotonic() + CLIENT_DEADLINE_S
        while len(seen) < 200 and time.monotonic() < deadline:
            message = confluent_consumer.poll(1.0)
            if message is not None and message.error() is None:
                seen.append(message.value().decode())
        confluent_consumer.close()
        assert seen == values
    finally:
        assert broker.stop() == 0


def test_sasl_over_ssl_with_kafka_python_plain_and_confluent_kafka_scram(tmp_path, certificates):
    """SASL_SSL: kafka-python produces with SASL PLAIN over SSL, confluent-kafka reads it back
    with SCRAM-SHA-512 over SSL, and Metadata through that listener names its address; a wrong
    password over SSL is refused."""
    broker = start_broker(
        tmp_path,
        "--listeners", "PLAINTEXT://127.0.0.1:0,SASL_SSL://127.0.0.1:0",
        "--tls-cert", str(certificates / "server.pem"), "--tls-key", str(certificates / "server.key"),
    )
    try:
        secure = broker.addresses["SASL_SSL"]
        set_user(broker.addresses["PLAINTEXT"], "alice", "alice-secret", mechanisms=("SCRAM-SHA-512",))
        topic = topic_name("sasl-ssl")
        producer = kafka.KafkaProducer(
            bootstrap_servers=secure, security_protocol="SASL_SSL", ssl_cafile=str(certificates / "ca.pem"),
            sasl_mechanism="PLAIN", sasl_plain_username="alice", sasl_plain_password="alice-secret",
        )
        for n in range(50):
            producer.send(topic, value=f"v{n}".encode()).get(timeout=CLIENT_DEADLINE_S)
        producer.close()

        def settings(password):
            return {
                "bootstrap.servers": secure, "security.protocol": "SASL_SSL",
                "ssl.ca.location": str(certificates / "ca.pem"), "sasl.mechanism": "SCRAM-SHA-512",
                "sasl.username": "alice", "sasl.password": password,
            }

        consumer = confluent_kafka.Consumer(
            {**settings("alice-secret"), "group.id": "sasl-ssl", "auto.offset.reset": "earliest"}
        )
        consumer.subscribe([topic])
        seen = []
        deadline = time.monotonic() + CLIENT_DEADLINE_S
        while len(seen) < 50 and time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is not None and message.error() is None:
                seen.append(message.value().decode())
        listed = consumer.list_topics(timeout=CLIENT_DEADLINE_S)
        consumer.close()
        assert seen == [f"v{n}" for n in range(50)]
        assert [f"{b.host}:{b.port}" for b in listed.brokers.values()] == [secure]

        errors = []
        refused = confluent_kafka.Producer({**settings("wrong"), "error_cb": errors.append})
        with pytest.raises(confluent_kafka.KafkaException):
            refused.list_topics(timeout=5)

        def authentication_refused():
            refused.poll(0.1)  # errors reach error_cb only through poll
            return any(error.code() == confluent_kafka.KafkaError._AUTHENTICATION for error in errors)

        wait_until(authentication_refused, f"an authentication error (reported: {errors})")
    finally:
        assert broker.stop() == 0


def test_mutual_tls_from_the_config_file_refuses_a_client_without_a_certificate(tmp_path, certificates):
    config = tmp_path / "ferrite.toml"
    config.write_text(
        'listeners = "PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0"\n'
        f'tls-cert = "{certificates / "server.pem"}"\n'
        f'tls-key = "{certificates / "server.key"}"\n'
        f'tls-ca = "{certificates / "ca.pem"}"\n'
        'tls-client-auth = "required"\n'
    )
    broker = start_broker(tmp_path, "--config", str(config))
    try:
        secure = broker.addresses["SSL"]
        code, _, stderr = kcat(secure, *kcat_ssl(certificates, client_certificate=False), "-L", "-m", "3", check=False)
        assert code != 0, "a client without a certificate is refused"
        _, listing, _ = kcat(secure, *kcat_ssl(certificates), "-L")
        assert listed_brokers(listing) == [secure]
    finally:
        assert broker.stop() == 0


def test_requested_client_auth_serves_clients_with_or_without_a_certificate_but_not_an_untrusted_one(
    tmp_path, certificates
):
    make_ca(certificates, "rogue")
    make_certificate(certificates, "rogue", "rogue-client", "/CN=rogue", "clientAuth")
    broker = start_broker(
        tmp_path, *tls_flags(certificates, "--tls-ca", str(certificates / "ca.pem"), "--tls-client-auth", "requested")
    )
    try:
        secure = broker.addresses["SSL"]
        for client_certificate in (True, False):
            _, listing, _ = kcat(secure, *kcat_ssl(certificates, client_certificate=client_certificate), "-L")
            assert listed_brokers(listing) == [secure], f"client certificate {client_certificate}: {listing}"
        failures_before = metric(broker, "ferrite_tls_handshakes_failed_total")
        code, _, _ = kcat(secure, *kcat_ssl(certificates, client="rogue-client"), "-L", "-m", "3", check=False)
        assert code != 0, "a certificate the broker's CA did not sign is refused, though none is required"
        assert metric(broker, "ferrite_tls_handshakes_failed_total") > failures_before
    finally:
        assert broker.stop() == 0


def test_a_client_that_never_handshakes_is_closed_and_does_not_hold_up_others(tmp_path, certificates):
    broker = start_broker(tmp_path, *tls_flags(certificates))
    try:
        secure = broker.addresses["SSL"]
        host, port = secure.rsplit(":", 1)
        silent = socket.create_connection((host, int(port)), timeout=CLIENT_DEADLINE_S)
        try:
            _, listing, _ = kcat(secure, *kcat_ssl(certificates, client_certificate=False), "-L")
            assert listed_brokers(listing) == [secure], "served while another connection says nothing"
            silent.settimeout(CLIENT_DEADLINE_S + 10)
            assert silent.recv(1) == b"", "the broker closes a connection that never starts its handshake"
        finally:
            silent.close()
        wait_until(lambda: metric(broker, "ferrite_tls_handshakes_failed_total") >= 1, "the timeout counted")
        assert "no TLS handshake within" in broker.stderr_tail()
    finally:
        assert broker.stop() == 0


def test_sighup_serves_a_new_certificate_to_new_connections_and_keeps_open_ones(tmp_path, certificates):
    broker = start_broker(tmp_path, *tls_flags(certificates))
    try:
        secure = broker.addresses["SSL"]
        topic = topic_name("tls-reload")
        producer = confluent_kafka.Producer(
            {"bootstrap.servers": secure, "security.protocol": "SSL",
             "ssl.ca.location": str(certificates / "ca.pem")}
        )
        producer.produce(topic, value=b"before")
        assert producer.flush(CLIENT_DEADLINE_S) == 0

        # A certificate from another CA replaces the broker's files.
        make_ca(certificates, "ca2")
        make_certificate(certificates, "ca2", "server2", "/CN=localhost", "serverAuth")
        (certificates / "server.pem").write_bytes((certificates / "server2.pem").read_bytes())
        (certificates / "server.key").write_bytes((certificates / "server2.key").read_bytes())
        broker.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + CLIENT_DEADLINE_S
        while "TLS certificates reloaded" not in broker.stderr_tail():
            assert time.monotonic() < deadline, "no reload line after SIGHUP"
            time.sleep(0.1)

        new_ca = kcat_ssl(certificates, client_certificate=False, ca="ca2")
        _, listing, _ = kcat(secure, *new_ca, "-L")
        assert listed_brokers(listing) == [secure]
        old_ca = kcat_ssl(certificates, client_certificate=False)
        code, _, _ = kcat(secure, *old_ca, "-L", "-m", "3", check=False)
        assert code != 0, "the old certificate is no longer served"

        producer.produce(topic, value=b"after")
        assert producer.flush(CLIENT_DEADLINE_S) == 0, "the open connection keeps working"
        _, consumed, _ = kcat(secure, *new_ca, "-t", topic, "-C", "-e", "-o", "beginning")
        assert consumed.split() == ["before", "after"]

        # A file that does not load keeps the certificate in use.
        (certificates / "server.pem").write_text("not a certificate\n")
        broker.process.send_signal(signal.SIGHUP)
        while "TLS certificates not reloaded" not in broker.stderr_tail():
            assert time.monotonic() < deadline, "no refusal line after a bad SIGHUP"
            time.sleep(0.1)
        _, listing, _ = kcat(secure, *new_ca, "-L")
        assert listed_brokers(listing) == [secure]
    finally:
        assert broker.stop() == 0


def test_a_cluster_over_ssl_tells_clients_every_brokers_ssl_address(request, tmp_path, certificates):
    """Three brokers whose one Kafka listener is SSL: each registers its SSL address, so Metadata
    from any of them names the others' SSL addresses, and records go through the cluster."""
    cluster = Cluster(
        tmp_path, Loopback(),
        broker_args=(*tls_flags(certificates)[2:], "--listeners", "SSL://127.0.0.1:0"),
    )
    try:
        try:
            cluster.start()
        finally:
            request.node.ferrite_brokers = cluster.brokers
        ssl = kcat_ssl(certificates, client_certificate=False)
        addresses = sorted(broker.bootstrap for broker in cluster.brokers.values())
        deadline = time.monotonic() + CLIENT_DEADLINE_S
        while True:
            code, listing, _ = kcat(cluster.bootstrap(), *ssl, "-L", check=False)
            if code == 0 and sorted(listed_brokers(listing)) == addresses:
                break
            assert time.monotonic() < deadline, f"not every broker's SSL address is listed:\n{listing}"
            time.sleep(0.5)
        topic = topic_name("tls-cluster")
        lines = "".join(f"value-{n}\n" for n in range(20))
        kcat(cluster.bootstrap(), *ssl, "-t", topic, "-P", "-X", "acks=all", stdin=lines.encode())
        _, consumed, _ = kcat(cluster.bootstrap(), *ssl, "-t", topic, "-C", "-e", "-o", "beginning")
        assert consumed == lines
    except BaseException:
        cluster.shut_down(check_exit=False)
        raise
    cluster.shut_down()
