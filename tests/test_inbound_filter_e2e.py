"""Inbound filtering at connect, as real clients see it: DNS blocklists with weights, a
threshold and a list's error answer (127.255.255.254) served by the test DNS server; the
pregreet test with a raw socket. Clients connect from different loopback addresses, which the
test zones list or not. Refused mail must leave nothing in S3 or SQS."""

import json
import smtplib
import socket
import time

import pytest

from harness import wait_until
from ingress_fixtures import ingress  # noqa: F401  (fixture)

MESSAGE = b"From: a@example.org\r\nTo: u@example.test\r\nSubject: filter\r\n\r\nhello\r\n"

# 127.0.0.2: heavy (2) + light (1) = 3 -> blocked, named after the heaviest.
# 127.0.0.3: light (1) -> below the threshold of 2, delivered.
# 127.0.0.4: light (1) + err (127.255.255.254, weight 5: an error, never a listing) -> delivered.
# 127.0.0.5: light (1) + other (1) = 2 -> blocked at exactly the threshold.
# 127.0.0.6: heavy, but in RELAY_NETWORKS: never looked up, delivered.
ZONES = [
    "2.0.0.127.heavy.test. 300 A 127.0.0.2",
    "2.0.0.127.light.test. 300 A 127.0.0.2",
    "3.0.0.127.light.test. A 127.0.0.2",
    "4.0.0.127.light.test. A 127.0.0.2",
    "4.0.0.127.err.test. A 127.255.255.254",
    "5.0.0.127.light.test. A 127.0.0.10",
    "5.0.0.127.other.test. A 127.0.0.3",
    "6.0.0.127.heavy.test. A 127.0.0.2",
    # zone apexes, so names below them that are not listed get a clean NXDOMAIN
    "heavy.test. SOA ns.heavy.test. hostmaster.heavy.test. 1 3600 600 86400 0",
]


def send_from(server, source, rcpt="u@example.test"):
    """sendmail from `source`; returns None when accepted, else (code, text) of the refusal."""
    with smtplib.SMTP(*server.mta, timeout=30, source_address=(source, 0)) as c:
        c.ehlo("client.example.org")
        try:
            c.sendmail("a@example.org", [rcpt], MESSAGE)
            return None
        except smtplib.SMTPRecipientsRefused as e:
            code, text = e.recipients[rcpt]
            return code, text.decode()


def emf_totals(log, name):
    total = 0
    for line in log.splitlines():
        if '"_aws"' in line and line.startswith('{'):
            total += json.loads(line).get(name, 0)
    return total


@pytest.fixture
def blocklisted_ingress(ingress, dns_server):
    dns = dns_server(*ZONES)
    server = ingress(
        INGRESS_DNS_SERVERS=dns,
        INGRESS_DNSBL="heavy.test*2,light.test,err.test*5,other.test",
        INGRESS_DNSBL_THRESHOLD="2",
        RELAY_NETWORKS="127.0.0.6/32",
    )
    return server, dns


def test_dnsbl_weights_threshold_and_error_answers(blocklisted_ingress, spool):
    server, dns = blocklisted_ingress
    assert send_from(server, "127.0.0.2") == (554, "5.7.1 Service unavailable; client [127.0.0.2] blocked using heavy.test")
    assert send_from(server, "127.0.0.5") == (554, "5.7.1 Service unavailable; client [127.0.0.5] blocked using light.test")
    for ok in ("127.0.0.3", "127.0.0.4", "127.0.0.6"):
        assert send_from(server, ok) is None, ok
    wait_until(lambda: spool.counts()["visible"] == 3, what="three jobs")
    assert len(spool.keys("spool/")) == 3, "only the three accepted messages are stored"

    log = server.log()
    assert "dnsbl_error" in log and "err.test" in log and "127.255.255.254" in log
    # The listed client was logged with its HELO and sender at RCPT.
    rcpt_lines = [l for l in log.splitlines() if '"reason":"blocklisted"' in l]
    assert any("client.example.org" in l and "a@example.org" in l for l in rcpt_lines), rcpt_lines
    # Trusted clients are never looked up; every zone was asked about the others, in parallel.
    names = [q[0] for q in dns.queries()]
    assert not any(n.startswith("6.0.0.127.") for n in names), names
    for zone in ("heavy.test.", "light.test.", "err.test.", "other.test."):
        assert f"3.0.0.127.{zone}" in names, (zone, names)

    # Answers are cached for their TTL (300 s on 127.0.0.2's listings): a second connection
    # is refused without asking again.
    before = names.count("2.0.0.127.heavy.test.")
    assert send_from(server, "127.0.0.2")[0] == 554
    assert [q[0] for q in dns.queries()].count("2.0.0.127.heavy.test.") == before == 1

    server.process.stop()
    log = server.log()
    assert emf_totals(log, "Blocklisted") == 3
    assert emf_totals(log, "Accepted") == 3


def raw_connect(server, source="127.0.0.7"):
    s = socket.create_connection(server.mta, timeout=10, source_address=(source, 0))
    return s


def read_all(s, timeout=10):
    s.settimeout(timeout)
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            return data
        data += chunk


def test_pregreet_client_is_refused_and_a_patient_one_is_greeted(ingress, spool):
    server = ingress(INGRESS_GREET_PAUSE="1s", RELAY_NETWORKS="127.0.0.9/32")
    # A bot's tell: the whole transaction before the greeting.
    s = raw_connect(server)
    s.sendall(b"EHLO bot.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<u@example.test>\r\nDATA\r\n"
              + MESSAGE + b".\r\nQUIT\r\n")
    reply = read_all(s)
    s.close()
    assert reply == b"554 5.5.1 Protocol error: talking before the greeting\r\n", reply
    assert "pregreet" in server.log()

    # A client that waits is greeted after the pause, and its mail goes through.
    started = time.monotonic()
    s = raw_connect(server)
    s.settimeout(10)
    greeting = s.recv(4096)
    waited = time.monotonic() - started
    s.close()
    assert greeting.startswith(b"220 "), greeting
    assert waited >= 0.9, waited
    assert send_from(server, "127.0.0.7") is None
    # A client in RELAY_NETWORKS is ours: greeted at once, no pause.
    started = time.monotonic()
    s = raw_connect(server, "127.0.0.9")
    s.settimeout(10)
    assert s.recv(4096).startswith(b"220 ")
    assert time.monotonic() - started < 0.9
    s.close()
    wait_until(lambda: spool.counts()["visible"] == 1, what="one job")
    assert len(spool.keys("spool/")) == 1, "the pregreeting bot's message was never stored"
