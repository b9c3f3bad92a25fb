"""Catch-all SMTP server that stores every message it accepts (a fake MX / smarthost for tests).

Owns the capture directory format:
  DIR/<timestamp>-<n>.eml   the exact DATA bytes after dot-unstuffing (CRLF kept)
  DIR/<timestamp>-<n>.json  sidecar: mail_from, mail_options, rcpt_tos, rcpts (address + options),
                            rcpt_options, peer, helo, tls, auth_user, size, seq
  DIR/events.jsonl          one line per RCPT and per end of DATA with the reply given
  DIR/sessions.jsonl        one line per connect and per disconnect (event, peer, time): how many
                            sessions a client opened and how many at once
Both files are written under a dot-name and renamed (the .json first), so a reader that sees
an .eml sees complete files.

Accepts 8-bit and SMTPUTF8 mail (advertises 8BITMIME and SMTPUTF8). Reply rules make it misbehave:
  --reply 'bob@example.test=550 5.1.1 no such user'   every RCPT TO:<bob@example.test>
  --reply 'bob@example.test#2=450 4.2.0 try later'    only the first 2 such RCPTs, then accepted
  --reply 'DATA#2-3=421 4.7.28 rate limited'          only the 2nd and 3rd ends of DATA
  --reply '@example.test=...'  any address in the domain;  --reply '*=...'  any address
  --reply 'DATA=451 4.3.0 try later'                   the reply to the end of DATA (not stored)

A reply rule's count is of the times its key came up (over all sessions). A 421 reply closes
the session after it is sent (RFC 5321 §3.8). --close-after N closes each session right after its
Nth accepted message (a server that limits messages per connection, or drops an idle one).
--data-delay S waits S seconds after the end of DATA (its event is written first) before it
stores the message and replies: a slow server holding the 250.

  python capture.py --listen 127.0.0.1:2526 --dir .local/mail [--reply RULE]...
         [--hostname NAME] [--tls-cert PEM --tls-key PEM] [--auth USER:PASS]... [--auth-plaintext]
         [--close-after N] [--data-delay S]
"""

import argparse
import asyncio
import itertools
import json
import logging
import os
import signal
import ssl
import time

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Rule:
    def __init__(self, spec):
        key, sep, reply = spec.partition("=")
        if not sep or not reply[:3].isdigit():
            raise argparse.ArgumentTypeError(f"expected KEY[#N|#M-N]=CODE TEXT, got {spec!r}")
        key, _, times = key.partition("#")
        self.key = key.strip().lower()
        first, _, last = times.partition("-")
        try:
            self.first, self.last = (int(first), int(last)) if last else (1, int(first) if first else None)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected #N or #M-N after the key, got {spec!r}") from None
        self.reply = reply.strip()
        self.seen = 0

    def matches(self, key):
        if self.key == "data" or key == "data":
            if self.key != key:
                return False
        elif not (self.key in ("*", key) or (self.key.startswith("@") and key.endswith(self.key))):
            return False
        self.seen += 1
        return self.first <= self.seen and (self.last is None or self.seen <= self.last)


class Handler:
    def __init__(self, directory, rules, auth, close_after=None, data_delay=0.0):
        self.dir = directory
        self.rules = rules
        self.auth = auth
        self.close_after = close_after
        self.data_delay = data_delay
        self.seq = itertools.count(1)

    def _rule(self, key):
        for rule in self.rules:
            if rule.matches(key):
                return rule.reply
        return None

    @staticmethod
    def _close_after_reply(server):
        # Runs once the reply is written (the handler returns before aiosmtpd sends it).
        asyncio.get_running_loop().call_soon(server.transport.close)

    def _event(self, file="events.jsonl", **fields):
        with open(os.path.join(self.dir, file), "a") as f:
            f.write(json.dumps({"time": time.time(), **fields}) + "\n")

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if not self.auth:
            responses = [r for r in responses if not r[4:].startswith("AUTH")]
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self._rule(address.lower()) or "250 2.1.5 OK"
        self._event(event="rcpt", peer=list(session.peer), mail_from=envelope.mail_from, rcpt=address, reply=reply)
        if reply.startswith("421"):
            self._close_after_reply(server)
        if reply.startswith("2"):
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
            if not hasattr(envelope, "rcpts"):
                envelope.rcpts = []
            envelope.rcpts.append({"address": address, "options": rcpt_options})
        return reply

    async def handle_DATA(self, server, session, envelope):
        reply = self._rule("data")
        self._event(event="data", peer=list(session.peer), mail_from=envelope.mail_from,
                    rcpt_tos=envelope.rcpt_tos, reply=reply or "250")
        if reply:
            if reply.startswith("421"):
                self._close_after_reply(server)
            return reply
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        n = next(self.seq)
        now = time.time()
        name = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}-{n:06d}"
        data = envelope.original_content
        meta = {
            "seq": n,
            "received_at": now,
            "peer": list(session.peer),
            "helo": session.host_name,
            "tls": session.ssl is not None,
            "auth_user": session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None,
            "mail_from": envelope.mail_from,
            "mail_options": envelope.mail_options,
            "rcpt_tos": envelope.rcpt_tos,
            "rcpt_options": envelope.rcpt_options,
            "rcpts": getattr(envelope, "rcpts", []),
            "size": len(data),
            "eml": name + ".eml",
        }
        self._write(name + ".json", json.dumps(meta, indent=1).encode())
        self._write(name + ".eml", data)
        session.accepted = getattr(session, "accepted", 0) + 1
        if self.close_after and session.accepted >= self.close_after:
            self._close_after_reply(server)
        return f"250 2.0.0 OK queued as {name}"

    def _write(self, name, data):
        tmp = os.path.join(self.dir, ".tmp-" + name)
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, os.path.join(self.dir, name))

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and self.auth.get(auth_data.login) == auth_data.password
        # handled=False: aiosmtpd then answers a refusal itself (535); True would leave it unanswered.
        return AuthResult(success=ok, handled=False)


class CaptureSMTP(SMTP):
    """aiosmtpd's server, logging when each connection opens and closes."""

    def connection_made(self, transport):
        first = not hasattr(self, "capture_peer")  # STARTTLS hands the protocol a second transport
        super().connection_made(transport)
        if first:
            self.capture_peer = list(transport.get_extra_info("peername")[:2])
            self.event_handler._event("sessions.jsonl", event="connect", peer=self.capture_peer)

    def connection_lost(self, error):
        if hasattr(self, "capture_peer") and not getattr(self, "capture_lost", False):
            self.capture_lost = True
            self.event_handler._event("sessions.jsonl", event="disconnect", peer=self.capture_peer)
        super().connection_lost(error)


async def serve(args):
    host, _, port = args.listen.rpartition(":")
    host = host.strip("[]")
    os.makedirs(args.dir, exist_ok=True)
    auth = {}
    for cred in args.auth:
        user, _, password = cred.partition(":")
        auth[user.encode()] = password.encode()
    handler = Handler(args.dir, args.reply, auth, args.close_after, args.data_delay)
    tls = None
    if args.tls_cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(args.tls_cert, args.tls_key)

    def factory():
        return CaptureSMTP(
            handler,
            hostname=args.hostname,
            decode_data=False,
            enable_SMTPUTF8=True,
            tls_context=tls,
            authenticator=handler.authenticate if auth else None,
            auth_require_tls=not args.auth_plaintext,
        )

    loop = asyncio.get_running_loop()
    server = await loop.create_server(factory, host, int(port))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"capture: listening on {args.listen}, writing to {args.dir}", flush=True)
    await stop.wait()
    server.close()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--listen", default="127.0.0.1:2526", help="host:port")
    p.add_argument("--dir", required=True, help="where messages are written")
    p.add_argument("--reply", type=Rule, action="append", default=[], metavar="KEY[#N]=CODE TEXT")
    p.add_argument("--hostname", default="capture.localdomain", help="name in the banner and EHLO reply")
    p.add_argument("--tls-cert", help="PEM certificate; offers STARTTLS when set (with --tls-key)")
    p.add_argument("--tls-key", help="PEM private key")
    p.add_argument("--auth", action="append", default=[], metavar="USER:PASS", help="offer AUTH PLAIN/LOGIN")
    p.add_argument("--auth-plaintext", action="store_true", help="allow AUTH without TLS")
    p.add_argument("--close-after", type=int, metavar="N", help="close each session after its Nth accepted message")
    p.add_argument("--data-delay", type=float, default=0.0, metavar="S",
                   help="wait S seconds after the end of DATA before storing and replying")
    p.add_argument("--verbose", action="store_true", help="log every SMTP command")
    args = p.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(message)s")
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
