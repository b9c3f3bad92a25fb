"""The walking skeleton, end to end over real parts: a client nobody here wrote sends to the
ingress; the message goes through LocalStack S3 + SQS; `relay poll` finds the destination through
a real MX record on a loopback DNS server and delivers it to an independent SMTP server.
"""

import smtplib
import subprocess

import pytest

from harness import TRANSPARENCY_MESSAGE, split_auth_results, wait_until
from ingress_fixtures import ingress  # noqa: F401  (fixture)

BODY = TRANSPARENCY_MESSAGE


@pytest.fixture
def destination(dns_server, capture_server, loopback_hosts):
    """An MX for example.test on its own loopback address, served by a real DNS server."""
    (ip,), port = loopback_hosts(1)
    mx = capture_server(ip, port)
    dns = dns_server("example.test. MX 10 mx.example.test.", f"mx.example.test. A {ip}")
    return mx, dns, port


def start_relay(start_process, spool, dns, port):
    return start_process("relay", "poll", env={
        **spool.env,
        "RELAY_DNS_SERVERS": str(dns),
        "RELAY_MX_PORT": str(port),
        "RELAY_HELO_NAME": "relay.example.test",
        "RELAY_POLL_WAIT": "1s",
    })


def assert_delivered_with_one_received_header(message, body):
    data = message["data"]
    assert data.endswith(body), data
    trace = data[: len(data) - len(body)]
    # The client is untrusted, so the ingress judged the message: its results come first.
    results, trace = split_auth_results(trace, b"mx.ingress.test")
    assert results is not None and b"dmarc=none" in results, data
    assert trace.startswith(b"Received: from "), trace
    # Exactly one header field was added: one line that is not a continuation.
    starts = [line for line in trace.split(b"\r\n") if line and not line[:1].isspace()]
    assert len(starts) == 1, trace
    assert b"by mx.ingress.test" in trace
    assert trace.endswith(b"\r\n")


def test_curl_message_is_delivered_byte_exact_through_s3_sqs_and_mx(
        ingress, destination, spool, start_process, tmp_path):
    mx, dns, port = destination
    server = ingress()
    start_relay(start_process, spool, dns, port)
    msg = tmp_path / "msg.eml"
    msg.write_bytes(BODY)
    out = subprocess.run(
        ["curl", "-sS", "-v", f"smtp://{server.mta[0]}:{server.mta[1]}/client.example.org",
         "--mail-from", "alice@example.org", "--mail-rcpt", "bob@example.test", "--upload-file", str(msg)],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "250 2.0.0 Ok: queued as " in out.stderr

    delivered = mx.wait_for(1, timeout=60)
    assert len(delivered) == 1
    assert delivered[0]["mail_from"] == "alice@example.org"
    assert delivered[0]["rcpt_tos"] == ["bob@example.test"]
    assert_delivered_with_one_received_header(delivered[0], BODY)
    # Delivered jobs leave the queue.
    wait_until(lambda: spool.counts() == {"visible": 0, "in_flight": 0, "delayed": 0}, 30, what="empty queue")


def test_smtplib_message_to_two_domains_makes_two_jobs_and_both_arrive(
        ingress, dns_server, capture_server, loopback_hosts, spool, start_process):
    (ip1, ip2), port = loopback_hosts(2)
    mx1, mx2 = capture_server(ip1, port), capture_server(ip2, port)
    dns = dns_server("example.test. MX 10 mx1.example.test.", f"mx1.example.test. A {ip1}",
                     "example.net. MX 10 mx2.example.net.", f"mx2.example.net. A {ip2}")
    server = ingress(relay_domains="example.test,example.net")
    with smtplib.SMTP(*server.mta, timeout=30) as c:
        refused = c.sendmail("alice@example.org", ["bob@example.test", "carol@example.net"], BODY)
        assert refused == {}
    jobs = wait_until(lambda: len(spool.receive_jobs()) == 2 and spool.receive_jobs(), 10, what="two jobs")
    assert sorted(j["domain"] for j in jobs) == ["example.net", "example.test"]
    start_relay(start_process, spool, dns, port)
    for mx, rcpt in ((mx1, "bob@example.test"), (mx2, "carol@example.net")):
        [m] = mx.wait_for(1, timeout=60)
        assert m["rcpt_tos"] == [rcpt]
        assert_delivered_with_one_received_header(m, BODY)


def data_reply(server):
    """Send BODY to bob@example.test; the (code, text) of the end-of-data reply."""
    with smtplib.SMTP(*server.mta, timeout=120) as c:
        c.ehlo("client.example.org")
        c.mail("alice@example.org")
        c.rcpt("bob@example.test")
        return c.data(BODY)


def test_storage_down_means_4xx_at_end_of_data_never_250(ingress, free_port, spool):
    # Nothing listens at this endpoint: S3 fails, so the client must get a transient failure.
    server = ingress(AWS_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}")
    code, text = data_reply(server)
    assert code == 451, text
    assert text.startswith(b"4.3.0"), text
    assert "event\":\"deferred" in server.log().replace(" ", "")


def test_queue_down_means_451_and_no_message_left_behind(ingress, spool):
    # The bucket works but the queue does not exist: the message object must be withdrawn.
    server = ingress(SPOOL_QUEUE_URL=spool.queue_url + "-missing")
    code, text = data_reply(server)
    assert code == 451, text
    assert spool.keys("spool/") == []
    assert spool.receive_jobs() == []
