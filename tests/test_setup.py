"""infra/local/setup.sh decides from capabilities, and check_imports.py derives what the venv must
import from the sources.

The capability checks run for real on this machine (set up by setup.sh before the suite), then
with one tool on PATH replaced by a stand-in that is present but cannot do what the tests ask:
exactly that capability must be reported missing, with its Debian package. The fresh-machine
proof itself is infra/local/fresh-machine-check.sh (tests/README.md).
"""

import os
import re
import subprocess
import sys
import textwrap

import pytest

from harness import INFRA_LOCAL

SETUP = INFRA_LOCAL / "setup.sh"
CHECK_IMPORTS = INFRA_LOCAL / "check_imports.py"
sys.path.insert(0, str(INFRA_LOCAL))
import check_imports  # noqa: E402

SWAKS_WITHOUT_TLS = """\
=== AUTH CRAM-MD5 supported
=== Basic AUTH supported
=== Pipe Transport supported
=== Socket Transport supported
*** TLS not available: requires Net::SSLeay
"""
CURL_WITHOUT_SMTPS = """\
curl 7.88.1 (x86_64-pc-linux-gnu) libcurl/7.88.1
Protocols: dict file ftp http https imap pop3 smtp
Features: alt-svc AsynchDNS HTTPS-proxy IPv6 Largefile libz SSL
"""


def check(path_prefix=None):
    env = dict(os.environ)
    if path_prefix:
        env["PATH"] = f"{path_prefix}:{env['PATH']}"
    out = subprocess.run(["bash", str(SETUP), "--check"], env=env, capture_output=True, text=True, timeout=60)
    missing = [line for line in out.stdout.splitlines() if line.startswith("missing: ")]
    return out.returncode, out.stdout, missing


def test_every_capability_is_there_on_a_machine_setup_has_prepared():
    rc, out, missing = check()
    assert (rc, missing) == (0, []), out
    table = re.findall(r'^cap "', SETUP.read_text(), flags=re.M)
    assert out.count("\nok: ") + out.startswith("ok: ") == len(table) >= 8, out


@pytest.mark.parametrize("tool, output, capability, package", [
    ("swaks", SWAKS_WITHOUT_TLS, "swaks speaks STARTTLS and implicit TLS", "libnet-ssleay-perl"),
    ("curl", CURL_WITHOUT_SMTPS, "curl speaks smtp:// and smtps://", "curl"),
])
def test_a_tool_that_is_present_but_incapable_is_reported_with_its_package(tmp_path, tool, output, capability, package):
    fake = tmp_path / tool
    fake.write_text(f"#!/bin/sh\ncat <<'EOF'\n{output}EOF\n")
    fake.chmod(0o755)
    rc, out, missing = check(tmp_path)
    assert rc == 1, out
    assert len(missing) == 1, out            # only that capability; swaks' AUTH is still there
    assert missing[0].startswith(f"missing: {capability}"), out
    assert package in missing[0], out


def write(root, rel, text):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


def test_required_modules_are_read_from_imports_and_scripts(tmp_path):
    write(tmp_path, "tests/conftest.py", """\
        import os, json                      # stdlib
        import pytest
        import helper                        # the folder's own module
        from . import sibling                # relative
        from dns.resolver import Resolver    # top-level name counts

        try:
            import fancy_optional            # has a fallback: optional
        except ImportError:
            fancy_optional = None

        def later():
            from cryptography import x509    # inside a function
            yaml = pytest.importorskip("yaml")   # a skip is a lost test: required
        """)
    write(tmp_path, "tests/helper.py", "import boto3\n")
    write(tmp_path, "infra/local/tool.py", """\
        class Server:
            def run(self):
                if True:
                    with open("x") as f:
                        import aiosmtpd.smtp
        """)
    write(tmp_path, "infra/local/start.sh", '"$VENV_PY" -m localstack.runtime.main &\n')
    found = check_imports.required_modules(tmp_path)
    assert sorted(found) == ["aiosmtpd", "boto3", "cryptography", "dns", "localstack.runtime.main", "pytest", "yaml"]
    assert found["cryptography"] == "tests/conftest.py:13"
    assert found["localstack.runtime.main"] == "infra/local/start.sh:1"


def test_a_module_nobody_installed_fails_naming_the_file_and_line(tmp_path):
    write(tmp_path, "tests/test_x.py", "import pytest\nimport no_such_module_xyz\n")
    for mode in ([], ["--find"]):
        out = subprocess.run([sys.executable, str(CHECK_IMPORTS), *mode, str(tmp_path)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 1, out
        assert "'no_such_module_xyz' (used at tests/test_x.py:2)" in out.stderr
        assert "requirements.txt" in out.stderr
        assert "'pytest'" not in out.stderr    # installed in this venv: not reported


def test_a_module_that_is_there_but_fails_to_import_is_reported(tmp_path, monkeypatch):
    pkg = tmp_path / "site" / "explodes_on_import_xyz"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise OSError('libfoo.so.1: cannot open shared object file')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert check_imports.problem("explodes_on_import_xyz", find_only=True) is None   # located
    why = check_imports.problem("explodes_on_import_xyz", find_only=False)           # imported
    assert why and "libfoo.so.1" in why
