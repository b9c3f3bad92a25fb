"""The relay end to end over real parts: jobs put straight into a LocalStack bucket + queue (no
ingress), `relay poll` resolving through a real DNS server on loopback and delivering to real SMTP
servers (aiosmtpd capture, Postfix smtp-sink) on their own 127.0.x.y addresses.
"""

import email
import email.policy
import json
import time
import uuid

import pytest

from harness import TRANSPARENCY_MESSAGE, PrivateCa, message_key, new_ulid, wait_until

SENDER = "alice@example.org"

MESSAGE = TRANSPARENCY_MESSAGE


def new_queue_id():
    return new_ulid()


def make_job(spool, domain, rcpts, sender=SENDER, message=MESSAGE, **fields):
    """Store `message` and return a job for it (not yet enqueued)."""
    qid = new_queue_id()
    key = message_key(qid)
    spool.put(key, message)
    job = {
        "v": 2, "job_id": new_ulid(), "jobs": 1, "queue_id": qid, "message_key": key, "sender": sender, "domain": domain,
        "recipients": [{"address": r} if isinstance(r, str) else r for r in rcpts],
        "attempt": 0, "first_seen": int(time.time()), "not_before": 0,
        "body": "eight_bit_mime", "size": len(message), "received_from": "client.example.org ([192.0.2.1])",
    }
    job.update(fields)
    return job


def enqueue(spool, domain, rcpts, **kw):
    job = make_job(spool, domain, rcpts, **kw)
    spool.send_job(job)
    return job


def start_relay(start_process, spool, dns=None, port=25, **env):
    settings = {
        **spool.env,
        "RELAY_MX_PORT": str(port),
        "RELAY_HELO_NAME": "relay.example.test",
        "RELAY_POLL_WAIT": "1s",
        "RELAY_RETRY_SCHEDULE": "1s",
        "RELAY_CONNECT_TIMEOUT": "5s",
        "RELAY_COMMAND_TIMEOUT": "20s",
    }
    if dns is not None:
        settings["RELAY_DNS_SERVERS"] = str(dns)
    settings.update(env)
    relay = start_process("relay", "poll", env=settings)
    relay.wait_log(r'"polling"', timeout=20)
    return relay


def queue_drained(spool):
    return spool.counts() == {"visible": 0, "in_flight": 0, "delayed": 0}


def log_lines(relay):
    out = []
    for line in relay.log_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


@pytest.fixture
def mail_world(dns_server, capture_server, loopback_hosts):
    """example.test's MX and the sender's domain example.org's MX (where bounces arrive), each a
    capture server on its own loopback address, on one port (RELAY_MX_PORT)."""

    def build(replies=(), extra_records=()):
        (ip_mx, ip_sender), port = loopback_hosts(2)
        mx = capture_server(ip_mx, port, replies)
        sender_mx = capture_server(ip_sender, port)
        dns = dns_server(
            "example.test. MX 10 mx.example.test.", f"mx.example.test. A {ip_mx}",
            "example.org. MX 10 mx.example.org.", f"mx.example.org. A {ip_sender}",
            *extra_records,
        )
        return mx, sender_mx, dns, port

    return build


def bounce_of(sender_mx, timeout=60):
    [bounce] = sender_mx.wait_for(1, timeout=timeout)
    assert bounce["mail_from"] in ("", "<>"), bounce  # the null reverse-path
    assert bounce["rcpt_tos"] == [SENDER]
    text = bounce["data"].decode("utf-8", "replace")
    assert 'multipart/report; report-type="delivery-status"' in text, text
    assert "Content-Type: message/delivery-status" in text
    assert "Reporting-MTA: dns; relay.example.test" in text
    return text


# ---------------------------------------------------------------------------------------------


def state_of(spool, qid, domain="example.test"):
    """The job's state object, parsed."""
    return json.loads(spool.get(f"state/{qid}/{domain}.json"))


def test_delivered_byte_identical_completed_by_deleting_the_message_and_a_status_sent_line(
        mail_world, spool, start_process):
    mx, _, dns, port = mail_world()
    job = enqueue(spool, "example.test", ["bob@example.test"])
    relay = start_relay(start_process, spool, dns, port)
    [m] = mx.wait_for(1, timeout=60)
    assert m["mail_from"] == SENDER
    assert m["rcpt_tos"] == ["bob@example.test"]
    assert m["data"] == MESSAGE, "lone dot, dot lines and 8-bit text arrive byte-identical"
    assert "BODY=8BITMIME" in [o.upper() for o in m["mail_options"]]
    wait_until(lambda: queue_drained(spool), 30, what="empty queue")
    wait_until(lambda: spool.keys("spool/") == [], 10, what="the sole job deletes its message")
    assert spool.keys("state/") == [] and spool.keys("records/") == [], "the free path writes nothing"
    sent = wait_until(lambda: [l for l in log_lines(relay) if l.get("status") == "sent"], 10, what="status=sent")
    assert sent[0]["queue_id"] == job["queue_id"]
    assert sent[0]["recipient"] == "bob@example.test"
    assert sent[0]["relay"] == "mx.example.test"
    assert sent[0]["addr"] == f"{mx.ip}:{port}"
    assert sent[0]["reply"].startswith("250")


def test_8bit_body_to_a_server_without_8bitmime_arrives_as_quoted_printable(dns_server, smtp_sink, loopback_hosts,
                                                                            spool, start_process):
    (ip,), port = loopback_hosts(1)
    sink = smtp_sink(ip, port, options=("-8",))  # no 8BITMIME in its EHLO reply
    dns = dns_server("example.test. MX 10 mx.example.test.", f"mx.example.test. A {ip}")
    enqueue(spool, "example.test", ["bob@example.test"])
    relay = start_relay(start_process, spool, dns, port)
    sink.wait_for(1, timeout=60)
    [m] = sink.messages()
    assert "BODY=8BITMIME" not in m["mail_args"].upper(), m
    data = m["data"]
    assert all(b < 0x80 for b in data), "RFC 6152: only 7-bit data to a server without 8BITMIME"
    assert b"Content-Transfer-Encoding: quoted-printable" in data and b"8bit" not in data
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    original = email.message_from_bytes(MESSAGE, policy=email.policy.default)
    text = parsed.get_content().replace("\r\n", "\n")
    assert text == original.get_content().replace("\r\n", "\n"), "the text decodes to what was sent"
    assert parsed["Subject"] == original["Subject"]
    relay.wait_log(r'8-bit body converted to 7-bit')


def test_same_job_delivered_twice_by_sqs_reaches_the_server_once(dns_server, smtp_sink, loopback_hosts, spool,
                                                                start_process):
    (ip,), port = loopback_hosts(1)
    sink = smtp_sink(ip, port)
    dns = dns_server("example.test. MX 10 mx.example.test.", f"mx.example.test. A {ip}")
    job = make_job(spool, "example.test", ["bob@example.test", "carol@example.test"])
    spool.send_job(job)
    spool.send_job(job)  # SQS at-least-once: the same job twice
    start_relay(start_process, spool, dns, port)
    sink.wait_for(1, timeout=60)
    wait_until(lambda: queue_drained(spool), 30, what="both copies handled")
    time.sleep(1)
    assert sink.count() == 1
    [m] = sink.messages()
    assert "bob@example.test" in str(m["rcpt_args"]) and "carol@example.test" in str(m["rcpt_args"])


def test_4xx_then_success_after_retry(mail_world, spool, start_process):
    mx, sender_mx, dns, port = mail_world({"bob@example.test#1": "450 4.2.0 mailbox busy"})
    job = enqueue(spool, "example.test", ["bob@example.test"])
    relay = start_relay(start_process, spool, dns, port)
    [m] = mx.wait_for(1, timeout=60)
    assert m["rcpt_tos"] == ["bob@example.test"]
    assert m["data"] == MESSAGE
    replies = [e["reply"][:3] for e in mx.events() if e.get("event") == "rcpt"]
    assert replies == ["450", "250"], mx.events()
    statuses = [l["status"] for l in log_lines(relay) if l.get("queue_id") == job["queue_id"] and "status" in l]
    assert statuses == ["deferred", "sent"], statuses
    deferred = next(l for l in log_lines(relay) if l.get("status") == "deferred")
    assert deferred["delay"] == 1 and deferred["attempt"] == 1
    assert "450 4.2.0 mailbox busy" in deferred["reply"]
    wait_until(lambda: queue_drained(spool), 30, what="empty queue")
    assert sender_mx.messages() == [], "no delay notice or bounce for a recovered deferral"


def test_5xx_bounces_to_the_sender_domain(mail_world, spool, start_process):
    mx, sender_mx, dns, port = mail_world({"bob@example.test": "550 5.1.1 no such user"})
    orcpt = {"address": "bob@example.test", "orcpt": "rfc822;Bob@Example.TEST"}
    job = enqueue(spool, "example.test", [orcpt], dsn={"envid": "ENV-42"})
    start_process_relay = start_relay(start_process, spool, dns, port)
    text = bounce_of(sender_mx)
    for field in ("Final-Recipient: rfc822; bob@example.test", "Original-Recipient: rfc822; Bob@Example.TEST",
                  "Action: failed", "Status: 5.1.1", "Remote-MTA: dns; mx.example.test",
                  "Diagnostic-Code: smtp; 550 5.1.1 no such user", "Original-Envelope-Id: ENV-42",
                  "Content-Type: message/rfc822"):
        assert field in text, f"{field!r} missing in\n{text}"
    assert "Grüße aus Köln" in text, "the whole message is returned by default"
    assert mx.messages() == []
    state = wait_until(lambda: spool.keys(f"state/{job['queue_id']}/") and state_of(spool, job["queue_id"]), 10,
                       what="state written")
    assert [(r["address"], r["state"]) for r in state["recipients"]] == [("bob@example.test", "bounced")]
    bounced = [l for l in log_lines(start_process_relay) if l.get("status") == "bounced"]
    assert bounced and bounced[0]["recipient"] == "bob@example.test"


@pytest.mark.parametrize("domain,records,status", [
    ("null.test", ["null.test. MX 0 ."], "5.1.10"),
    ("nx.test", [], "5.1.2"),
])
def test_null_mx_and_nxdomain_bounce_without_smtp(mail_world, spool, start_process, domain, records, status):
    mx, sender_mx, dns, port = mail_world(extra_records=records)
    enqueue(spool, domain, [f"someone@{domain}"], dsn={"ret": "hdrs"})
    start_relay(start_process, spool, dns, port)
    text = bounce_of(sender_mx)
    assert f"Final-Recipient: rfc822; someone@{domain}" in text
    assert f"Status: {status}" in text, text
    assert "Content-Type: text/rfc822-headers" in text and "Grüße" not in text, "RET=HDRS: headers only"
    assert mx.messages() == []


def test_first_mx_refuses_connections_second_mx_gets_it(dns_server, capture_server, loopback_hosts, spool,
                                                        start_process):
    (ip1, ip2), port = loopback_hosts(2)  # nothing listens on ip1
    mx2 = capture_server(ip2, port)
    dns = dns_server("example.test. MX 10 mx1.example.test.", f"mx1.example.test. A {ip1}",
                     "example.test. MX 20 mx2.example.test.", f"mx2.example.test. A {ip2}")
    enqueue(spool, "example.test", ["bob@example.test"])
    relay = start_relay(start_process, spool, dns, port)
    [m] = mx2.wait_for(1, timeout=60)
    assert m["data"] == MESSAGE
    assert any(l.get("relay") == "mx2.example.test" and l.get("status") == "sent" for l in log_lines(relay))


def test_implicit_mx_from_a_record(dns_server, capture_server, loopback_hosts, spool, start_process):
    (ip,), port = loopback_hosts(1)
    mx = capture_server(ip, port)
    dns = dns_server(f"implicit.test. A {ip}")  # no MX: NODATA, so the A record is the MX
    enqueue(spool, "implicit.test", ["bob@implicit.test"])
    start_relay(start_process, spool, dns, port)
    [m] = mx.wait_for(1, timeout=60)
    assert m["rcpt_tos"] == ["bob@implicit.test"]


def test_250_450_550_one_retried_one_bounced_one_done_none_twice(mail_world, spool, start_process):
    mx, sender_mx, dns, port = mail_world({
        "later@example.test#1": "450 4.2.0 try later",
        "no@example.test": "550 5.1.1 no such user",
    })
    job = enqueue(spool, "example.test", ["ok@example.test", "later@example.test", "no@example.test"])
    start_relay(start_process, spool, dns, port)
    msgs = mx.wait_for(2, timeout=60)
    wait_until(lambda: queue_drained(spool), 30, what="empty queue")
    text = bounce_of(sender_mx)
    time.sleep(1)
    msgs = mx.messages()
    assert [m["rcpt_tos"] for m in msgs] == [["ok@example.test"], ["later@example.test"]]
    assert "Final-Recipient: rfc822; no@example.test" in text
    assert "later@example.test" not in text and "ok@example.test" not in text
    assert len(sender_mx.messages()) == 1, "one bounce"
    state = state_of(spool, job["queue_id"])
    got = [(r["address"], r["state"], r["attempts"]) for r in state["recipients"]]
    assert got == [("ok@example.test", "sent", 1), ("later@example.test", "sent", 2), ("no@example.test", "bounced", 1)]
    assert state["job_id"] is None


def test_v1_job_in_flight_during_an_upgrade_honours_its_legacy_record(mail_world, spool, start_process):
    mx, _, dns, port = mail_world()
    job = make_job(spool, "example.test", ["done@example.test", "new@example.test"])
    for f in ("job_id", "jobs"):
        del job[f]
    job["v"] = 1
    spool.put(f"records/{job['queue_id']}/done@example.test", b"sent")  # an old relay delivered it
    spool.send_job(job)
    start_relay(start_process, spool, dns, port)
    [m] = mx.wait_for(1, timeout=60)
    assert m["rcpt_tos"] == ["new@example.test"]
    wait_until(lambda: queue_drained(spool), 30, what="empty queue")
    assert spool.keys("spool/") == [job["message_key"]], "a v1 job may share its message: kept"
    assert [r["state"] for r in state_of(spool, job["queue_id"])["recipients"]] == ["sent", "sent"]


@pytest.fixture(scope="module")
def private_ca(tmp_path_factory):
    """A private CA and a server certificate it signed for 127.0.0.1 / localhost:
    {"ca": ca.pem, "cert": cert.pem, "key": key.pem} (the smarthost's PKI)."""
    ca = PrivateCa(tmp_path_factory.mktemp("pki"))
    cert, key = ca.issue(["localhost"], ["127.0.0.1"])
    return {"ca": ca.ca_path, "cert": cert, "key": key}


def test_smarthost_with_auth_over_starttls(capture_server, spool, start_process, private_ca):
    host = capture_server(tls=(private_ca["cert"], private_ca["key"]), auth=["relayuser:s3cret"])
    enqueue(spool, "example.test", ["bob@example.test"])
    start_relay(start_process, spool, RELAY_SMARTHOST=host.addr, RELAY_SMARTHOST_USER="relayuser",
                RELAY_SMARTHOST_PASSWORD="s3cret", RELAY_SMARTHOST_TLS="starttls",
                RELAY_SMARTHOST_CA=str(private_ca["ca"]))
    [m] = host.wait_for(1, timeout=60)
    assert m["tls"]
    assert m["data"] == MESSAGE
    # The relay only sends MAIL after a 235 to AUTH; the server saw AUTH inside TLS. (capture.py's
    # sidecar leaves auth_user empty because its authenticator returns no auth_data.)
    session = host.process.log_text()
    assert session.index("STARTTLS") < session.index("AUTH PLAIN") < session.index("MAIL FROM")


def test_smarthost_certificate_is_verified_before_credentials_are_sent(capture_server, spool, start_process,
                                                                      tls_cert):
    host = capture_server(tls=tls_cert, auth=["relayuser:s3cret"])  # self-signed, not from a trusted CA
    enqueue(spool, "example.test", ["bob@example.test"])
    relay = start_relay(start_process, spool, RELAY_SMARTHOST=host.addr, RELAY_SMARTHOST_USER="relayuser",
                        RELAY_SMARTHOST_PASSWORD="s3cret", RELAY_SMARTHOST_TLS="starttls", RELAY_RETRY_SCHEDULE="1h")
    [line] = wait_until(lambda: [l for l in log_lines(relay) if l.get("status")], 30, what="an outcome")
    assert line["status"] == "deferred" and "TLS handshake failed" in line["reply"], line
    assert "AUTH" not in host.process.log_text().split("STARTTLS", 1)[1], "no credentials to an unverified host"
    assert host.messages() == []


def test_required_tls_to_an_mx_with_a_self_signed_certificate(dns_server, capture_server, loopback_hosts, spool, start_process):
    (ip,), port = loopback_hosts(1)
    mx = capture_server(ip, port, tls=True)
    dns = dns_server("example.test. MX 10 mx.example.test.", f"mx.example.test. A {ip}")
    enqueue(spool, "example.test", ["bob@example.test"])
    relay = start_relay(start_process, spool, dns, port, RELAY_TLS="required")
    [m] = mx.wait_for(1, timeout=60)
    assert m["tls"], "self-signed certificate accepted, session encrypted"
    assert any(l.get("status") == "sent" and l.get("tls") is True for l in log_lines(relay))


def test_unreadable_job_goes_to_the_dlq_and_the_rest_of_the_batch_is_delivered(mail_world, spool, start_process):
    mx, _, dns, port = mail_world()
    spool.sqs.set_queue_attributes(QueueUrl=spool.queue_url, Attributes={"VisibilityTimeout": "1"})
    spool.send_job("this is not a job")
    enqueue(spool, "example.test", ["bob@example.test"])
    start_relay(start_process, spool, dns, port)
    mx.wait_for(1, timeout=60)
    dead = wait_until(lambda: spool.peek(dlq=True), 60, what="poison job in the DLQ")
    assert [d["body"] for d in dead] == ["this is not a job"]
    wait_until(lambda: queue_drained(spool), 30, what="empty queue")
    assert len(mx.messages()) == 1


def test_dsn_parameters_go_to_a_dsn_capable_mx_which_then_owns_success_reports(
        dns_server, smtp_sink, capture_server, loopback_hosts, spool, start_process):
    (ip_mx, ip_sender), port = loopback_hosts(2)
    sink = smtp_sink(ip_mx, port)  # advertises DSN
    sender_mx = capture_server(ip_sender, port)
    dns = dns_server("example.test. MX 10 mx.example.test.", f"mx.example.test. A {ip_mx}",
                     "example.org. MX 10 mx.example.org.", f"mx.example.org. A {ip_sender}")
    rcpt = {"address": "bob@example.test", "orcpt": "rfc822;Bob+tag@Example.TEST",
            "notify": {"success": True, "failure": True, "delay": False}}
    enqueue(spool, "example.test", [rcpt], dsn={"ret": "hdrs", "envid": "QQ 1"})
    start_relay(start_process, spool, dns, port)
    sink.wait_for(1, timeout=60)
    [m] = sink.messages()
    assert "RET=HDRS" in m["mail_args"] and "ENVID=QQ+201" in m["mail_args"], m
    assert m["rcpt_args"] == ["<bob@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Bob+2Btag@Example.TEST"], m
    wait_until(lambda: queue_drained(spool), 30, what="empty queue")
    assert sender_mx.messages() == [], "the DSN-capable MX reports success, not the relay"


def test_notify_success_to_a_server_without_dsn_gets_a_relayed_report(mail_world, spool, start_process):
    mx, sender_mx, dns, port = mail_world()  # aiosmtpd: no DSN extension
    rcpt = {"address": "bob@example.test", "notify": {"success": True, "failure": True, "delay": False}}
    enqueue(spool, "example.test", [rcpt])
    start_relay(start_process, spool, dns, port)
    [m] = mx.wait_for(1, timeout=60)
    assert m["rcpt_options"] == [], "no NOTIFY to a server that did not offer DSN"
    text = bounce_of(sender_mx)
    assert "Action: relayed" in text and "Status: 2.0.0" in text, text
    assert "Content-Type: text/rfc822-headers" in text


def test_delay_warning_once_then_delivery(mail_world, spool, start_process):
    mx, sender_mx, dns, port = mail_world({"bob@example.test#2": "451 4.3.0 greylisted"})
    enqueue(spool, "example.test", ["bob@example.test"], first_seen=int(time.time()) - 7200)
    start_relay(start_process, spool, dns, port, RELAY_DELAY_WARNING="1h")
    [m] = mx.wait_for(1, timeout=60)
    assert m["rcpt_tos"] == ["bob@example.test"]
    text = bounce_of(sender_mx)
    assert "Action: delayed" in text and "Status: 4.3.0" in text and "Will-Retry-Until:" in text, text
    wait_until(lambda: queue_drained(spool), 30, what="empty queue")
    assert len(sender_mx.messages()) == 1, "the delay notice is sent once, not per retry"


def test_past_the_queue_lifetime_a_deferral_becomes_a_bounce(mail_world, spool, start_process):
    mx, sender_mx, dns, port = mail_world({"bob@example.test": "451 4.3.0 still busy"})
    enqueue(spool, "example.test", ["bob@example.test"], first_seen=int(time.time()) - 6 * 86400)
    relay = start_relay(start_process, spool, dns, port, RELAY_QUEUE_LIFETIME="5d")
    text = bounce_of(sender_mx)
    assert "Action: failed" in text and "Diagnostic-Code: smtp; 451 4.3.0 still busy" in text, text
    wait_until(lambda: queue_drained(spool), 30, what="no retry left")
    assert any(l.get("status") == "bounced" and "expired" in l.get("reply", "") for l in log_lines(relay))


@pytest.fixture
def implicit_tls_server(private_ca, free_port):
    """An aiosmtpd server speaking TLS from the first byte (port 465 style) with AUTH PLAIN/LOGIN."""
    import ssl

    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    class Sink:
        def __init__(self):
            self.messages, self.logins = [], []

        async def handle_DATA(self, server, session, envelope):
            self.messages.append({"data": envelope.original_content, "rcpt_tos": list(envelope.rcpt_tos)})
            return "250 2.0.0 ok"

    sink = Sink()

    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (b"u", b"p")
        sink.logins.append((mechanism, auth_data.login if ok else None))
        return AuthResult(success=ok)

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(private_ca["cert"], private_ca["key"])
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port, ssl_context=ctx, authenticator=authenticate,
                            auth_required=True, server_hostname="localhost",
                            # aiosmtpd only counts STARTTLS as TLS; this connection is TLS from the start.
                            auth_require_tls=False)
    controller.start()
    sink.addr = f"127.0.0.1:{port}"
    yield sink
    controller.stop()


def test_smarthost_over_implicit_tls_with_auth(implicit_tls_server, spool, start_process, private_ca):
    enqueue(spool, "example.test", ["bob@example.test"])
    start_relay(start_process, spool, RELAY_SMARTHOST=implicit_tls_server.addr, RELAY_SMARTHOST_TLS="implicit",
                RELAY_SMARTHOST_USER="u", RELAY_SMARTHOST_PASSWORD="p", RELAY_SMARTHOST_CA=str(private_ca["ca"]))
    wait_until(lambda: implicit_tls_server.messages, 60, what="delivery over implicit TLS")
    assert implicit_tls_server.messages[0]["data"] == MESSAGE
    assert implicit_tls_server.logins == [("PLAIN", b"u")]


def test_servfail_is_temporary_and_retried(dns_server, spool, start_process):
    dns = dns_server("servfail.test. SERVFAIL")
    job = enqueue(spool, "servfail.test", ["bob@servfail.test"])
    relay = start_relay(start_process, spool, dns)
    deferred = wait_until(lambda: [l for l in log_lines(relay) if l.get("status") == "deferred"], 30, what="deferral")
    assert deferred[0]["queue_id"] == job["queue_id"] and "4.4.3" in deferred[0]["reply"], deferred
    assert not [l for l in log_lines(relay) if l.get("status") in ("bounced", "sent")]
    retried = wait_until(lambda: [l for l in log_lines(relay) if l.get("status") == "deferred"
                                  and l.get("attempt", 0) >= 2], 30, what="a second attempt")
    assert retried[0]["queue_id"] == job["queue_id"]


def test_bare_lf_and_bare_cr_leave_as_crlf(mail_world, spool, start_process):
    mx, _, dns, port = mail_world()
    raw = b"Subject: line ends\n\nbare lf\nbare cr\rcrlf\r\n.\nend"
    enqueue(spool, "example.test", ["bob@example.test"], message=raw, body="seven_bit")
    start_relay(start_process, spool, dns, port)
    [m] = mx.wait_for(1, timeout=60)
    assert m["data"] == b"Subject: line ends\r\n\r\nbare lf\r\nbare cr\r\ncrlf\r\n.\r\nend\r\n"


def test_usage_and_bad_configuration_exit_2_naming_the_variable(start_process, spool, tmp_path):
    usage = start_process("relay", env=spool.env, name="relay-usage")
    assert usage.wait(30) == 2
    assert "usage: relay poll" in usage.log_text()
    bad = start_process("relay", "poll", env={**spool.env, "RELAY_TLS": "sometimes"}, name="relay-bad")
    assert bad.wait(30) == 2
    assert "relay: RELAY_TLS: expected opportunistic or required" in bad.log_text()
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    bad_ca = start_process("relay", "poll", name="relay-bad-ca",
                           env={**spool.env, "RELAY_SMARTHOST": "127.0.0.1:465", "RELAY_SMARTHOST_CA": str(junk)})
    assert bad_ca.wait(30) == 2
    assert "relay: RELAY_SMARTHOST_CA: " in bad_ca.log_text() and "no PEM certificate" in bad_ca.log_text()


def test_sigterm_stops_polling_with_exit_0(spool, start_process):
    relay = start_relay(start_process, spool)
    t0 = time.monotonic()
    assert relay.stop(timeout=15) == 0
    assert time.monotonic() - t0 < 5, "a waiting long poll is abandoned at once"
    assert "stopping on signal" in relay.log_text()


@pytest.fixture
def lambda_runtime_api(free_port):
    """A Lambda Runtime API on loopback: .invoke(event) hands an event to the function and returns
    its response body (what Lambda would return to the SQS event source mapping)."""
    import http.server
    import queue
    import threading

    pending, results = queue.Queue(), queue.Queue()

    class Api(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # /2018-06-01/runtime/invocation/next, long-polled by the function
            request_id, event = pending.get()
            body = json.dumps(event).encode()
            self.send_response(200)
            for k, v in {"Lambda-Runtime-Aws-Request-Id": request_id,
                         "Lambda-Runtime-Deadline-Ms": str(int(time.time() * 1000) + 60_000),
                         "Lambda-Runtime-Invoked-Function-Arn": "arn:aws:lambda:us-east-1:000000000000:function:relay",
                         "Content-Type": "application/json", "Content-Length": str(len(body))}.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):  # .../invocation/<id>/response or /error
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            results.put((self.path.rsplit("/", 1)[-1], json.loads(body or b"null")))
            self.send_response(202)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Api)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()

    class Runtime:
        addr = f"127.0.0.1:{port}"

        def invoke(self, event, timeout=60):
            pending.put((uuid.uuid4().hex, event))
            return results.get(timeout=timeout)

    yield Runtime()
    server.shutdown()


def test_lambda_handler_reports_only_the_unreadable_record(mail_world, spool, start_process, lambda_runtime_api):
    mx, _, dns, port = mail_world()
    good = make_job(spool, "example.test", ["bob@example.test"])
    start_process("relay", env={
        **spool.env, "RELAY_DNS_SERVERS": str(dns), "RELAY_MX_PORT": str(port), "RELAY_HELO_NAME": "relay.example.test",
        "AWS_LAMBDA_RUNTIME_API": lambda_runtime_api.addr, "AWS_LAMBDA_FUNCTION_NAME": "relay",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128", "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
    }, name="relay-lambda")
    record = {"eventSource": "aws:sqs", "awsRegion": "us-east-1", "attributes": {}, "messageAttributes": {}}
    event = {"Records": [{**record, "messageId": "m-bad", "receiptHandle": "h1", "body": "not a job"},
                         {**record, "messageId": "m-good", "receiptHandle": "h2", "body": json.dumps(good)}]}
    kind, body = lambda_runtime_api.invoke(event)
    assert kind == "response", body
    assert body == {"batchItemFailures": [{"itemIdentifier": "m-bad"}]}
    [m] = mx.wait_for(1, timeout=10)
    assert m["data"] == MESSAGE
    # The process is frozen between invocations: the invocation closed its session (QUIT).
    wait_until(lambda: [s for s in mx.sessions() if s["closed"]], 3, what="the session closed with the invocation")


@pytest.mark.parametrize("sink_options,env,expect", [
    (["-r", "."], {}, "4"),                                            # 4xx after the end of DATA
    (["-w", "3"], {"RELAY_COMMAND_TIMEOUT": "1s"}, "timed out"),       # replies too slow
])
def test_data_4xx_and_command_timeouts_defer(dns_server, smtp_sink, loopback_hosts, spool, start_process,
                                             sink_options, env, expect):
    (ip,), port = loopback_hosts(1)
    smtp_sink(ip, port, sink_options)
    dns = dns_server("example.test. MX 10 mx.example.test.", f"mx.example.test. A {ip}")
    job = enqueue(spool, "example.test", ["bob@example.test"])
    relay = start_relay(start_process, spool, dns, port, RELAY_RETRY_SCHEDULE="1h", **env)
    [line] = wait_until(lambda: [l for l in log_lines(relay) if l.get("status")], 30, what="an outcome")
    assert line["status"] == "deferred" and line["delay"] == 3600, line
    assert expect in line["reply"], line
    # Until the relay deletes the received job, peeking sees it next to its retry.
    [retry] = wait_until(lambda: [j for j in spool.receive_jobs() if j["attempt"] == 1], 10, what="the retry job")
    assert retry["not_before"] >= job["first_seen"] + 3600
    wait_until(lambda: len(spool.receive_jobs()) == 1, 10, what="the received job deleted")
    assert [r["address"] for r in retry["recipients"]] == ["bob@example.test"]
    assert retry["recipients"][0]["last_reply"] == line["reply"]


def test_dns_timeout_is_temporary(dns_server, spool, start_process):
    dns = dns_server("slow.test. TIMEOUT")
    enqueue(spool, "slow.test", ["bob@slow.test"])
    relay = start_relay(start_process, spool, dns, RELAY_RETRY_SCHEDULE="1h")
    [line] = wait_until(lambda: [l for l in log_lines(relay) if l.get("status")], 120, what="an outcome")
    assert line["status"] == "deferred" and "4.4.3" in line["reply"], line


def test_a_host_with_a_dead_ipv4_and_a_live_ipv6_address(dns_server, capture_server, loopback_hosts, spool,
                                                         start_process):
    (dead_ip,), port = loopback_hosts(1)  # nothing listens on the IPv4 address
    mx6 = capture_server("::1", port)
    dns = dns_server("example.test. MX 10 mx.example.test.", f"mx.example.test. A {dead_ip}",
                     "mx.example.test. AAAA ::1")
    enqueue(spool, "example.test", ["bob@example.test"])
    relay = start_relay(start_process, spool, dns, port)
    [m] = mx6.wait_for(1, timeout=60)
    assert m["data"] == MESSAGE
    [sent] = [l for l in log_lines(relay) if l.get("status") == "sent"]
    assert sent["addr"] == f"[::1]:{port}"


def test_a_slow_delivery_keeps_its_job_hidden_from_a_second_relay(dns_server, smtp_sink, loopback_hosts, spool,
                                                                  start_process):
    (ip,), port = loopback_hosts(1)
    sink = smtp_sink(ip, port, ["-w", "6"])  # the transaction takes about 6 s
    dns = dns_server("example.test. MX 10 mx.example.test.", f"mx.example.test. A {ip}")
    spool.sqs.set_queue_attributes(QueueUrl=spool.queue_url, Attributes={"VisibilityTimeout": "2"})
    enqueue(spool, "example.test", ["bob@example.test"])
    first = start_relay(start_process, spool, dns, port)
    wait_until(lambda: spool.counts()["in_flight"] == 1, 10, what="the job taken")
    start_relay(start_process, spool, dns, port)  # would take the job too once it is visible again
    sink.wait_for(1, timeout=60)
    wait_until(lambda: queue_drained(spool), 30, what="empty queue")
    time.sleep(3)
    assert sink.count() == 1, "delivered twice: the second relay saw a job still in delivery"
    assert any(l.get("status") == "sent" for l in log_lines(first))
