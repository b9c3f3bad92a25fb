"""Building blocks of the end-to-end tests: real processes on loopback, LocalStack spool access.

conftest.py turns these into fixtures; tests may also import the helpers directly
(`from harness import wait_until, free_port, loopback_hosts`). See tests/README.md.
"""

import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
INFRA_LOCAL = REPO / "infra" / "local"
BIN_DIR = Path(os.environ.get("RELAY_BIN_DIR", REPO / "target" / "release"))
if not BIN_DIR.is_absolute():
    BIN_DIR = REPO / BIN_DIR
ENDPOINT = os.environ.get("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
REGION = os.environ.get("AWS_REGION", "us-east-1")
SMTP_SINK = "/usr/sbin/smtp-sink"

sys.path.insert(0, str(INFRA_LOCAL))
import resources  # noqa: E402  (infra/local/resources.py: shape of the spool)
import state_table  # noqa: E402  (infra/local/state_table.py: the DynamoDB state table on moto)


# A lone dot line, lines starting with dots, 8-bit UTF-8: everything dot-stuffing and transparency
# can get wrong. End-to-end tests assert it arrives byte-identical.
TRANSPARENCY_MESSAGE = (
    "From: Alice <alice@example.org>\r\n"
    "To: Bob <bob@example.test>\r\n"
    "Subject: transparency\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
    "first line\r\n"
    ".\r\n"
    ".leading dot\r\n"
    "..two dots\r\n"
    "Grüße aus Köln — 8-bit UTF-8\r\n"
).encode()


def new_ulid():
    """A ULID (what the programs use as queue and job ids): 48-bit milliseconds, 80 random bits,
    Crockford base 32."""
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    n = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    return "".join(alphabet[(n >> (5 * i)) & 31] for i in reversed(range(26)))


def message_key(queue_id):
    """Where the programs store the message `queue_id`: `spool/<hh>/<queue id>.eml`, `hh` the first
    byte of SHA-256(queue id) in hex, as docs/architecture.md documents it (computed here
    independently of shared/src/keys.rs; tests/test_keys_e2e.py checks the two agree)."""
    import hashlib

    return f"spool/{hashlib.sha256(queue_id.encode()).hexdigest()[:2]}/{queue_id}.eml"


def legacy_message_key(queue_id):
    """The key layout before the hashed one (`spool/<queue id>.eml`): what a message stored by an
    older ingress is still found under."""
    return f"spool/{queue_id}.eml"


def wait_until(fn, timeout=30.0, interval=0.1, what="condition"):
    """Call fn until it returns something truthy and return that; AssertionError after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# ---------------------------------------------------------------------------------------------
# Ports and loopback addresses


def _bindable(host, port, udp=False):
    kinds = [socket.SOCK_STREAM] + ([socket.SOCK_DGRAM] if udp else [])
    for kind in kinds:
        with socket.socket(socket.AF_INET, kind) as s:
            if kind == socket.SOCK_STREAM:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def free_port(host="127.0.0.1", udp=False):
    """A TCP port (and UDP too with udp=True) that nothing listens on at `host` right now."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if _bindable(host, port, udp):
            return port
    raise RuntimeError(f"no free port on {host}")


_next_loopback = itertools.count(1)  # 127.0.0.1 stays for the shared servers


def split_auth_results(data, authserv_id):
    """(field, rest): the ingress's Authentication-Results at the top of `data` (judged mail
    from untrusted clients carries one, issue 18) with its continuation lines, and what follows;
    field is None when `data` does not start with one for `authserv_id`."""
    if not data.lower().startswith(b"authentication-results: " + authserv_id.lower() + b";"):
        return None, data
    end = data.index(b"\r\n") + 2
    while data[end:end + 1] in (b" ", b"\t"):
        end = data.index(b"\r\n", end) + 2
    return data[:end], data[end:]


def loopback_hosts(count):
    """(ips, port): `count` fresh loopback addresses (127.0.x.y, never 127.0.0.1, unique in this
    test session) and one port free on all of them. The relay uses a single RELAY_MX_PORT for
    every MX host, so each fake MX host gets its own address and they all share the port."""
    ips = []
    for _ in range(count):
        n = next(_next_loopback)
        ips.append(f"127.0.{n // 254 % 256}.{n % 254 + 1}")
    for _ in range(200):
        port = free_port(ips[0])
        if all(_bindable(ip, port) for ip in ips):
            return ips, port
    raise RuntimeError(f"no port free on all of {ips}")


def port_open(host, port, timeout=0.5, drain=False):
    """Whether host:port accepts TCP connections. drain=True then half-closes the probe and reads
    until the server closes too (at most 2 s): an SMTP server has then sent its banner and ended
    the session, so the probe no longer counts against its connection limits."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            if drain:
                s.shutdown(socket.SHUT_WR)
                s.settimeout(2)
                try:
                    while s.recv(4096):
                        pass
                except OSError:
                    pass
            return True
    except OSError:
        return False


def split_addr(addr):
    """'ip:port' | (ip, port) | port -> (ip, port)."""
    if isinstance(addr, int):
        return "127.0.0.1", addr
    if isinstance(addr, str):
        host, _, port = addr.rpartition(":")
        return host.strip("[]"), int(port)
    return addr[0], int(addr[1])


# ---------------------------------------------------------------------------------------------
# Processes


class Process:
    """A child process with its stdout+stderr in a log file (or, with `stdout_path`, stdout in a
    file of its own: the EMF metrics lines, kept apart from the logs on stderr)."""

    def __init__(self, name, cmd, env, log_path, cwd=None, stdout_path=None):
        self.name = name
        self.cmd = [str(c) for c in cmd]
        self.log_path = Path(log_path)
        self.stdout_path = Path(stdout_path) if stdout_path else None
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log, open(self.stdout_path or os.devnull, "wb") as out:
            self.proc = subprocess.Popen(self.cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                         stdout=out if self.stdout_path else log,
                                         stderr=log if self.stdout_path else subprocess.STDOUT,
                                         start_new_session=True)
        self.pid = self.proc.pid

    def stdout_text(self):
        """What the process wrote to stdout (only with `stdout_path`)."""
        return self.stdout_path.read_text(errors="replace") if self.stdout_path else ""

    def alive(self):
        return self.proc.poll() is None

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, pattern, timeout=30.0):
        """Wait until the log matches the regex `pattern`; returns the match."""
        rx = re.compile(pattern)

        def check():
            m = rx.search(self.log_text())
            if not m and not self.alive():
                raise AssertionError(f"{self.name} exited ({self.proc.returncode}) before logging "
                                     f"{pattern!r}:\n{self.log_text()[-5000:]}")
            return m

        return wait_until(check, timeout, what=f"{self.name} to log {pattern!r}")

    def wait_port(self, addr, timeout=30.0):
        """Wait until `addr` ('ip:port', (ip, port) or port) accepts TCP connections."""
        host, port = split_addr(addr)

        def check():
            if not self.alive():
                raise AssertionError(f"{self.name} exited ({self.proc.returncode}) before listening on "
                                     f"{host}:{port}:\n{self.log_text()[-5000:]}")
            return port_open(host, port, drain=True)  # the server has seen the probe end, too

        wait_until(check, timeout, what=f"{self.name} to listen on {host}:{port}")
        time.sleep(0.05)

    def wait(self, timeout=30.0):
        """Wait for the process to exit by itself; returns the exit code."""
        return self.proc.wait(timeout)

    def stop(self, timeout=10.0):
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code (negative = signal)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __repr__(self):
        return f"<Process {self.name} pid={self.pid} alive={self.alive()}>"


def base_env(home):
    """Minimal environment for binaries under test: no AWS settings leak in from the caller."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "RUST_LOG": "info",
        "RUST_BACKTRACE": "1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def merge_env(base, extra):
    env = dict(base)
    for k, v in (extra or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = str(v)
    return env


# ---------------------------------------------------------------------------------------------
# DNS server


class DnsServer(str):
    """The string "127.0.0.1:PORT" (use it as RELAY_DNS_SERVERS) plus .port, .process and
    .queries() -> [(name, type, result)] of every query answered so far."""

    def __new__(cls, addr, process):
        self = super().__new__(cls, addr)
        self.addr = addr
        self.host, self.port = split_addr(addr)
        self.process = process
        return self

    def queries(self):
        return re.findall(r"^query (\S+) (\S+) -> (.*)$", self.process.log_text(), re.M)


def start_dns(records, zone, log_dir, host="127.0.0.1"):
    port = free_port(host, udp=True)
    cmd = [sys.executable, INFRA_LOCAL / "dns_server.py", "--listen", host, "--port", port]
    for z in zone:
        cmd += ["--zone", z]
    for r in records:
        for line in str(r).splitlines():
            if line.strip():
                cmd += ["--rr", line.strip()]
    proc = Process(f"dns-{port}", cmd, os.environ.copy(), Path(log_dir) / f"dns-{port}.log")
    proc.wait_log(r"dns: listening", timeout=15)
    return DnsServer(f"{host}:{port}", proc)


class Rspamd:
    """Debian's rspamd on loopback with the private configuration of infra/local/rspamd_config.py:
    .url (http://127.0.0.1:PORT, for INGRESS_RSPAMD_URL), .process, .stop()."""

    def __init__(self, log_dir, dns):
        import rspamd_config  # infra/local (on sys.path above)

        self.port = free_port()
        confdir = Path(tempfile.mkdtemp(prefix="rspamd-", dir=log_dir))
        rspamd_config.write(confdir, self.port, free_port(), free_port(), dns)
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = Process(f"rspamd-{self.port}", rspamd_config.command(confdir), os.environ.copy(),
                               Path(log_dir) / f"rspamd-{self.port}.log")
        self.process.wait_port(("127.0.0.1", self.port), timeout=60)

    def stop(self):
        self.process.stop()


# ---------------------------------------------------------------------------------------------
# SMTP servers


class CaptureServer:
    """infra/local/capture.py on ip:port; see that file for the reply-rule syntax."""

    def __init__(self, ip, port, replies, log_dir, tls=None, auth=(), hostname=None, auth_plaintext=False,
                 close_after=None, data_delay=None):
        self.ip, self.port, self.addr = ip, port, f"{ip}:{port}"
        self.dir = Path(log_dir) / f"capture-{ip}-{port}"
        if isinstance(replies, dict):
            replies = [f"{k}={v}" for k, v in replies.items()]
        cmd = [sys.executable, INFRA_LOCAL / "capture.py", "--listen", self.addr, "--dir", self.dir]
        for rule in replies:
            cmd += ["--reply", rule]
        if hostname:
            cmd += ["--hostname", hostname]
        if tls:
            cmd += ["--tls-cert", tls[0], "--tls-key", tls[1]]
        for cred in auth:
            cmd += ["--auth", cred]
        if auth_plaintext:
            cmd += ["--auth-plaintext"]
        if close_after:
            cmd += ["--close-after", str(close_after)]
        if data_delay:
            cmd += ["--data-delay", str(data_delay)]
        self.process = Process(f"capture-{self.addr}", cmd, os.environ.copy(), Path(log_dir) / f"capture-{ip}-{port}.log")
        self.process.wait_log(r"capture: listening", timeout=15)

    def messages(self):
        """Accepted messages in arrival order: the sidecar fields (mail_from, rcpt_tos, mail_options,
        rcpt_options, rcpts, helo, tls, auth_user, peer, seq) plus data (exact bytes)."""
        out = []
        for meta_path in self.dir.glob("*.json"):
            if meta_path.name.startswith("."):
                continue  # being written (capture.py writes .tmp-* and renames it)
            meta = json.loads(meta_path.read_text())
            eml = self.dir / meta["eml"]
            if eml.exists():
                meta["data"] = eml.read_bytes()
                out.append(meta)
        return sorted(out, key=lambda m: m["seq"])

    def wait_for(self, n=1, timeout=30.0):
        """Wait until at least n messages were accepted; returns messages()."""
        try:
            return wait_until(lambda: len(self.messages()) >= n and self.messages(), timeout,
                              what=f"{n} message(s) at {self.addr}")
        except AssertionError as e:
            raise AssertionError(f"{e}; got {len(self.messages())}; events: {self.events()}") from None

    def events(self, file="events.jsonl"):
        """Every RCPT and end of DATA seen, with the reply given: [{event, rcpt|rcpt_tos, reply, ...}]."""
        path = self.dir / file
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def sessions(self):
        """Every connection in connect order: [{peer: (ip, port), opened, closed}] (closed is None
        while it is open), from the server's own connect/disconnect events."""
        out, open_ = [], {}
        for e in self.events("sessions.jsonl"):
            peer = tuple(e.get("peer", ()))
            if e["event"] == "connect":
                open_[peer] = {"peer": peer, "opened": e["time"], "closed": None}
                out.append(open_[peer])
            elif e["event"] == "disconnect" and peer in open_:
                open_.pop(peer)["closed"] = e["time"]
        return out

    def max_concurrent(self):
        """The most connections the server had open at the same time."""
        now = most = 0
        for e in self.events("sessions.jsonl"):
            now += {"connect": 1, "disconnect": -1}.get(e["event"], 0)
            most = max(most, now)
        return most

    def stop(self):
        return self.process.stop()


class SmtpSink:
    """Postfix smtp-sink(1) on ip:port: fast, with fault injection through its options, e.g.
    ["-r", "RCPT"] (4xx to RCPT), ["-f", "."] (5xx after DATA), ["-Q", "MAIL"] (421 and close),
    ["-q", "DATA"] (drop the connection), ["-w", "5"] (wait before the DATA reply), ["-8"]
    (no 8BITMIME), ["-e"] (no ESMTP). Every transaction is dumped to a file (-d)."""

    def __init__(self, ip, port, options, log_dir, hostname=None):
        self.ip, self.port, self.addr = ip, port, f"{ip}:{port}"
        # smtp-sink drops privileges to -u when root; the dump dir must be reachable by that user.
        self.dump_dir = Path(tempfile.mkdtemp(prefix="smtp-sink-"))
        os.chmod(self.dump_dir, 0o777)
        cmd = [SMTP_SINK, "-c", "-d", f"{self.dump_dir}/%Y%m%d%H%M%S."]
        if os.geteuid() == 0:
            cmd += ["-u", "nobody"]
        if hostname:
            cmd += ["-h", hostname]
        cmd += [str(o) for o in options] + [f"{ip}:{port}", "100"]
        self.process = Process(f"smtp-sink-{self.addr}", cmd, os.environ.copy(), Path(log_dir) / f"smtp-sink-{ip}-{port}.log")
        self.process.wait_port((ip, port), timeout=15)

    def count(self):
        """Transactions that reached the end of DATA (".") so far, whatever the reply was."""
        counters = re.findall(r"mesg=(\d+)", self.process.log_text())
        return int(counters[-1]) if counters else 0

    def messages(self):
        """Dumped transactions: {client_addr, helo, mail_args, rcpt_args: [...], data}; data is the
        message as smtp-sink writes it (LF line endings, dot-unstuffed)."""
        out = []
        for path in sorted(self.dump_dir.iterdir(), key=lambda p: p.stat().st_mtime_ns):
            lines = path.read_bytes().split(b"\n")
            msg = {"rcpt_args": [], "helo": None, "mail_args": None, "client_addr": None, "path": str(path)}
            i = 0
            while i < len(lines) and not lines[i].startswith(b"Received: "):
                key, _, value = lines[i].decode(errors="replace").partition(": ")
                if key == "X-Rcpt-Args":
                    msg["rcpt_args"].append(value)
                else:
                    msg[{"X-Client-Addr": "client_addr", "X-Helo-Args": "helo", "X-Mail-Args": "mail_args"}
                        .get(key, key)] = value
                i += 1
            i += 3  # the three-line Received: header smtp-sink adds
            body = lines[i:]
            if body and body[-1] == b"":
                body = body[:-1]  # the file's final newline
            if body and body[-1] == b"":
                body = body[:-1]  # the empty line smtp-sink appends
            msg["data"] = b"\n".join(body) + b"\n"
            out.append(msg)
        return out

    def wait_for(self, n=1, timeout=30.0):
        """Wait until at least n transactions reached the end of DATA; returns the count."""
        return wait_until(lambda: self.count() >= n and self.count(), timeout, what=f"{n} message(s) at smtp-sink {self.addr}")

    def stop(self):
        rc = self.process.stop()
        return rc

    def cleanup(self):
        shutil.rmtree(self.dump_dir, ignore_errors=True)


class PolicyServer:
    """infra/local/policy_server.py: an MTA-STS policy file over HTTPS on ip:port (443 for the
    relay to find it as https://mta-sts.<domain>/.well-known/mta-sts.txt)."""

    def __init__(self, ip, port, policy, cert, log_dir, status=200, content_type="text/plain", delay=0.0):
        self.ip, self.port, self.addr = ip, port, f"{ip}:{port}"
        self.policy_path = Path(log_dir) / f"policy-{ip}-{port}.txt"
        self.policy_path.write_text(policy)
        cmd = [sys.executable, INFRA_LOCAL / "policy_server.py", "--listen", self.addr, "--cert", cert[0],
               "--key", cert[1], "--policy", self.policy_path, "--status", status, "--content-type", content_type,
               "--delay", delay]
        self.process = Process(f"policy-{self.addr}", cmd, os.environ.copy(), Path(log_dir) / f"policy-{ip}-{port}.log")
        self.process.wait_log(r"policy: listening", timeout=15)

    def requests(self):
        """[(path, status)] of every request answered so far."""
        return re.findall(r"^request GET (\S+) -> (\d+)$", self.process.log_text(), re.M)

    def stop(self):
        return self.process.stop()


# ---------------------------------------------------------------------------------------------
# AWS (LocalStack)


def localstack_health(endpoint=ENDPOINT):
    """The services map of LocalStack's health endpoint, or None when it does not answer."""
    try:
        with urllib.request.urlopen(f"{endpoint}/_localstack/health", timeout=3) as r:
            return json.load(r).get("services", {})
    except Exception:
        return None


class Aws:
    """boto3 clients on LocalStack: .s3, .sqs, .client(service) (e.g. "secretsmanager", "ssm"),
    .endpoint, .region."""

    def __init__(self, endpoint=ENDPOINT, region=REGION):
        self.endpoint, self.region = endpoint, region
        self.s3, self.sqs = resources.clients(endpoint, region)

    def client(self, service):
        import boto3

        return boto3.client(service, endpoint_url=self.endpoint, region_name=self.region,
                            aws_access_key_id="test", aws_secret_access_key="test")

    def env(self):
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
        }


class Spool:
    """A bucket, a job queue and its DLQ (redrive after 5 receives) for one test."""

    def __init__(self, aws, bucket, queue):
        self.aws, self.s3, self.sqs = aws, aws.s3, aws.sqs
        self.bucket = bucket
        self.queue_url, self.dlq_url = resources.create_spool(self.s3, self.sqs, bucket, queue)
        self.env = {"SPOOL_BUCKET": bucket, "SPOOL_QUEUE_URL": self.queue_url, **aws.env()}

    # S3 ----------------------------------------------------------------------------------------
    def keys(self, prefix=""):
        """Object keys under prefix, sorted."""
        keys = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            keys += [o["Key"] for o in page.get("Contents", [])]
        return sorted(keys)

    def objects(self, prefix=""):
        """{key: bytes} of every object under prefix."""
        return {k: self.get(k) for k in self.keys(prefix)}

    def get(self, key):
        return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def put(self, key, data):
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=data)

    # SQS ---------------------------------------------------------------------------------------
    def peek(self, dlq=False):
        """Every message in the queue (or the DLQ) without receiving it: visible, in flight and
        delayed ones, receive counts untouched (LocalStack's /_aws/sqs/messages endpoint).
        [{body, job (parsed JSON or None), visible, delayed, receive_count, attributes}]"""
        url = self.dlq_url if dlq else self.queue_url
        query = urllib.parse.urlencode({"QueueUrl": url, "ShowDelayed": "true", "ShowInvisible": "true"})
        req = urllib.request.Request(f"{self.aws.endpoint}/_aws/sqs/messages?{query}",
                                     headers={"Accept": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            result = json.load(r)["ReceiveMessageResponse"]["ReceiveMessageResult"] or {}
        msgs = result.get("Message") or []
        if isinstance(msgs, dict):
            msgs = [msgs]
        out = []
        for m in msgs:
            attrs = m.get("Attribute") or []
            attrs = {a["Name"]: a["Value"] for a in ([attrs] if isinstance(attrs, dict) else attrs)}
            try:
                job = json.loads(m["Body"])
            except ValueError:
                job = None
            out.append({
                "body": m["Body"],
                "job": job,
                "visible": attrs.get("IsVisible") == "true",
                "delayed": attrs.get("IsDelayed") == "true",
                "receive_count": int(attrs.get("ApproximateReceiveCount", 0)),
                "attributes": attrs,
            })
        return out

    def receive_jobs(self, dlq=False):
        """The parsed job bodies of every message in the queue (or DLQ), delayed ones included;
        non-destructive (see peek)."""
        return [m["job"] for m in self.peek(dlq)]

    def counts(self, dlq=False):
        """{'visible', 'in_flight', 'delayed'} from ApproximateNumberOfMessages*."""
        a = self.sqs.get_queue_attributes(QueueUrl=self.dlq_url if dlq else self.queue_url,
                                          AttributeNames=["All"])["Attributes"]
        return {
            "visible": int(a["ApproximateNumberOfMessages"]),
            "in_flight": int(a["ApproximateNumberOfMessagesNotVisible"]),
            "delayed": int(a["ApproximateNumberOfMessagesDelayed"]),
        }

    def send_job(self, body, delay=0):
        """Enqueue a job (dict -> JSON); returns the message id."""
        text = body if isinstance(body, str) else json.dumps(body)
        return self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=text, DelaySeconds=delay)["MessageId"]

    def purge(self):
        for url in (self.queue_url, self.dlq_url):
            self.sqs.purge_queue(QueueUrl=url)

    def delete(self):
        resources.delete_spool(self.s3, self.sqs, self.bucket, [self.queue_url, self.dlq_url])


# ---------------------------------------------------------------------------------------------
# DynamoDB (moto's server)


def moto_server_path():
    """moto_server in the venv infra/local/setup.sh made for it (MOTO_SERVER, as env.sh sets it,
    or the same path derived from requirements-moto.txt)."""
    if os.environ.get("MOTO_SERVER"):
        return os.environ["MOTO_SERVER"]
    import hashlib

    digest = hashlib.sha256((INFRA_LOCAL / "requirements-moto.txt").read_bytes()).hexdigest()[:12]
    venv = os.environ.get("MOTO_VENV") or str(Path.home() / ".cache" / "smtp-relay" / f"moto-{digest}")
    return f"{venv}/bin/moto_server"


class Dynamo:
    """moto's server on loopback: .endpoint, .client (boto3 DynamoDB), .stop(); .table(name) makes
    a state table there."""

    def __init__(self, log_path):
        server = moto_server_path()
        if not os.access(server, os.X_OK):
            raise RuntimeError(f"{server} is missing: run infra/local/setup.sh")
        self.log = open(log_path, "w")
        self.proc, self.endpoint = state_table.start(server, "127.0.0.1", free_port(), self.log)
        self.client = state_table.client(self.endpoint)

    def table(self, name):
        state_table.create_table(self.client, name)
        return StateTable(self, name)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


class StateTable:
    """One state table: .name, .env (STATE_TABLE and AWS_ENDPOINT_URL_DYNAMODB for a process),
    .items() (every item, attribute values as boto3 returns them), .delete()."""

    def __init__(self, dynamo, name):
        self.dynamo, self.client, self.name = dynamo, dynamo.client, name
        self.env = {"STATE_TABLE": name, "AWS_ENDPOINT_URL_DYNAMODB": dynamo.endpoint}

    def items(self):
        out = []
        for page in self.client.get_paginator("scan").paginate(TableName=self.name):
            out += page.get("Items", [])
        return out

    def delete(self):
        state_table.delete_table(self.client, self.name)


# ---------------------------------------------------------------------------------------------
# TLS


class PrivateCa:
    """A private certificate authority (EC P-256) in `directory`: .ca_path is its certificate
    (use it as RELAY_TLS_CA / RELAY_SMARTHOST_CA), .issue(names, ips) a server certificate."""

    def __init__(self, directory, name="Relay Test CA"):
        from cryptography import x509
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        ca = self._sign(self._name, self._key.public_key(), [(x509.BasicConstraints(ca=True, path_length=None), True)])
        self.ca_path = self.dir / "ca.pem"
        self.ca_path.write_bytes(_pem(ca))
        self._issued = itertools.count(1)

    def _sign(self, subject, public_key, extensions):
        import datetime

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes

        now = datetime.datetime.now(datetime.timezone.utc)
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(self._name).public_key(public_key)
             .serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30)))
        for ext, critical in extensions:
            b = b.add_extension(ext, critical=critical)
        return b.sign(self._key, hashes.SHA256())

    def issue(self, names, ips=()):
        """(cert_path, key_path): a server certificate for the DNS `names` and `ips`."""
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        san = [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        leaf = self._sign(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]), key.public_key(), [
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
            (x509.SubjectAlternativeName(san), False),
        ])
        n = next(self._issued)
        cert_path, key_path = self.dir / f"server-{n}.pem", self.dir / f"server-{n}.key"
        cert_path.write_bytes(_pem(leaf))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return cert_path, key_path


def _pem(cert):
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def make_tls_cert(directory, names=("localhost", "mx.example.test"), ips=("127.0.0.1",)):
    """A self-signed certificate (RSA 2048) for the names and IPs; returns (cert_path, key_path)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.timezone.utc)
    san = [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path
