"""The ingress image's entrypoint (infra/ingress-entrypoint.rs) turns secrets into files.

Compiles the std-only program with the host's rustc (as the image build does for its target)
and runs it with `env` as the command, so the environment the ingress would see is visible.
Skipped when rustc is not installed.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "infra" / "ingress-entrypoint.rs"
ENV = shutil.which("env") or "/usr/bin/env"


@pytest.fixture(scope="module")
def entrypoint(tmp_path_factory) -> Path:
    rustc = shutil.which("rustc")
    if not rustc:
        pytest.skip("rustc not installed")
    out = tmp_path_factory.mktemp("entrypoint") / "ingress-entrypoint"
    subprocess.run(
        [rustc, "--edition", "2021", "-O", "-D", "warnings", "-o", str(out), str(SOURCE)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return out


def run(entrypoint: Path, env: dict[str, str], *command: str) -> subprocess.CompletedProcess:
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    return subprocess.run(
        [str(entrypoint), *(command or (ENV,))],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def env_of(output: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)


CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----"
AUTH = "alice:$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA:alice@example.org,@alice.test\n"
RECIPIENTS = "# valid recipients\nbob@example.test\n@catchall.test\n"


def test_secrets_become_private_files(entrypoint, tmp_path):
    secrets = tmp_path / "secrets"
    p = run(
        entrypoint,
        {
            "INGRESS_SECRETS_DIR": str(secrets),
            "INGRESS_TLS_CERT_PEM": CERT,
            "INGRESS_TLS_KEY_PEM": KEY,
            "INGRESS_AUTH_FILE_CONTENT": AUTH,
            "INGRESS_RECIPIENTS_FILE_CONTENT": RECIPIENTS,
            "SPOOL_BUCKET": "b",
        },
    )
    assert p.returncode == 0, p.stderr
    seen = env_of(p.stdout)
    assert seen["INGRESS_TLS_CERT"] == str(secrets / "tls-cert.pem")
    assert seen["INGRESS_TLS_KEY"] == str(secrets / "tls-key.pem")
    assert seen["INGRESS_AUTH_FILE"] == str(secrets / "auth-file")
    assert seen["INGRESS_RECIPIENTS_FILE"] == str(secrets / "recipients-file")
    assert seen["SPOOL_BUCKET"] == "b"
    # The contents never reach the ingress's environment.
    for var in ("INGRESS_TLS_CERT_PEM", "INGRESS_TLS_KEY_PEM", "INGRESS_AUTH_FILE_CONTENT",
                "INGRESS_RECIPIENTS_FILE_CONTENT", "INGRESS_SECRETS_DIR"):
        assert var not in seen
    assert (secrets / "tls-cert.pem").read_text() == CERT
    assert (secrets / "tls-key.pem").read_text() == KEY
    assert (secrets / "auth-file").read_text() == AUTH
    assert (secrets / "recipients-file").read_text() == RECIPIENTS
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o700
    for f in secrets.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f


def test_nothing_set_changes_nothing(entrypoint, tmp_path):
    secrets = tmp_path / "secrets"
    p = run(entrypoint, {"INGRESS_SECRETS_DIR": str(secrets), "INGRESS_TLS_CERT": "/etc/cert.pem", "INGRESS_TLS_KEY_PEM": ""})
    assert p.returncode == 0, p.stderr
    seen = env_of(p.stdout)
    assert seen["INGRESS_TLS_CERT"] == "/etc/cert.pem"
    assert "INGRESS_TLS_KEY" not in seen and "INGRESS_TLS_KEY_PEM" not in seen
    assert not secrets.exists()


def test_rewriting_replaces_old_content(entrypoint, tmp_path):
    secrets = tmp_path / "secrets"
    for content in ("first-longer-content\n", "second\n"):
        p = run(entrypoint, {"INGRESS_SECRETS_DIR": str(secrets), "INGRESS_AUTH_FILE_CONTENT": content})
        assert p.returncode == 0, p.stderr
    assert (secrets / "auth-file").read_text() == "second\n"


def test_content_and_path_together_is_an_error(entrypoint, tmp_path):
    p = run(
        entrypoint,
        {"INGRESS_SECRETS_DIR": str(tmp_path), "INGRESS_TLS_KEY_PEM": KEY, "INGRESS_TLS_KEY": "/etc/key.pem"},
    )
    assert p.returncode == 1
    assert "INGRESS_TLS_KEY_PEM" in p.stderr and "INGRESS_TLS_KEY" in p.stderr


def test_unwritable_directory_is_an_error(entrypoint, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    p = run(entrypoint, {"INGRESS_SECRETS_DIR": str(blocker / "sub"), "INGRESS_TLS_CERT_PEM": CERT})
    assert p.returncode == 1
    assert "INGRESS_TLS_CERT_PEM" in p.stderr


def test_arguments_are_passed_and_a_missing_program_reported(entrypoint, tmp_path):
    p = run(entrypoint, {}, ENV, "-u", "PATH")
    assert p.returncode == 0 and "PATH=" not in p.stdout
    p = run(entrypoint, {}, str(tmp_path / "no-such-program"))
    assert p.returncode == 127
    assert "no-such-program" in p.stderr
