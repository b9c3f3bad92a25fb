"""Checks of the test harness itself (no relay binaries needed): if these fail, the fixtures lie."""

import json
import smtplib
import socket
import sys
import time

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.resolver
import pytest

from harness import wait_until

ZONE = """
example.test.        MX 20 mx2.example.test.
example.test.        MX 10 mx1.example.test.
mx1.example.test.    A 127.0.0.2
mx2.example.test.    A 127.0.0.3
implicit.test.       A 127.0.0.4
null.test.           MX 0 .
servfail.test.       SERVFAIL
slow.test.           TIMEOUT
"""


def query(server, name, rdtype, tcp=False):
    q = dns.message.make_query(name, rdtype)
    send = dns.query.tcp if tcp else dns.query.udp
    return send(q, server.host, port=server.port, timeout=2)


def test_dns_server_answers_mx_a_null_mx_nodata_nxdomain_servfail(dns_server):
    server = dns_server(ZONE)
    assert server == f"127.0.0.1:{server.port}"

    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [server.host]
    resolver.port = server.port
    resolver.lifetime = 3
    mx = sorted((r.preference, str(r.exchange)) for r in resolver.resolve("example.test", "MX"))
    assert mx == [(10, "mx1.example.test."), (20, "mx2.example.test.")]
    assert [r.address for r in resolver.resolve("mx1.example.test", "A")] == ["127.0.0.2"]

    null = query(server, "null.test", "MX")
    assert null.rcode() == dns.rcode.NOERROR
    assert [(r.preference, str(r.exchange)) for r in null.answer[0]] == [(0, ".")]

    # Implicit MX: the name exists, MX gives NOERROR with no answer (NODATA) and an SOA.
    nodata = query(server, "implicit.test", "MX")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer and nodata.authority
    assert [r.address for r in resolver.resolve("implicit.test", "A")] == ["127.0.0.4"]
    # An A-only host has no AAAA: NODATA, not an error.
    aaaa = query(server, "mx1.example.test", "AAAA")
    assert aaaa.rcode() == dns.rcode.NOERROR and not aaaa.answer

    nx = query(server, "nowhere.test", "MX")
    assert nx.rcode() == dns.rcode.NXDOMAIN and nx.authority
    assert query(server, "servfail.test", "MX").rcode() == dns.rcode.SERVFAIL
    assert query(server, "a.b.servfail.test", "A").rcode() == dns.rcode.SERVFAIL
    with pytest.raises(dns.exception.Timeout):
        dns.query.udp(dns.message.make_query("slow.test", "MX"), server.host, port=server.port, timeout=0.5)

    assert query(server, "example.test", "MX", tcp=True).answer  # TCP too
    assert ("null.test.", "MX", "NOERROR 0 .") in server.queries()


def test_capture_server_keeps_exact_bytes_and_applies_reply_rules(capture_server):
    cap = capture_server(replies={"bad@example.test": "550 5.1.1 no such user",
                                  "later@example.test#1": "450 4.2.0 try later"})
    # 8-bit UTF-8, a line starting with a dot (dot-stuffed on the wire), CRLF kept.
    data = "Subject: héllo\r\nFrom: jörg@example.org\r\n\r\n.leading dot\r\n..two\r\nünïcode\r\n".encode()
    with smtplib.SMTP(cap.ip, cap.port, timeout=10) as s:
        code, ehlo = s.ehlo("client.test")
        assert code == 250 and b"8BITMIME" in ehlo and b"SMTPUTF8" in ehlo and b"AUTH" not in ehlo
        refused = s.sendmail("jörg@example.org", ["bob@example.test", "bad@example.test", "later@example.test"],
                             data, mail_options=["SMTPUTF8", "BODY=8BITMIME"])
        assert refused == {"bad@example.test": (550, b"5.1.1 no such user"),
                           "later@example.test": (450, b"4.2.0 try later")}
        assert s.sendmail("alice@example.org", ["later@example.test"], b"Subject: 2\r\n\r\nx\r\n") == {}

    first, second = cap.wait_for(2)
    assert first["data"] == data
    assert first["mail_from"] == "jörg@example.org"
    assert first["rcpt_tos"] == ["bob@example.test"]
    assert "SMTPUTF8" in first["mail_options"] and "BODY=8BITMIME" in first["mail_options"]
    assert first["helo"] == "client.test" and first["tls"] is False
    assert second["rcpt_tos"] == ["later@example.test"]
    replies = [(e.get("rcpt"), e["reply"][:3]) for e in cap.events() if e["event"] == "rcpt"]
    assert replies == [("bob@example.test", "250"), ("bad@example.test", "550"),
                       ("later@example.test", "450"), ("later@example.test", "250")]


def test_capture_server_data_reply_and_starttls(capture_server):
    cap = capture_server(replies=["DATA#1=451 4.3.0 try again"], tls=True)
    with smtplib.SMTP(cap.ip, cap.port, timeout=10) as s:
        s.starttls()  # self-signed: smtplib does not verify by default
        with pytest.raises(smtplib.SMTPDataError) as e:
            s.sendmail("a@example.org", ["b@example.test"], b"Subject: 1\r\n\r\nx\r\n")
        assert e.value.smtp_code == 451
        s.rset()
        s.sendmail("a@example.org", ["b@example.test"], b"Subject: 2\r\n\r\nx\r\n")
    [msg] = cap.wait_for(1)
    assert msg["tls"] is True and b"Subject: 2" in msg["data"]


def test_capture_server_counts_sessions_and_applies_ranges_and_close_after(capture_server):
    cap = capture_server(replies=["DATA#2-2=421 4.7.28 rate limited"], close_after=2)
    with smtplib.SMTP(cap.ip, cap.port, timeout=10) as a, smtplib.SMTP(cap.ip, cap.port, timeout=10) as b:
        a.sendmail("a@example.org", ["1@example.test"], b"Subject: 1\r\n\r\nx\r\n")
        with pytest.raises(smtplib.SMTPDataError) as refused:  # the 2nd end of DATA
            b.sendmail("a@example.org", ["2@example.test"], b"Subject: 2\r\n\r\nx\r\n")
        assert refused.value.smtp_code == 421
        a.sendmail("a@example.org", ["3@example.test"], b"Subject: 3\r\n\r\nx\r\n")  # the 3rd: accepted
        with pytest.raises(smtplib.SMTPServerDisconnected):  # a's 2nd message closed its session
            a.noop()
    with smtplib.SMTP(cap.ip, cap.port, timeout=10) as c:
        c.sendmail("a@example.org", ["4@example.test"], b"Subject: 4\r\n\r\nx\r\n")
    assert [m["rcpt_tos"] for m in cap.wait_for(3)] == [["1@example.test"], ["3@example.test"], ["4@example.test"]]
    data = [e["reply"][:3] for e in cap.events() if e["event"] == "data"]
    assert data == ["250", "421", "250", "250"]
    sessions = wait_until(lambda: all(s["closed"] for s in cap.sessions()) and cap.sessions(), 10, what="closes")
    assert len(sessions) == 3 and len({s["peer"] for s in sessions}) == 3
    assert cap.max_concurrent() == 2


def test_smtp_sink_accepts_and_injects_faults(smtp_sink, loopback_hosts):
    (ip,), port = loopback_hosts(1)
    sink = smtp_sink(ip, port)
    with smtplib.SMTP(ip, port, timeout=10) as s:
        s.sendmail("a@example.org", ["b@example.test", "c@example.test"], b"Subject: sink\r\n\r\n.dot\r\nbody\r\n")
    assert sink.wait_for(1) == 1
    [msg] = sink.messages()
    assert msg["mail_args"] == "<a@example.org>"
    assert msg["rcpt_args"] == ["<b@example.test>", "<c@example.test>"]
    assert msg["data"] == b"Subject: sink\n\n.dot\nbody\n"

    soft = smtp_sink(options=["-r", "RCPT"])
    with smtplib.SMTP(soft.ip, soft.port, timeout=10) as s:
        s.ehlo()
        s.mail("a@example.org")
        code, _ = s.rcpt("b@example.test")
        assert 400 <= code < 500
    assert soft.count() == 0


def test_loopback_hosts_share_one_free_port(loopback_hosts):
    ips, port = loopback_hosts(3)
    assert len(set(ips)) == 3 and "127.0.0.1" not in ips
    socks = []
    try:
        for ip in ips:
            s = socket.socket()
            s.bind((ip, port))
            s.listen()
            socks.append(s)
    finally:
        for s in socks:
            s.close()


def test_spool_creates_bucket_queue_dlq_and_sqs_delays(spool):
    spool.put("messages/x", b"hello\r\n")
    assert spool.objects("messages/") == {"messages/x": b"hello\r\n"}
    attrs = spool.sqs.get_queue_attributes(QueueUrl=spool.queue_url, AttributeNames=["RedrivePolicy"])["Attributes"]
    redrive = json.loads(attrs["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"].endswith(spool.dlq_url.rsplit("/", 1)[1])
    assert int(redrive["maxReceiveCount"]) == 5
    assert spool.queue_url.startswith(f"{spool.aws.endpoint}/queue/us-east-1/000000000000/")
    assert spool.env["SPOOL_QUEUE_URL"] == spool.queue_url and spool.env["SPOOL_BUCKET"] == spool.bucket

    sent = time.monotonic()
    spool.send_job({"v": 1, "hello": "world"}, delay=2)
    [peeked] = spool.peek()
    assert peeked["delayed"] and peeked["job"] == {"v": 1, "hello": "world"}
    assert spool.counts()["delayed"] == 1
    assert "Messages" not in spool.sqs.receive_message(QueueUrl=spool.queue_url, WaitTimeSeconds=0)
    got = wait_until(lambda: spool.sqs.receive_message(QueueUrl=spool.queue_url, WaitTimeSeconds=1).get("Messages"),
                     timeout=10, what="the delayed job")
    assert time.monotonic() - sent >= 1.9
    assert json.loads(got[0]["Body"]) == {"v": 1, "hello": "world"}
    assert spool.counts() == {"visible": 0, "in_flight": 1, "delayed": 0}
    assert spool.receive_jobs() == [{"v": 1, "hello": "world"}]  # peek still sees the in-flight job
    assert spool.receive_jobs(dlq=True) == []


def test_start_process_waits_for_port_and_stops(start_process, free_port):
    port = free_port()
    server = f"import socket,time; s=socket.socket(); s.bind(('127.0.0.1',{port})); s.listen(); print('up', flush=True); time.sleep(60)"
    proc = start_process(sys.executable, "-c", server, env={"EXTRA": "1"}, wait_port=port)
    assert proc.alive() and "up" in proc.log_text()
    assert proc.stop() == -15
