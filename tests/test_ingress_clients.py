"""The ingress against SMTP clients nobody here wrote — curl, Python smtplib, swaks — and its
limits, PROXY protocol and shutdown as a client sees them. Messages land in LocalStack."""

import json
import signal
import smtplib
import socket
import ssl
import subprocess
import time

import pytest

from harness import wait_until
from ingress_fixtures import ingress  # noqa: F401  (fixture)

MSG = b"Subject: clients\r\n\r\nhello\r\n"


def unverified_tls():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def read_reply(sock):
    """One whole SMTP reply from a raw socket."""
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return data.decode()
        data += chunk
        lines = data.split(b"\r\n")
        if len(lines) > 1 and len(lines[-2]) >= 4 and lines[-2][3:4] == b" ":
            return data.decode()


def stored_messages(spool):
    return [spool.get(k) for k in spool.keys("spool/")]


def test_smtplib_starttls_and_login_on_submission(ingress, spool):
    server = ingress(tls=True, auth={"alice": "s3cret"})
    with smtplib.SMTP(*server.submission, timeout=30) as c:
        c.ehlo("client.example.org")
        assert c.has_extn("starttls") and not c.has_extn("auth"), "AUTH only after TLS"
        with pytest.raises(smtplib.SMTPSenderRefused) as e:
            c.sendmail("alice@example.org", ["x@anywhere.example"], MSG)
        assert e.value.smtp_code == 530
        c.starttls(context=unverified_tls())
        c.ehlo("client.example.org")
        assert "PLAIN" in c.esmtp_features["auth"] and "LOGIN" in c.esmtp_features["auth"]
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            c.login("alice", "wrong")
        assert e.value.smtp_code == 535
        c.login("alice", "s3cret")
        # Authenticated users relay to any domain.
        assert c.sendmail("alice@example.org", ["x@anywhere.example"], MSG) == {}
    [stored] = wait_until(lambda: stored_messages(spool), 10, what="stored message")
    assert b"with ESMTPSA id" in stored and b"(using TLSv1_3 with cipher" in stored
    assert '"user":"alice"' in server.log().replace(" ", "")
    assert "s3cret" not in server.log(), "passwords never reach the log"


def test_curl_implicit_tls_with_auth(ingress, spool, tmp_path):
    server = ingress(tls=True, auth={"alice": "s3cret"})
    msg = tmp_path / "m.eml"
    msg.write_bytes(MSG)
    out = subprocess.run(
        ["curl", "-sS", "-v", "--ssl-reqd", "-k", f"smtps://{server.smtps[0]}:{server.smtps[1]}/client.example.org",
         "--user", "alice:s3cret", "--mail-from", "alice@example.org", "--mail-rcpt", "y@anywhere.example",
         "--upload-file", str(msg)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "235 2.7.0" in out.stderr and "250 2.0.0 Ok: queued as" in out.stderr
    [job] = spool.receive_jobs()
    assert job["recipients"][0]["address"] == "y@anywhere.example"


def test_curl_ssl_reqd_upgrades_with_starttls_on_port_25(ingress, spool, tmp_path):
    server = ingress(tls=True)
    msg = tmp_path / "m.eml"
    msg.write_bytes(MSG)
    out = subprocess.run(
        ["curl", "-sS", "-v", "--ssl-reqd", "-k", f"smtp://{server.mta[0]}:{server.mta[1]}/c.example.org",
         "--mail-from", "a@example.org", "--mail-rcpt", "b@example.test", "--upload-file", str(msg)],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "STARTTLS" in out.stderr and "250 2.0.0 Ok: queued as" in out.stderr
    [stored] = stored_messages(spool)
    assert b"with ESMTPS id" in stored


def test_swaks_pipelining_with_a_denied_recipient(ingress, spool):
    server = ingress()
    out = subprocess.run(
        ["swaks", "--server", "%s:%d" % server.mta, "--pipeline", "--from", "a@example.org",
         "--to", "b@example.test,c@elsewhere.example,d@example.test", "--helo", "c.example.org"],
        capture_output=True, text=True, timeout=60)
    assert "554 5.7.1 Relay access denied" in out.stdout, out.stdout
    assert "250 2.0.0 Ok: queued as" in out.stdout, out.stdout
    [job] = spool.receive_jobs()
    assert [r["address"] for r in job["recipients"]] == ["b@example.test", "d@example.test"]


def test_swaks_tls_and_auth_on_submission(ingress, spool):
    server = ingress(tls=True, auth={"bob": "pw-bob"})
    out = subprocess.run(
        ["swaks", "--server", "%s:%d" % server.submission, "--tls", "--auth", "LOGIN", "--auth-user", "bob",
         "--auth-password", "pw-bob", "--from", "bob@example.org", "--to", "z@anywhere.example"],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "235 2.7.0" in out.stdout and "250 2.0.0 Ok: queued as" in out.stdout
    assert len(spool.receive_jobs()) == 1


def test_size_limit_at_mail_and_at_end_of_data(ingress):
    server = ingress(INGRESS_MAX_MESSAGE_SIZE="2000")
    big = b"Subject: big\r\n\r\n" + b"x" * 76 + b"\r\n"
    big = big * 40
    with smtplib.SMTP(*server.mta, timeout=30) as c:
        assert c.ehlo("c")[0] == 250 and c.esmtp_features["size"] == "2000"
        # smtplib declares SIZE=, so the rejection comes at MAIL.
        with pytest.raises(smtplib.SMTPSenderRefused) as e:
            c.sendmail("a@example.org", ["b@example.test"], big)
        assert e.value.smtp_code == 552
        c.rset()
        c.mail("a@example.org")
        c.rcpt("b@example.test")
        code, text = c.data(big)
        assert (code, text[:5]) == (552, b"5.3.4")
        assert c.noop()[0] == 250, "the session goes on"


def test_connection_limits_answer_421(ingress):
    server = ingress(INGRESS_MAX_CONNECTIONS_PER_IP="2")
    held = [socket.create_connection(server.mta, timeout=10) for _ in range(2)]
    try:
        for s in held:
            assert read_reply(s).startswith("220 ")
        third = socket.create_connection(server.mta, timeout=10)
        assert read_reply(third).startswith("421 4.7.0")
        third.close()
    finally:
        for s in held:
            s.close()
    # Slots are freed when clients leave.
    def greeting():
        with socket.create_connection(server.mta, timeout=10) as s:
            return read_reply(s)

    wait_until(lambda: greeting().startswith("220 "), 10, what="a free slot after clients left")


def test_idle_timeout_is_421_4_4_2(ingress):
    server = ingress(INGRESS_TIMEOUT="1s")
    with socket.create_connection(server.mta, timeout=10) as s:
        assert read_reply(s).startswith("220 ")
        s.sendall(b"EHLO c\r\n")
        read_reply(s)
        assert read_reply(s).startswith("421 4.4.2")


def test_proxy_protocol_v2_gives_the_real_client_address(ingress, spool):
    server = ingress(INGRESS_PROXY_PROTOCOL="true")
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    header = sig + bytes([0x21, 0x11, 0, 12]) + bytes([203, 0, 113, 9, 127, 0, 0, 1]) + (40000).to_bytes(2, "big") + (25).to_bytes(2, "big")
    with socket.create_connection(server.mta, timeout=10) as s:
        s.sendall(header)
        assert read_reply(s).startswith("220 ")
        s.sendall(b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n")
        wait_until(lambda: "354" in read_reply(s), 10, what="354")
        s.sendall(MSG + b".\r\n")
        assert "250 2.0.0" in read_reply(s)
    [stored] = stored_messages(spool)
    assert b"([203.0.113.9])" in stored
    # Without a header (a client straight to the port), the connection is closed unanswered.
    with socket.create_connection(server.mta, timeout=10) as s:
        s.sendall(b"EHLO c.example.org\r\n")
        try:
            answer = s.recv(100)
        except ConnectionResetError:
            answer = b""
        assert answer == b"", "no SMTP reply to a client without a PROXY header"


def test_sigterm_finishes_the_transaction_then_421_and_exit_0(ingress, spool):
    server = ingress(INGRESS_SHUTDOWN_GRACE="10s")
    busy = socket.create_connection(server.mta, timeout=10)
    idle = socket.create_connection(server.mta, timeout=10)
    read_reply(busy), read_reply(idle)
    busy.sendall(b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n")
    wait_until(lambda: "354" in read_reply(busy), 10, what="354")
    server.process.proc.send_signal(signal.SIGTERM)
    assert read_reply(idle).startswith("421 4.3.2"), "idle sessions are closed at once"
    time.sleep(0.5)
    # The new listener is closed, the transaction in flight still completes.
    with pytest.raises(OSError):
        socket.create_connection(server.mta, timeout=2).recv(1)
    busy.sendall(MSG + b".\r\n")
    replies = read_reply(busy)
    if "421" not in replies:
        replies += read_reply(busy)
    assert "250 2.0.0 Ok: queued as" in replies and "421 4.3.2" in replies, replies
    assert server.process.wait(15) == 0
    assert len(spool.keys("spool/")) == 1


def test_logs_are_json_keyed_by_queue_id_without_bodies(ingress):
    server = ingress()
    with smtplib.SMTP(*server.mta, timeout=30) as c:
        c.sendmail("a@example.org", ["b@example.test"], b"Subject: secret-body-marker\r\n\r\nx\r\n")
    time.sleep(0.3)
    events = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    queued = [e for e in events if e.get("event") == "queued"]
    assert len(queued) == 1
    qid = queued[0]["queue_id"]
    assert {e["event"] for e in events if e.get("queue_id") == qid} >= {"mail", "rcpt", "queued"}
    assert {"connect", "helo", "disconnect"} <= {e.get("event") for e in events}
    assert "secret-body-marker" not in server.log()
