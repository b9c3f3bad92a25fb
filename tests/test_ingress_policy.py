"""Ingress policy as a real client sees it: sender ownership on the submission port (Python
smtplib, STARTTLS + AUTH), the message rate limit, the relay recipient table at RCPT, and both
tables re-read on SIGHUP while sessions stay up. Accepted mail lands in LocalStack; refused mail
must leave nothing there."""

import signal
import smtplib
import ssl

import pytest

from harness import wait_until
from ingress_fixtures import auth_line, ingress  # noqa: F401  (fixture)


def unverified_tls():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def message(sender, subject="policy"):
    return f"From: {sender}\r\nSubject: {subject}\r\n\r\nhello\r\n".encode()


def submit_as(server, user, password, source=None):
    """An smtplib session on the submission port, STARTTLS done and logged in."""
    c = smtplib.SMTP(*server.submission, timeout=30, source_address=(source, 0) if source else None)
    c.ehlo("client.example.org")
    c.starttls(context=unverified_tls())
    c.ehlo("client.example.org")
    c.login(user, password)
    return c


def stored_from_headers(spool):
    """The From: line of every message in the bucket."""
    out = []
    for key in spool.keys("spool/"):
        for line in spool.get(key).split(b"\r\n"):
            if line.lower().startswith(b"from:"):
                out.append(line.decode())
    return sorted(out)


def assert_nothing_spooled(spool):
    counts = spool.counts()
    assert counts == {"visible": 0, "in_flight": 0, "delayed": 0}, counts
    assert spool.keys("") == [], "no message object, no bounce"


def test_sender_ownership_on_submission(ingress, spool):
    server = ingress(tls=True, auth={"alice": ("s3cret", "alice@example.org,@alice.test"), "bob": "pw-bob"})
    with submit_as(server, "alice", "s3cret") as c:
        with pytest.raises(smtplib.SMTPSenderRefused) as e:
            c.sendmail("bob@example.org", ["x@anywhere.example"], message("bob@example.org"))
        assert e.value.smtp_code == 553
        assert e.value.smtp_error == b"5.7.1 <bob@example.org>: Sender address rejected: not owned by user alice"
        c.rset()

        # An owned envelope sender does not make a foreign From: header acceptable.
        assert c.mail("alice@example.org")[0] == 250
        assert c.rcpt("x@anywhere.example")[0] == 250
        code, text = c.data(message("Bob <bob@example.org>"))
        assert (code, text) == (550, b"5.7.1 <bob@example.org>: From: header address rejected: not owned by user alice")
        # Every address of a multi-address From: must be hers.
        assert c.mail("alice@example.org")[0] == 250
        assert c.rcpt("x@anywhere.example")[0] == 250
        code, text = c.data(message("alice@example.org, Eve <eve@evil.test>"))
        assert (code, text[:27]) == (550, b"5.7.1 <eve@evil.test>: From")
        assert_nothing_spooled(spool)

        # Her address, her +detail and her @domain entry pass.
        assert c.sendmail("alice@example.org", ["x@anywhere.example"], message("Alice <Alice@Example.org>")) == {}
        assert c.sendmail("alice+lists@example.org", ["x@anywhere.example"], message("alice+lists@example.org")) == {}
        assert c.sendmail("news@alice.test", ["y@anywhere.example"], message("News <news@alice.test>")) == {}

    # A user without a sender list sends as anyone, as before.
    with submit_as(server, "bob", "pw-bob") as c:
        assert c.sendmail("ceo@anywhere.example", ["z@anywhere.example"], message("ceo@anywhere.example")) == {}

    jobs = wait_until(lambda: (lambda j: j if len(j) == 4 else None)(spool.receive_jobs()), 10, what="4 jobs")
    assert sorted(j["sender"] for j in jobs) == [
        "alice+lists@example.org", "alice@example.org", "ceo@anywhere.example", "news@alice.test"]
    assert stored_from_headers(spool) == [
        "From: Alice <Alice@Example.org>", "From: News <news@alice.test>", "From: alice+lists@example.org",
        "From: ceo@anywhere.example"]
    log = server.log()
    assert '"reason":"sender_not_owned"' in log and '"reason":"from_not_owned"' in log


def test_rate_limit_per_client_address_and_per_user(ingress, spool, loopback_hosts):
    (ip_a, ip_b), _ = loopback_hosts(2)
    server = ingress(tls=True, auth={"alice": "pw-a", "bob": "pw-b"}, INGRESS_RATE_LIMIT="3/1h")

    # Unauthenticated on the MTA port: counted per client address.
    with smtplib.SMTP(*server.mta, timeout=30, source_address=(ip_a, 0)) as c:
        for i in range(3):
            assert c.sendmail("a@example.org", ["bob@example.test"], message("a@example.org", f"a{i}")) == {}
        with pytest.raises(smtplib.SMTPSenderRefused) as e:
            c.sendmail("a@example.org", ["bob@example.test"], message("a@example.org", "a3"))
        assert e.value.smtp_code == 451
        assert e.value.smtp_error.startswith(f"4.7.1 Too much mail from client {ip_a} (limit 3/1h), try again in".encode())
    # A new connection from the same address is still over; another address is not.
    with smtplib.SMTP(*server.mta, timeout=30, source_address=(ip_a, 0)) as c:
        c.ehlo("c")
        assert c.mail("a@example.org")[0] == 451
    with smtplib.SMTP(*server.mta, timeout=30, source_address=(ip_b, 0)) as c:
        assert c.sendmail("b@example.org", ["bob@example.test"], message("b@example.org")) == {}

    # Authenticated: counted per user, whatever the address (alice shares ip_a, spent above).
    with submit_as(server, "alice", "pw-a", source=ip_a) as c:
        for i in range(3):
            assert c.sendmail("alice@example.org", ["x@anywhere.example"], message("alice@example.org", f"u{i}")) == {}
        with pytest.raises(smtplib.SMTPSenderRefused) as e:
            c.sendmail("alice@example.org", ["x@anywhere.example"], message("alice@example.org"))
        assert (e.value.smtp_code, e.value.smtp_error[:36]) == (451, b"4.7.1 Too much mail from user alice ")
    with submit_as(server, "bob", "pw-b", source=ip_a) as c:
        assert c.sendmail("bob@example.org", ["x@anywhere.example"], message("bob@example.org")) == {}

    # 3 + 1 + 3 + 1 accepted; the refused ones left nothing behind.
    wait_until(lambda: len(spool.keys("spool/")) == 8, 10, what="8 stored messages")
    assert spool.counts()["visible"] == 8
    assert server.log().count('"reason":"rate_limit"') == 3


def test_unlisted_recipient_is_refused_at_rcpt_and_nothing_is_queued(ingress, spool, tmp_path, loopback_hosts):
    (outsider,), _ = loopback_hosts(1)
    table = tmp_path / "recipients"
    table.write_text("# valid recipients\nbob@example.test\n@catchall.test  # whole domain\n")
    # 127.0.0.1 is a trusted network: the table applies to trusted clients too.
    server = ingress(relay_domains="example.test,catchall.test", RELAY_NETWORKS="127.0.0.1/32",
                     INGRESS_RECIPIENTS_FILE=table)
    for source in ("127.0.0.1", outsider):
        with smtplib.SMTP(*server.mta, timeout=30, source_address=(source, 0)) as c:
            with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
                c.sendmail("someone@sender.example", ["nobody@example.test", "Bob@example.test"],
                           message("someone@sender.example"))
            for rcpt in ("nobody@example.test", "Bob@example.test"):
                code, text = e.value.recipients[rcpt]
                assert code == 550, (source, rcpt, text)
                assert text == f"5.1.1 <{rcpt}>: Recipient address rejected: User unknown in relay recipient table".encode()
    assert_nothing_spooled(spool)

    with smtplib.SMTP(*server.mta, timeout=30, source_address=(outsider, 0)) as c:
        refused = c.sendmail("someone@sender.example",
                             ["bob@example.test", "bob+tag@example.test", "anyone@catchall.test", "ghost@example.test"],
                             message("someone@sender.example"))
        assert refused == {"ghost@example.test": (550, b"5.1.1 <ghost@example.test>: Recipient address rejected: "
                                                       b"User unknown in relay recipient table")}
        # Outside the relay domains, relay policy alone decides, as before.
        with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
            c.sendmail("someone@sender.example", ["x@elsewhere.example"], message("someone@sender.example"))
        assert e.value.recipients["x@elsewhere.example"][0] == 554
    with smtplib.SMTP(*server.mta, timeout=30) as c:
        assert c.sendmail("someone@sender.example", ["x@elsewhere.example"], message("someone@sender.example")) == {}

    jobs = spool.receive_jobs()
    by_domain = {j["domain"]: sorted(r["address"] for r in j["recipients"]) for j in jobs if j["domain"] != "elsewhere.example"}
    assert by_domain == {"example.test": ["bob+tag@example.test", "bob@example.test"],
                         "catchall.test": ["anyone@catchall.test"]}
    assert len(spool.keys("spool/")) == 2


def raw_session(server):
    """An smtplib session opened now (and kept), EHLO done."""
    c = smtplib.SMTP(*server.mta, timeout=30)
    c.ehlo("old.example.org")
    return c


def test_sighup_reloads_the_recipient_table_without_dropping_sessions(ingress, spool, tmp_path):
    table = tmp_path / "recipients"
    table.write_text("bob@example.test\n")
    server = ingress(INGRESS_RECIPIENTS_FILE=table)

    old = raw_session(server)
    assert old.mail("a@example.org")[0] == 250
    assert old.rcpt("bob@example.test")[0] == 250

    table.write_text("carol@example.test\n")
    server.process.proc.send_signal(signal.SIGHUP)
    server.process.wait_log(r'"event":"reload".*"file":"INGRESS_RECIPIENTS_FILE".*"result":"ok"')

    with smtplib.SMTP(*server.mta, timeout=30) as new:
        new.ehlo("new.example.org")
        assert new.mail("a@example.org")[0] == 250
        assert new.rcpt("bob@example.test")[0] == 550, "a new session sees the new table"
        assert new.rcpt("carol@example.test")[0] == 250
        assert new.data(message("a@example.org", "new"))[0] == 250

    # The session opened before the reload is still up and completes its transaction.
    assert old.rcpt("bob+more@example.test")[0] == 250, "it keeps the table it started with"
    assert old.data(message("a@example.org", "old"))[0] == 250
    old.quit()

    # A file that fails to parse keeps the previous table and says so.
    table.write_text("dave@example.test\nthis is not an address\n")
    server.process.proc.send_signal(signal.SIGHUP)
    server.process.wait_log(r'"result":"failed".*line 2')
    with smtplib.SMTP(*server.mta, timeout=30) as c:
        c.ehlo("c")
        c.mail("a@example.org")
        assert c.rcpt("carol@example.test")[0] == 250
        assert c.rcpt("dave@example.test")[0] == 550
    assert server.process.alive()

    jobs = spool.receive_jobs()
    assert sorted(r["address"] for j in jobs for r in j["recipients"]) == [
        "bob+more@example.test", "bob@example.test", "carol@example.test"]


def test_sighup_reloads_the_auth_file(ingress, spool, tmp_path):
    server = ingress(tls=True, auth={"alice": ("pw-a", "alice@example.org")})
    auth = tmp_path / "auth"
    with submit_as(server, "alice", "pw-a") as c:
        with pytest.raises(smtplib.SMTPSenderRefused):
            c.sendmail("other@example.org", ["x@anywhere.example"], message("other@example.org"))
    with pytest.raises(smtplib.SMTPAuthenticationError):
        submit_as(server, "dave", "pw-d")

    # The operator adds a user and widens alice's list.
    auth.write_text(auth_line("alice", ("pw-a", "alice@example.org,other@example.org")) + auth_line("dave", "pw-d"))
    server.process.proc.send_signal(signal.SIGHUP)
    server.process.wait_log(r'"event":"reload".*"file":"INGRESS_AUTH_FILE".*"result":"ok"')
    with submit_as(server, "dave", "pw-d") as c:
        assert c.sendmail("dave@example.org", ["x@anywhere.example"], message("dave@example.org")) == {}
    with submit_as(server, "alice", "pw-a") as c:
        assert c.sendmail("other@example.org", ["x@anywhere.example"], message("other@example.org")) == {}
    assert len(spool.receive_jobs()) == 2


@pytest.mark.parametrize("variable, value, says", [
    ("INGRESS_RECIPIENTS_FILE", "bob@example.test\nbob\n", "INGRESS_RECIPIENTS_FILE: {path}: line 2: "),
    ("INGRESS_AUTH_FILE", "alice:$2b$04$abcdefghijklmnopqrstuu:alice@example.org,,\n",
     "INGRESS_AUTH_FILE: {path}: line 1: senders of alice: empty entry"),
    ("INGRESS_RATE_LIMIT", "200", "INGRESS_RATE_LIMIT: \"200\": expected N/duration"),
])
def test_bad_policy_settings_stop_the_ingress_at_start(start_process, spool, tmp_path, variable, value, says):
    path = tmp_path / "file"
    if variable.endswith("_FILE"):
        path.write_text(value)
        value = str(path)
    proc = start_process("ingress", env={**spool.env, "INGRESS_LISTEN": "127.0.0.1:0", "INGRESS_HOSTNAME": "mx.test",
                                         "RELAY_DOMAINS": "example.test", variable: value})
    assert proc.wait(30) == 2
    assert f"ingress: {says.format(path=path)}" in proc.log_text()
