"""A recording, breakable HTTP proxy in front of LocalStack, for one program of one test.

Point a program's AWS_ENDPOINT_URL at `proxy.url` and every S3/SQS request it makes is
forwarded to LocalStack unchanged and recorded as an operation name (`s3.PutObject`,
`sqs.SendMessageBatch`, ... — the names LocalStack's own request log uses). In front of moto's
DynamoDB (`AwsProxy(upstream=<moto's host:port>)`, AWS_ENDPOINT_URL_DYNAMODB) it records
`dynamodb.PutItem`, `dynamodb.Query`, ... LocalStack's log is
shared by every test and every helper on the machine and does not name the bucket, so a test
that counts one program's requests counts them here.

`proxy.outage(seconds)` (or `outage_after(predicate, seconds)`, armed to start right after a
matching request was answered) makes the proxy drop every connection without an answer, as an
endpoint that went away does; the SDK sees I/O errors.
"""

import http.client
import http.server
import threading
import time
import urllib.parse

from harness import ENDPOINT  # the LocalStack the tests use (AWS_ENDPOINT_URL), not always :4566


def operation(method, path, headers):
    """The AWS operation of a request: SQS names it in X-Amz-Target, S3 in method + path."""
    target = headers.get("X-Amz-Target", "")
    if target.startswith("AmazonSQS."):
        return "sqs." + target.split(".", 1)[1]
    if target.startswith("DynamoDB_"):
        return "dynamodb." + target.split(".", 1)[1]
    url = urllib.parse.urlsplit(path)
    query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
    parts = url.path.lstrip("/").split("/", 1)
    has_key = len(parts) == 2 and parts[1] != ""
    if method == "PUT":
        if not has_key:
            return "s3.PutBucketVersioning" if "versioning" in query else "s3.CreateBucket"
        return "s3.CopyObject" if "x-amz-copy-source" in {k.lower() for k in headers} else "s3.PutObject"
    if method == "GET":
        if has_key:
            return "s3.GetObject"
        return "s3.ListObjectVersions" if "versions" in query else "s3.ListObjectsV2"
    if method == "HEAD":
        return "s3.HeadObject" if has_key else "s3.HeadBucket"
    if method == "DELETE":
        return "s3.DeleteObject" if has_key else "s3.DeleteBucket"
    if method == "POST" and "delete" in query:
        return "s3.DeleteObjects"
    return f"{method} {url.path}"


class AwsProxy:
    def __init__(self, upstream=urllib.parse.urlsplit(ENDPOINT).netloc):
        self.upstream = upstream
        self.requests = []  # [(op, path, status)]
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._armed = None  # (predicate, seconds)
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _body(self):
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    data = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        chunk = self.rfile.read(size)
                        self.rfile.readline()
                        if size == 0:
                            # trailers until the empty line
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return data, True
                        data += chunk
                n = int(self.headers.get("Content-Length") or 0)
                return (self.rfile.read(n) if n else b""), False

            def _handle(self):
                body, chunked = self._body()
                op = operation(self.command, self.path, self.headers)
                if proxy.is_down():
                    with proxy._lock:
                        proxy.requests.append((op, self.path, "dropped"))
                    self.close_connection = True
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("transfer-encoding", "connection")}
                if chunked:
                    headers["Content-Length"] = str(len(body))
                conn = http.client.HTTPConnection(proxy.upstream, timeout=60)
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response_only(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                if self.command != "HEAD" or resp.getheader("Content-Length") is None:
                    self.send_header("Content-Length", str(len(data)))
                else:
                    self.send_header("Content-Length", resp.getheader("Content-Length"))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()
                with proxy._lock:
                    proxy.requests.append((op, self.path, resp.status))
                    armed = proxy._armed
                    if armed and armed[0](op, self.path, resp.status):
                        proxy._armed = None
                        proxy._down_until = time.monotonic() + armed[1]

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def is_down(self):
        return time.monotonic() < self._down_until

    def outage(self, seconds):
        """Drop every request for `seconds` from now."""
        self._down_until = time.monotonic() + seconds

    def outage_after(self, predicate, seconds):
        """Start an outage of `seconds` right after the first answered request for which
        predicate(op, path, status) is true."""
        with self._lock:
            self._armed = (predicate, seconds)

    def ops(self, prefix=""):
        """Operation names of the answered requests, in order (dropped ones left out)."""
        with self._lock:
            return [op for op, _, status in self.requests if status != "dropped" and op.startswith(prefix)]

    def statuses(self, op):
        """The HTTP statuses of the answered requests of operation `op`, in order."""
        with self._lock:
            return [status for o, _, status in self.requests if o == op and status != "dropped"]

    def dropped(self):
        with self._lock:
            return [op for op, _, status in self.requests if status == "dropped"]

    def clear(self):
        with self._lock:
            self.requests.clear()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
