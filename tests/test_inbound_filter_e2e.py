"""Inbound filtering at connect, as real clients see it: DNS blocklists with weights, a
threshold and a list's error answer (127.255.255.254) served by the test DNS server; the
pregreet test with a raw socket. Clients connect from different loopback addresses, which the
test zones list or not. Refused mail must leave nothing in S3 or SQS."""

import email.utils
import json
import re
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


# ---------------------------------------------------------------------------------------------
# rspamd at the end of DATA (Debian's rspamd 3.4, private configuration: infra/local/rspamd_config.py).
# Clients come from 127.0.0.x, which rspamd treats as local (no SPF/DMARC/RBL of its own).

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def mail(extra_headers="", body="Hello Bob,\r\n\r\nthe minutes of today's meeting are below.\r\n\r\nAlice"):
    """A well-formed message (Date, Message-ID, MIME-Version), which rspamd scores as clean."""
    return (f"From: Alice <a@example.org>\r\nTo: Bob <u@example.test>\r\nSubject: Minutes\r\n"
            f"Date: {email.utils.formatdate()}\r\nMessage-ID: {email.utils.make_msgid(domain='example.org')}\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n{extra_headers}\r\n{body}\r\n").encode()


def deliver(server, data):
    """(code, text) of the end of DATA (250 when queued)."""
    with smtplib.SMTP(*server.mta, timeout=60) as c:
        c.ehlo("client.example.org")
        c.mail("a@example.org")
        code, _ = c.rcpt("u@example.test")
        assert code == 250
        code, text = c.data(data)
        return code, text.decode()


def stored_messages(spool):
    return [spool.get(k) for k in spool.keys("spool/")]


def header_lines(message):
    head = message.split(b"\r\n\r\n", 1)[0].decode()
    return head.split("\r\n")


@pytest.fixture
def filtered(ingress, rspamd):
    def start(**env):
        r = rspamd()
        return ingress(INGRESS_AUTH_CHECKS="off", INGRESS_RSPAMD_URL=r.url, **env), r
    return start


def test_rspamd_actions_end_to_end(filtered, spool):
    server, _ = filtered()
    # GTUBE: rejected, nothing stored, no job.
    code, text = deliver(server, mail(body=GTUBE))
    assert (code, text) == (554, "5.7.1 Gtube pattern")
    assert spool.keys("") == [] and spool.counts()["visible"] == 0

    # The soft-reject multimap rule: 451 4.7.1, nothing stored.
    code, text = deliver(server, mail("X-Test-Action: soft-reject\r\n"))
    assert code == 451 and text.startswith("4.7.1"), (code, text)
    assert spool.keys("") == []

    # The add-header rule: delivered, marked X-Spam: Yes once, scored.
    code, _ = deliver(server, mail("X-Test-Action: add-header\r\n"))
    assert code == 250
    [stored] = stored_messages(spool)
    lines = header_lines(stored)
    assert lines.count("X-Spam: Yes") == 1, lines
    assert any(l.startswith("X-Spam-Score: ") for l in lines), lines

    # Clean mail with a forged X-Spam: Yes (and score): both removed, ours added, not marked.
    code, _ = deliver(server, mail("X-Spam: Yes\r\nX-Spam-Score: -100\r\n"))
    assert code == 250
    wait_until(lambda: len(spool.keys("spool/")) == 2, what="two messages")
    clean = [m for m in stored_messages(spool) if m != stored][0]
    lines = header_lines(clean)
    assert not any(l.lower().startswith("x-spam:") for l in lines), lines
    assert "X-Spam-Score: -100" not in lines
    scores = [l for l in lines if l.startswith("X-Spam-Score:")]
    assert len(scores) == 1 and scores[0] != "X-Spam-Score: -100", scores

    server.process.stop()
    log = server.log()
    assert emf_totals(log, "SpamRejected") == 1
    assert emf_totals(log, "FilterUnavailable") == 0


def test_rspamd_down_mail_still_delivered_in_bounded_time(filtered, spool):
    server, r = filtered(INGRESS_RSPAMD_TIMEOUT="2s")
    assert deliver(server, mail())[0] == 250, "a first message opens a pooled connection"
    r.stop()
    started = time.monotonic()
    assert deliver(server, mail())[0] == 250
    assert time.monotonic() - started < 10
    wait_until(lambda: len(spool.keys("spool/")) == 2, what="two messages")
    unchecked = [m for m in stored_messages(spool) if b"X-Spam-Score" not in m]
    assert len(unchecked) == 1, "delivered unchecked: no score"
    server.process.stop()
    assert emf_totals(server.log(), "FilterUnavailable") == 1


def test_rspamd_down_with_tempfail(filtered, spool):
    server, r = filtered(INGRESS_RSPAMD_FAILURE="tempfail", INGRESS_RSPAMD_TIMEOUT="2s")
    r.stop()
    code, text = deliver(server, mail())
    assert code == 451 and text.startswith("4.7.1"), (code, text)
    assert spool.keys("") == []


def rspamd_lengths(r):
    """{queue id: message length} of every task rspamd logged."""
    log = r.process.log_text()
    return {m[0]: int(m[1]) for m in re.findall(r"qid: <(\w+)>.*?len: (\d+)", log)}


def test_rspamd_checks_a_20mb_streamed_message_too(filtered, spool):
    """No size-based bypass: a message far larger than a part is streamed to S3, read back and
    sent to rspamd whole — rspamd's own log gives the length it scanned — and its verdict holds:
    a refusal leaves nothing behind, a mark is applied to the stored object's header."""
    server, r = filtered(INGRESS_MAX_MESSAGE_SIZE=str(30 * 1024 * 1024), INGRESS_RSPAMD_TIMEOUT="60s")
    line = "The minutes of today's meeting, at some length, for a message far larger than a part.\r\n"
    padding = line * (20 * 1000 * 1000 // len(line))
    code, text = deliver(server, mail("X-Test-Action: soft-reject\r\n", body=padding))
    assert code == 451 and text.startswith("4.7.1"), (code, text)
    assert spool.keys("") == [] and spool.counts()["visible"] == 0
    assert spool.s3.list_multipart_uploads(Bucket=spool.bucket).get("Uploads", []) == []
    [scanned] = rspamd_lengths(r).values()
    assert scanned > 20 * 1000 * 1000, scanned

    code, text = deliver(server, mail("X-Test-Action: add-header\r\n", body=padding))
    assert code == 250
    [stored] = stored_messages(spool)
    lines = header_lines(stored)
    assert lines.count("X-Spam: Yes") == 1 and any(l.startswith("X-Spam-Score: ") for l in lines), lines
    assert stored.endswith(padding.encode() + b"\r\n"), "the body is stored as sent"
    queue_id = text.rsplit(" ", 1)[1]
    added = sum(len(l) + 2 for l in lines if l.startswith(("X-Spam: ", "X-Spam-Score: ")))
    assert rspamd_lengths(r)[queue_id] == len(stored) - added, "rspamd saw the whole message as received"
