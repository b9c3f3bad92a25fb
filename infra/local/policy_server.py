"""HTTPS server for an MTA-STS policy file (RFC 8461 §3.3), on http.server + ssl: the
`https://mta-sts.<domain>/.well-known/mta-sts.txt` of a test domain.

Serves the --policy file at /.well-known/mta-sts.txt (anything else is 404) with the
--certificate/--key pair, and can misbehave the ways a policy host can: another --status
(a 3xx status redirects to --location), another --content-type, a --delay before answering.
Every request is logged to stdout as `request GET PATH -> STATUS`.

    python policy_server.py --listen 127.0.0.5:443 --cert mta-sts.pem --key key.pem --policy policy.txt
        [--status 200] [--content-type text/plain] [--location URL] [--delay SECONDS]
"""

import argparse
import http.server
import signal
import ssl
import sys
import threading
import time

POLICY_PATH = "/.well-known/mta-sts.txt"


def handler(args):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            time.sleep(args.delay)
            if self.path != POLICY_PATH:
                status, body, content_type = 404, b"not found\n", "text/plain"
            else:
                with open(args.policy, "rb") as f:
                    status, body, content_type = args.status, f.read(), args.content_type
            self.send_response(status)
            if 300 <= status < 400:
                self.send_header("Location", args.location)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            print(f"request GET {self.path} -> {status}", flush=True)

        def log_message(self, format, *a):  # the request line above is the log
            pass

    return Handler


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--listen", required=True, help="ip:port")
    p.add_argument("--cert", required=True, help="PEM certificate (chain) for mta-sts.<domain>")
    p.add_argument("--key", required=True, help="PEM private key")
    p.add_argument("--policy", required=True, help="file served at " + POLICY_PATH)
    p.add_argument("--status", type=int, default=200)
    p.add_argument("--content-type", default="text/plain")
    p.add_argument("--location", default="https://elsewhere.test/.well-known/mta-sts.txt")
    p.add_argument("--delay", type=float, default=0.0)
    args = p.parse_args()

    host, _, port = args.listen.rpartition(":")
    server = http.server.ThreadingHTTPServer((host, int(port)), handler(args))
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(args.cert, args.key)
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"policy: listening on {args.listen}", flush=True)
    server.serve_forever()
    sys.exit(0)


if __name__ == "__main__":
    main()
