"""The AUTH lockout end to end: two ingress processes (two Fargate tasks behind one load balancer)
sharing a state table on moto's DynamoDB, smtplib logging in on the submission port from two
client addresses (127.0.x.y), one session per attempt.
"""

import json
import smtplib
import ssl
import time

import pytest

from harness import wait_until
from ingress_fixtures import ingress  # noqa: F401  (fixture)

USER, PASSWORD = "alice", "s3cret"


def unverified_tls():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def login(server, source, password):
    """One session from `source`: STARTTLS, one AUTH PLAIN (smtplib's login() would go on to
    try LOGIN after a refusal: two attempts); the reply code to it."""
    with smtplib.SMTP(*server.submission, source_address=(source, 0), timeout=60) as c:
        c.ehlo("client.example.org")
        c.starttls(context=unverified_tls())
        c.ehlo("client.example.org")
        c.user, c.password = USER, password
        try:
            return c.auth("PLAIN", c.auth_plain)[0]
        except smtplib.SMTPAuthenticationError as e:
            return e.smtp_code


def emf_total(log, name):
    return sum(json.loads(line).get(name, 0) for line in log.splitlines() if line.startswith('{"') and '"_aws"' in line)


@pytest.fixture
def two_tasks(ingress, state_table):  # noqa: F811
    def start(lockout):
        env = {**state_table.env, "INGRESS_AUTH_LOCKOUT": lockout}
        return [ingress(tls=True, auth={USER: PASSWORD}, **env) for _ in range(2)]

    return start


def test_failures_across_sessions_and_tasks_lock_out_one_address_only(two_tasks, state_table, loopback_hosts):
    a, b = two_tasks("5/10m")
    (guesser, other), _ = loopback_hosts(2)
    # Five wrong passwords from one address, one session each, alternating between the tasks.
    assert [login((a, b)[i % 2], guesser, f"guess{i}") for i in range(5)] == [535] * 5
    # Now the right password from that address fails on either task, unchecked.
    assert login(a, guesser, PASSWORD) == 454
    assert login(b, guesser, PASSWORD) == 454
    # Another address is unaffected.
    assert login(b, other, PASSWORD) == 235
    [item] = [i for i in state_table.items() if i["pk"]["S"].startswith("authfail#")]
    assert (item["pk"]["S"], item["failures"]["N"]) == (f"authfail#{guesser}", "5"), "refused AUTHs are not counted"
    assert int(item["ttl"]["N"]) > time.time() + 9 * 60
    for task in (a, b):
        task.process.stop()
    logs = a.log() + b.log()
    assert emf_total(logs, "AuthLockouts") == 1, "one lockout, counted by the task that saw the fifth failure"
    assert logs.count('"auth_lockout"') == 1 and "too many failed AUTH attempts" in logs
    assert logs.count('"result":"locked_out"') == 2
    assert PASSWORD not in logs and "guess" not in logs, "passwords never reach the log"


def test_the_lockout_ends_with_its_window(two_tasks, loopback_hosts):
    window = 30  # a bcrypt check takes seconds in a debug build on a busy machine
    a, b = two_tasks(f"2/{window}s")
    (guesser,), _ = loopback_hosts(1)
    started = time.time()
    assert [login(a, guesser, "x"), login(b, guesser, "y")] == [535, 535]
    assert login(a, guesser, PASSWORD) == 454
    assert time.time() < started + window, "still within the window"
    wait_until(lambda: time.time() > started + window + 1, window + 5, what="the window to pass")
    assert login(b, guesser, PASSWORD) == 235
