"""Kafka requests on a plain socket, for the requests a well-behaved client never sends (a
heartbeat from a member that never joined, a commit from a stale generation, a record batch
with a bad CRC, a produce to a follower), so that a test can see exactly what the broker
answers to them.

kafka-python's message classes encode and decode the requests; each API is used at the highest
version both kafka-python and the broker support, as a client negotiates it through ApiVersions.
One request at a time, each answered within the deadline or the test fails: a request the
broker leaves unanswered is a bug, not something to wait out.
"""

import socket
import struct
import time

from kafka.protocol.metadata.api_versions import ApiVersionsRequest
from kafka.protocol.producer.produce import ProduceRequest
from kafka.record.default_records import DefaultRecordBatchBuilder

from support import CLIENT_DEADLINE_S

FRAME_SIZE_BYTES = 4
# The slack a record batch needs beyond its value: the batch header and one record's framing.
BATCH_OVERHEAD_BYTES_MAX = 1024


def record_batch(value, key=None):
    """One uncompressed record batch (magic 2) of one record, as a producer that is not
    idempotent encodes it."""
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=False,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=len(value) + BATCH_OVERHEAD_BYTES_MAX,
    )
    builder.append(0, timestamp=int(time.time() * 1000), key=key, value=value, headers=[])
    return bytes(builder.build())


class RawConnection:
    def __init__(self, address, deadline_s=CLIENT_DEADLINE_S):
        host, port = address.rsplit(":", 1)
        self.address = address
        self.deadline_s = deadline_s
        self.socket = socket.create_connection((host, int(port)), timeout=deadline_s)
        self.correlation_id = 0
        # Version 0 is the one every broker answers, whatever it supports.
        versions = self.request(ApiVersionsRequest(), version=0)
        assert versions.error_code == 0, f"ApiVersions failed with Kafka error {versions.error_code}"
        self.versions = {api.api_key: (api.min_version, api.max_version) for api in versions.api_keys}

    def close(self):
        self.socket.close()

    def version(self, request_class, version_max=None):
        """The version a client would use: the highest both sides support, and at most
        `version_max` when given (for a caller that knows the layouts only up to it)."""
        supported = self.versions.get(request_class.API_KEY)
        assert supported is not None, (
            f"the broker does not list {request_class.name} (API key {request_class.API_KEY}) in ApiVersions"
        )
        version = min(supported[1], request_class.max_version, version_max or request_class.max_version)
        assert version >= supported[0], (
            f"{request_class.name}: the broker supports versions {supported}, kafka-python up to "
            f"{request_class.max_version}"
        )
        return version

    def request(self, request, version=None):
        """Sends `request` (at `version`, else the highest both sides support) and returns the
        broker's decoded answer."""
        version = self.version(type(request)) if version is None else version
        self.correlation_id += 1
        request.with_header(correlation_id=self.correlation_id, client_id="ferrite-raw-protocol-test")
        response_class = request.header.get_response_class()
        try:
            self.socket.sendall(request.encode(version=version, header=True, framed=True))
            (size,) = struct.unpack(">i", self._receive(FRAME_SIZE_BYTES))
            payload = self._receive(size)
        except TimeoutError:
            raise AssertionError(
                f"{request.name} v{version} had no answer within {self.deadline_s:.0f} s"
            ) from None
        response = response_class.decode(payload, version=version, header=True)
        assert response.header.correlation_id == self.correlation_id, (
            f"{request.name}: answer for correlation id {response.header.correlation_id}, "
            f"sent {self.correlation_id}"
        )
        return response

    def produce(self, topic, partition, records, acks=-1):
        """Sends `records` (the bytes of one partition's batches) to `topic`/`partition` and
        returns the partition's error code."""
        topic_data = ProduceRequest.TopicProduceData
        request = ProduceRequest(
            acks=acks,
            timeout_ms=int(self.deadline_s * 1000),
            topic_data=[
                topic_data(
                    name=topic,
                    partition_data=[topic_data.PartitionProduceData(index=partition, records=records)],
                )
            ],
        )
        response = self.request(request)
        return response.responses[0].partition_responses[0].error_code

    def _receive(self, size):
        data = bytearray()
        while len(data) < size:
            chunk = self.socket.recv(size - len(data))
            if not chunk:
                raise AssertionError(f"{self.address} closed the connection instead of answering")
            data += chunk
        return bytes(data)
