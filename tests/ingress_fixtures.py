"""The `ingress` fixture: start target/.../ingress on free loopback ports with a test's spool.

Imported by the end-to-end modules that talk to the ingress (`from ingress_fixtures import
ingress`); kept apart from conftest.py because only those modules need it.
"""

import pytest

import harness


def auth_line(user, password):
    """One INGRESS_AUTH_FILE line: `password`, or (password, sender list)."""
    import crypt  # stdlib on 3.11; libxcrypt gives bcrypt ($2b$)

    password, senders = (password, None) if isinstance(password, str) else password
    line = f"{user}:{crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))}"
    return line + (f":{senders}" if senders else "") + "\n"


class Ingress:
    """A running ingress: .mta (ip, port), .submission / .smtps when enabled, .process."""

    def __init__(self, process, mta, submission=None, smtps=None):
        self.process, self.mta, self.submission, self.smtps = process, mta, submission, smtps

    def log(self):
        return self.process.log_text()


@pytest.fixture
def ingress(start_process, spool, tls_cert, tmp_path):
    """ingress(relay_domains="example.test", tls=False, auth=None, **env) -> Ingress.

    tls=True adds the test certificate (STARTTLS on the MTA port); auth={"user": "password"}
    writes an INGRESS_AUTH_FILE of bcrypt hashes (a value ("password", "a@x.test,@y.test") adds
    the user's sender list as the third field; `auth_line` gives one line), and with tls=True also
    opens a submission listener (STARTTLS + AUTH required) and an implicit-TLS listener. Extra
    keyword arguments are environment variables (INGRESS_TIMEOUT="1s", ...).
    """

    def start(relay_domains="example.test", tls=False, auth=None, **env):
        port = harness.free_port()
        settings = {
            **spool.env,
            "INGRESS_LISTEN": f"127.0.0.1:{port}",
            "INGRESS_HOSTNAME": "mx.ingress.test",
            "RELAY_DOMAINS": relay_domains,
        }
        submission = smtps = None
        if tls:
            settings.update({"INGRESS_TLS_CERT": tls_cert[0], "INGRESS_TLS_KEY": tls_cert[1]})
        if tls and auth:
            submission, smtps = ("127.0.0.1", harness.free_port()), ("127.0.0.1", harness.free_port())
            settings.update({
                "INGRESS_SUBMISSION_LISTEN": "%s:%d" % submission,
                "INGRESS_TLS_LISTEN": "%s:%d" % smtps,
            })
        if auth:
            path = tmp_path / "auth"
            path.write_text("".join(auth_line(u, p) for u, p in auth.items()))
            settings["INGRESS_AUTH_FILE"] = path
        settings.update(env)
        proc = start_process("ingress", env=settings, wait_port=("127.0.0.1", port))
        return Ingress(proc, ("127.0.0.1", port), submission, smtps)

    return start
