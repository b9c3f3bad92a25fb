"""Fixtures for end-to-end tests over real parts: LocalStack (S3 + SQS), a real DNS server, real
SMTP servers (aiosmtpd capture, Postfix smtp-sink) and the built binaries, all on loopback.

Run through ./tests/run (which installs everything, builds, and starts LocalStack), or directly
with the venv's python: `python -m pytest tests/ -v` once LocalStack runs (infra/local/localstack.sh
start) and the binaries are built (RELAY_BIN_DIR, default target/release). See tests/README.md.
"""

import os
import re
import uuid

import pytest

import harness
from harness import (
    BIN_DIR,
    ENDPOINT,
    Aws,
    CaptureServer,
    Dynamo,
    PolicyServer,
    PrivateCa,
    Process,
    Rspamd,
    SmtpSink,
    Spool,
    base_env,
    localstack_health,
    make_tls_cert,
    merge_env,
    start_dns,
)

# ---------------------------------------------------------------------------------------------
# Process bookkeeping: every process a test starts is stopped after it, and the logs of all of
# them are attached to the report of a failed test.


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and rep.when in ("setup", "call"):
        for proc in getattr(item, "_relay_processes", []):
            text = proc.log_text()
            if len(text) > 20000:
                text = "[... earlier lines cut ...]\n" + text[-20000:]
            rep.sections.append((f"log of {proc.name} ({proc.log_path})", text))


@pytest.fixture
def _processes(request):
    procs = []
    request.node._relay_processes = procs
    yield procs
    for proc in reversed(procs):
        proc.stop()


@pytest.fixture
def logs_dir(tmp_path):
    """Directory (under pytest's tmp_path) for the logs of the processes a test starts."""
    d = tmp_path / "logs"
    d.mkdir(exist_ok=True)
    return d


# ---------------------------------------------------------------------------------------------
# Ports


@pytest.fixture
def free_port():
    """free_port(host="127.0.0.1", udp=False) -> int: a port nothing listens on right now."""
    return harness.free_port


@pytest.fixture
def loopback_hosts():
    """loopback_hosts(count) -> (ips, port): `count` fresh 127.0.x.y addresses (never 127.0.0.1)
    and one port free on all of them — one address per fake MX host, all on RELAY_MX_PORT=port."""
    return harness.loopback_hosts


# ---------------------------------------------------------------------------------------------
# AWS


@pytest.fixture(scope="session")
def aws():
    """boto3 clients on LocalStack: aws.s3, aws.sqs, aws.endpoint, aws.region, aws.env() (the AWS_*
    variables for a process). Fails every test using it when LocalStack is not up."""
    services = localstack_health()
    if services is None:
        pytest.fail(f"LocalStack is not running at {ENDPOINT}: start it with `infra/local/localstack.sh start` "
                    "or run everything with ./tests/run", pytrace=False)
    wanted = ("s3", "sqs", "secretsmanager", "ssm")
    bad = {n: services.get(n) for n in wanted if services.get(n) not in ("available", "running")}
    if bad:
        pytest.fail(f"LocalStack at {ENDPOINT} does not offer {bad}; it must run with SERVICES={','.join(wanted)} "
                    "(infra/local/localstack.sh)", pytrace=False)
    return Aws()


@pytest.fixture
def spool(aws, request):
    """A unique bucket + job queue + DLQ (redrive after 5 receives) for this test, deleted after it.

    spool.bucket, spool.queue_url, spool.dlq_url
    spool.env                    SPOOL_BUCKET, SPOOL_QUEUE_URL, AWS_ENDPOINT_URL, AWS_REGION,
                                 AWS_DEFAULT_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
    spool.keys(prefix="")        sorted object keys;  spool.objects(prefix="") -> {key: bytes}
    spool.get(key) / spool.put(key, data)
    spool.peek(dlq=False)        every message incl. delayed/in-flight, non-destructive:
                                 [{body, job, visible, delayed, receive_count, attributes}]
    spool.receive_jobs(dlq=False) the parsed job bodies of peek()
    spool.counts(dlq=False)      {visible, in_flight, delayed} (ApproximateNumberOfMessages*)
    spool.send_job(body, delay=0), spool.purge()
    """
    slug = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:30].strip("-")
    name = f"t-{slug}-{uuid.uuid4().hex[:8]}"
    s = Spool(aws, bucket=name, queue=name)
    yield s
    s.delete()


@pytest.fixture(scope="session")
def dynamo(tmp_path_factory):
    """moto's server (DynamoDB) for the whole test session, started on first use (from the venv
    infra/local/setup.sh made for it): dynamo.endpoint, dynamo.client (boto3)."""
    d = Dynamo(tmp_path_factory.mktemp("moto") / "moto.log")
    yield d
    d.stop()


@pytest.fixture
def state_table(dynamo, request):
    """A state table of this test's own on moto's server (pk/sk, TTL on `ttl`), deleted after it:
    .name, .env (STATE_TABLE + AWS_ENDPOINT_URL_DYNAMODB: add it to a program's env),
    .items(), .client (boto3)."""
    slug = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:30].strip("-")
    t = dynamo.table(f"t-{slug}-{uuid.uuid4().hex[:8]}")
    yield t
    t.delete()


# ---------------------------------------------------------------------------------------------
# Servers


@pytest.fixture
def dns_server(_processes, logs_dir):
    """dns_server(*records, zone=()) -> "127.0.0.1:PORT" (a str, usable as RELAY_DNS_SERVERS).

    Starts infra/local/dns_server.py (the same server as infra/local/dns-server) on a free port,
    UDP and TCP. `records` are zone-file lines (one or several per string), e.g.
        "example.test. MX 10 mx1.example.test.", "mx1.example.test. A 127.0.0.2",
        "null.test. MX 0 .", "implicit.test. A 127.0.0.3" (no MX -> NODATA -> implicit MX),
        "servfail.test. SERVFAIL", "slow.test. TIMEOUT" (no answer), "gone.test. NXDOMAIN";
    names not in the data are NXDOMAIN. `zone` is a list of zone files. The result also has
    .port and .queries() -> [(name, type, result)]. Stopped after the test.
    """

    def start(*records, zone=()):
        server = start_dns(records, [str(z) for z in zone], logs_dir)
        _processes.append(server.process)
        return server

    return start


@pytest.fixture
def rspamd(_processes, logs_dir, dns_server):
    """rspamd() -> harness.Rspamd: Debian's rspamd 3.4 on a free loopback port with the private
    test configuration (infra/local/rspamd_config.py: DNS from a test DNS server, no fuzzy, no
    redis; `X-Test-Action: add-header` / `soft-reject` force those actions). Stopped after the test."""

    def start():
        r = Rspamd(logs_dir, dns_server())
        _processes.append(r.process)
        return r

    return start


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory):
    """(cert_path, key_path): a self-signed certificate for localhost, mx.example.test and 127.0.0.1,
    e.g. for INGRESS_TLS_CERT/INGRESS_TLS_KEY or capture_server(tls=True)."""
    return make_tls_cert(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def capture_server(_processes, logs_dir, request):
    """capture_server(ip="127.0.0.1", port=None, replies=(), *, tls=False, auth=(), hostname=None,
    auth_plaintext=False, close_after=None, data_delay=None) -> CaptureServer: infra/local/capture.py
    on ip:port (a free port if None).

    replies: rules "KEY[#N|#M-N]=CODE TEXT" (or a dict KEY -> "CODE TEXT"); KEY is an address,
    "@domain", "*" (any RCPT) or "DATA" (reply at end of data); #N limits the rule to the first N
    times its key comes up, #M-N to the Mth to Nth, e.g. {"bob@example.test#1": "450 4.2.0 try
    later"}, {"DATA#2-2": "421 4.7.28 rate limited"}; a 421 closes the session. tls=True offers
    STARTTLS with tls_cert (or pass (cert, key)); auth=["user:pass"] offers AUTH PLAIN/LOGIN (after
    STARTTLS unless auth_plaintext). close_after=N closes each session after its Nth message.
    data_delay=S holds each 250 to the end of DATA for S seconds (its "data" event comes first).

    .ip .port .addr .dir;  .messages() -> [{mail_from, rcpt_tos, mail_options, rcpt_options, rcpts,
    helo, tls, auth_user, peer, seq, data: bytes}];  .wait_for(n=1, timeout=30) -> messages();
    .events() -> every RCPT/DATA with the reply given;  .sessions() -> [{peer, opened, closed}] from
    the server's connect/disconnect log;  .max_concurrent();  .stop(). Stopped after the test.
    """

    def start(ip="127.0.0.1", port=None, replies=(), *, tls=False, auth=(), hostname=None, auth_plaintext=False,
              close_after=None, data_delay=None):
        if tls is True:
            tls = request.getfixturevalue("tls_cert")
        port = port or harness.free_port(ip)
        server = CaptureServer(ip, port, replies, logs_dir, tls=tls or None, auth=auth, hostname=hostname,
                               auth_plaintext=auth_plaintext, close_after=close_after, data_delay=data_delay)
        _processes.append(server.process)
        return server

    return start


@pytest.fixture(scope="session")
def tls_ca(tmp_path_factory):
    """PrivateCa: a private CA for the session. .ca_path (give it to the relay as RELAY_TLS_CA),
    .issue(names, ips=()) -> (cert_path, key_path) signed by it, e.g. for capture_server(tls=...)
    or policy_server(...)."""
    return PrivateCa(tmp_path_factory.mktemp("tls-ca"))


@pytest.fixture
def policy_server(_processes, logs_dir):
    """policy_server(ip, policy, cert, *, port=443, status=200, content_type="text/plain", delay=0.0)
    -> PolicyServer: infra/local/policy_server.py serving the text `policy` over HTTPS at
    https://ip:port/.well-known/mta-sts.txt with `cert` ((cert_path, key_path), e.g. from
    tls_ca.issue(["mta-sts.example.test"])); a 3xx `status` redirects. .requests() -> [(path,
    status)], .addr, .stop(). Port 443 needs root (loopback only). Stopped after the test."""

    def start(ip, policy, cert, *, port=443, status=200, content_type="text/plain", delay=0.0):
        server = PolicyServer(ip, port, policy, cert, logs_dir, status=status, content_type=content_type, delay=delay)
        _processes.append(server.process)
        return server

    return start


@pytest.fixture
def smtp_sink(_processes, logs_dir):
    """smtp_sink(ip="127.0.0.1", port=None, options=(), hostname=None) -> SmtpSink: Postfix
    /usr/sbin/smtp-sink on ip:port with extra smtp-sink(1) options for fault injection, e.g.
    ["-r", "RCPT"] 4xx to RCPT, ["-f", "RCPT"] 5xx, ["-r", "."] / ["-f", "."] 4xx/5xx after DATA,
    ["-Q", "MAIL"] 421 and disconnect, ["-q", "DATA"] disconnect without reply, ["-w", "3"] wait
    before the DATA reply, ["-W", "RCPT:3"] wait before RCPT replies, ["-8"] no 8BITMIME,
    ["-e"] no ESMTP, ["-E"] no enhanced status codes.

    .addr .ip .port;  .count() transactions that reached "." (whatever the reply);
    .wait_for(n=1, timeout=30) -> count;  .messages() -> [{client_addr, helo, mail_args,
    rcpt_args, data}] (data with LF line endings, as smtp-sink dumps it);  .stop().
    """
    sinks = []

    def start(ip="127.0.0.1", port=None, options=(), hostname=None):
        port = port or harness.free_port(ip)
        sink = SmtpSink(ip, port, options, logs_dir, hostname=hostname)
        sinks.append(sink)
        _processes.append(sink.process)
        return sink

    yield start
    for sink in sinks:
        sink.stop()
        sink.cleanup()


@pytest.fixture
def start_process(_processes, logs_dir, tmp_path):
    """start_process(program, *args, env=None, wait_port=None, timeout=30, name=None, split_stdout=False) -> Process.

    program: "ingress" / "relay" (from RELAY_BIN_DIR, default target/release) or a path. The
    environment is PATH, HOME (a temp dir), RUST_LOG=info, RUST_BACKTRACE=1,
    AWS_EC2_METADATA_DISABLED=true, overlaid with `env` (a value None removes a variable) — pass
    spool.env plus the program's settings. stdout+stderr go to a log file under tmp_path.
    wait_port ("ip:port", (ip, port) or port) waits until it accepts TCP connections (and fails
    with the log if the process exits first). split_stdout=True keeps stdout (the EMF metrics)
    in a file of its own: .stdout_text().

    .proc (Popen) .pid .name .log_path;  .log_text();  .wait_log(regex, timeout=30);
    .wait_port(addr, timeout=30);  .wait(timeout) -> exit code;  .alive();
    .stop(timeout=10) -> exit code (SIGTERM, then SIGKILL). Stopped after the test; logs are
    attached to the report when the test fails.
    """
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)

    def start(program, *args, env=None, wait_port=None, timeout=30.0, name=None, split_stdout=False):
        path = str(program)
        if "/" not in path:
            path = str(BIN_DIR / path)
            if not os.access(path, os.X_OK):
                pytest.fail(f"{path} does not exist: build it with `cargo build --release --workspace` "
                            "(or set RELAY_BIN_DIR)", pytrace=False)
        name = name or os.path.basename(path) + (f"-{args[0]}" if args and not args[0].startswith("-") else "")
        n = sum(1 for p in _processes if p.name.startswith(name))
        proc_name = f"{name}-{n}" if n else name
        stdout_path = logs_dir / f"{proc_name}.stdout" if split_stdout else None
        proc = Process(proc_name, [path, *args], merge_env(base_env(home), env), logs_dir / f"{proc_name}.log",
                       stdout_path=stdout_path)
        _processes.append(proc)
        if wait_port is not None:
            proc.wait_port(wait_port, timeout)
        return proc

    return start
