"""Smoke tests of the test broker itself: produce, read back two ways, SASL, restart."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest
from kafka import KafkaProducer

from tests.kafka.broker import KafkaBroker

# The first test also pays for fetch_jars.sh and broker start-up, hence the generous limit.
pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]


def new_topic() -> str:
    return f"smoke-{uuid.uuid4().hex[:12]}"


def sasl_producer(broker: KafkaBroker, password: str, **overrides: object) -> KafkaProducer:
    return KafkaProducer(
        bootstrap_servers=broker.sasl_bootstrap,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_plain_username="token",
        sasl_plain_password=password,
        acks="all",
        enable_idempotence=True,
        max_block_ms=5000,
        **overrides,
    )


def produce(broker: KafkaBroker, topic: str, values: list[bytes]) -> None:
    producer = KafkaProducer(
        bootstrap_servers=broker.bootstrap, acks="all", enable_idempotence=True, max_block_ms=5000
    )
    try:
        for value in values:
            producer.send(topic, value).get(timeout=10)
    finally:
        producer.close(timeout=5)


def test_produce_then_read_back_with_kafka_python_and_kcat(kafka_broker: KafkaBroker) -> None:
    topic = new_topic()
    kafka_broker.create_topic(topic)
    producer = KafkaProducer(
        bootstrap_servers=kafka_broker.bootstrap, acks="all", enable_idempotence=True, max_block_ms=5000
    )
    try:
        for i in range(3):
            producer.send(topic, f"value-{i}".encode(), key=f"key-{i}".encode(), headers=[("n", str(i).encode())])
        producer.flush(timeout=10)
    finally:
        producer.close(timeout=5)

    assert kafka_broker.consume_all(topic) == [
        (b"key-0", b"value-0", [("n", b"0")]),
        (b"key-1", b"value-1", [("n", b"1")]),
        (b"key-2", b"value-2", [("n", b"2")]),
    ]
    assert kafka_broker.consume_with_kcat(topic) == [b"value-0", b"value-1", b"value-2"]


def test_sasl_plain_accepts_the_api_key(kafka_broker: KafkaBroker) -> None:
    topic = new_topic()  # left to auto-creation, as a daemon's first send would
    producer = sasl_producer(kafka_broker, kafka_broker.sasl_users["token"])
    try:
        producer.send(topic, b"authenticated").get(timeout=10)
    finally:
        producer.close(timeout=5)

    assert [value for _, value, _ in kafka_broker.consume_all(topic)] == [b"authenticated"]


WRONG_KEY_PRODUCER = """
import sys, warnings
warnings.simplefilter("ignore")
from kafka import KafkaProducer
from kafka.errors import KafkaTimeoutError
try:
    KafkaProducer(bootstrap_servers=sys.argv[1], security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
                  sasl_plain_username="token", sasl_plain_password="wrong-key", bootstrap_timeout_ms=3000)
except KafkaTimeoutError as exc:
    print("refused:", exc)
"""


def test_sasl_plain_refuses_a_wrong_key(kafka_broker: KafkaBroker) -> None:
    # kafka-python 3.0.12 keeps retrying a refused login until its bootstrap deadline and then
    # raises a timeout, not an authentication error, so the broker's log is the witness. The
    # producer runs in a child process because its failed constructor leaks a socketpair, which
    # would surface as an unraisable ResourceWarning at the end of this session.
    refused = "Failed authentication with /127.0.0.1"
    refusals_before = kafka_broker.log_path.read_text(errors="replace").count(refused)

    child = subprocess.run([sys.executable, "-c", WRONG_KEY_PRODUCER, kafka_broker.sasl_bootstrap],
                           capture_output=True, text=True, timeout=60)

    assert "refused: KafkaTimeoutError: Unable to bootstrap" in child.stdout, child.stdout + child.stderr
    broker_log = kafka_broker.log_path.read_text(errors="replace")
    assert broker_log.count(refused) > refusals_before
    assert "Invalid username or password" in broker_log


def test_restart_keeps_data_and_ports(kafka_broker: KafkaBroker) -> None:
    topic = new_topic()
    bootstrap, pid = kafka_broker.bootstrap, kafka_broker.pid
    produce(kafka_broker, topic, [b"before-restart"])

    kafka_broker.restart()

    assert kafka_broker.bootstrap == bootstrap
    assert kafka_broker.pid != pid
    produce(kafka_broker, topic, [b"after-restart"])
    assert [value for _, value, _ in kafka_broker.consume_all(topic)] == [b"before-restart", b"after-restart"]
