"""The smarthost password read at runtime, end to end: RELAY_SMARTHOST_PASSWORD_SECRET names a
secret in LocalStack's Secrets Manager (or an SSM SecureString parameter), the relay reads it at
start and again when the smarthost refuses it (rotation), and the smarthost — an aiosmtpd capture
server offering AUTH only over TLS with a certificate from a private CA — only accepts the
password the secret holds. Nothing sets RELAY_SMARTHOST_PASSWORD.
"""

import json
import uuid

import pytest

from harness import PrivateCa, wait_until
from test_relay_e2e import MESSAGE, enqueue, log_lines, queue_drained, start_relay

USER = "relayuser"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    ca = PrivateCa(tmp_path_factory.mktemp("pki"))
    cert, key = ca.issue(["localhost"], ["127.0.0.1"])
    return ca.ca_path, (cert, key)


@pytest.fixture
def secrets(aws):
    """secrets(value) -> ARN of a new Secrets Manager secret; deleted after the test."""
    sm = aws.client("secretsmanager")
    made = []

    def create(value):
        arn = sm.create_secret(Name=f"relay-test/{uuid.uuid4().hex[:12]}", SecretString=value)["ARN"]
        made.append(arn)
        return arn

    create.client = sm
    yield create
    for arn in made:
        sm.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)


def smarthost_relay(start_process, spool, host, ca, arn, **env):
    return start_relay(start_process, spool, RELAY_SMARTHOST=host.addr, RELAY_SMARTHOST_USER=USER,
                       RELAY_SMARTHOST_PASSWORD_SECRET=arn, RELAY_SMARTHOST_TLS="starttls",
                       RELAY_SMARTHOST_CA=str(ca), **env)


def test_the_password_comes_from_secrets_manager(capture_server, spool, start_process, secrets, pki):
    ca, cert = pki
    host = capture_server(tls=cert, auth=[f"{USER}:from-the-secret"])
    arn = secrets("from-the-secret")
    relay = smarthost_relay(start_process, spool, host, ca, arn)
    enqueue(spool, "example.test", ["bob@example.test"])
    [m] = host.wait_for(1, timeout=60)
    assert m["tls"] and m["data"] == MESSAGE
    session = host.process.log_text()
    assert session.index("STARTTLS") < session.index("AUTH PLAIN") < session.index("MAIL FROM")
    assert "from-the-secret" not in relay.log_text()


def deliveries(relay):
    return [(line["status"], line["attempt"], line["reply"]) for line in log_lines(relay)
            if line.get("message") == "delivery"]


def test_a_rotated_secret_is_read_again_when_the_smarthost_refuses_the_old_password(
        capture_server, spool, start_process, secrets, pki):
    ca, cert = pki
    arn = secrets(json.dumps({"username": USER, "password": "before"}))
    host = capture_server(tls=cert, auth=[f"{USER}:after"])  # the smarthost was told first
    relay = smarthost_relay(start_process, spool, host, ca, arn)  # reads "before" (a JSON secret: its field)
    secrets.client.put_secret_value(SecretId=arn, SecretString=json.dumps({"username": USER, "password": "after"}))
    enqueue(spool, "example.test", ["bob@example.test"])
    [m] = host.wait_for(1, timeout=60)
    assert m["data"] == MESSAGE
    assert [(status, attempt) for status, attempt, _ in deliveries(relay)] == [("sent", 1)], "no retry needed"
    relay.wait_log(r"smarthost refused the password; secret read again")
    assert '"changed":true' in relay.log_text().replace(" ", "")
    session = host.process.log_text()
    assert session.count("AUTH PLAIN") == 2, "the same session tried again with the new password"


def test_a_wrong_password_defers_and_the_secret_is_not_read_again_for_every_job(
        capture_server, spool, start_process, secrets, pki):
    ca, cert = pki
    host = capture_server(tls=cert, auth=[f"{USER}:right"])
    relay = smarthost_relay(start_process, spool, host, ca, secrets("wrong"), RELAY_RETRY_SCHEDULE="1h")
    for r in ("a", "b", "c"):
        enqueue(spool, "example.test", [f"{r}@example.test"])
    wait_until(lambda: len(deliveries(relay)) == 3, 60, what="three deferrals")
    assert all(status == "deferred" and "535" in reply for status, _, reply in deliveries(relay)), deliveries(relay)
    assert relay.log_text().count("secret read again") == 1, "one re-read, not one per refusal"
    assert host.messages() == []


def test_an_ssm_securestring_parameter(aws, capture_server, spool, start_process, pki):
    ca, cert = pki
    ssm = aws.client("ssm")
    name = f"/relay-test/{uuid.uuid4().hex[:12]}/smarthost"
    ssm.put_parameter(Name=name, Type="SecureString", Value="from-ssm")
    try:
        arn = ssm.get_parameter(Name=name)["Parameter"]["ARN"]
        host = capture_server(tls=cert, auth=[f"{USER}:from-ssm"])
        relay = smarthost_relay(start_process, spool, host, ca, arn)
        enqueue(spool, "example.test", ["bob@example.test"])
        host.wait_for(1, timeout=60)
        wait_until(lambda: queue_drained(spool), 30, what="empty queue")
        assert "from-ssm" not in relay.log_text()
    finally:
        ssm.delete_parameter(Name=name)


def test_an_unreadable_secret_stops_the_relay_at_start(aws, spool, start_process):
    arn = f"arn:aws:secretsmanager:{aws.region}:000000000000:secret:relay-test/missing-AbCdEf"
    relay = start_process("relay", "poll", env={**spool.env, "RELAY_SMARTHOST": "127.0.0.1:587",
                                                "RELAY_SMARTHOST_USER": USER,
                                                "RELAY_SMARTHOST_PASSWORD_SECRET": arn})
    assert relay.wait(30) == 2
    assert f"relay: RELAY_SMARTHOST_PASSWORD_SECRET: {arn}: " in relay.log_text()
    bad = start_process("relay", "poll", env={**spool.env, "RELAY_SMARTHOST": "127.0.0.1:587",
                                              "RELAY_SMARTHOST_USER": USER,
                                              "RELAY_SMARTHOST_PASSWORD_SECRET": "relay/smarthost"})
    assert bad.wait(30) == 2 and "expected the ARN of a Secrets Manager secret" in bad.log_text()
