"""A private rspamd 3.4 configuration for tests and the local stack (Debian's rspamd package).

It overlays the stock /etc/rspamd/rspamd.conf through LOCAL_CONFDIR: every worker on a port of
its own on loopback (so several can run side by side, and none on the package's 11333/11334),
DNS from the test DNS server, fuzzy_check off (it would ask rspamd.com), no redis (greylist,
ratelimit and bayes stay off), console logging, and multimap rules that let a test force an
action with a header:

    X-Test-Action: add-header   -> "add header"
    X-Test-Action: soft-reject  -> "soft reject"

GTUBE gives "reject" with the stock configuration. The `greylist` action is switched off: it
belongs to the greylist module, which needs redis; without it a score of 4 (a forged
`X-Spam: Yes` alone scores SPAM_FLAG = 5) would tempfail mail no greylisting ever remembers.

    python rspamd_config.py DIR --normal 11333 --controller 11334 --proxy 11332 --dns 127.0.0.1:5353
    rspamd -f -u _rspamd -g _rspamd -c /etc/rspamd/rspamd.conf \\
        --var=LOCAL_CONFDIR=DIR --var=DBDIR=DIR/db --var=RUNDIR=DIR/run
"""

import argparse
import os
import shutil
from pathlib import Path

MULTIMAP = """
TEST_FORCE_ADD_HEADER {
  type = "header";
  header = "X-Test-Action";
  map = ["add-header"];
  action = "add header";
  description = "test configuration: force add header";
}
TEST_FORCE_SOFT_REJECT {
  type = "header";
  header = "X-Test-Action";
  map = ["soft-reject"];
  action = "soft reject";
  message = "Test soft reject";
  description = "test configuration: force soft reject";
}
"""


def write(confdir, normal, controller, proxy, dns):
    confdir = Path(confdir)
    local = confdir / "local.d"
    local.mkdir(parents=True, exist_ok=True)
    for d in ("db", "run"):
        (confdir / d).mkdir(exist_ok=True)
        os.chmod(confdir / d, 0o777)  # rspamd drops to _rspamd
    files = {
        "worker-normal.inc": f'bind_socket = "127.0.0.1:{normal}";\ncount = 1;\n',
        "worker-controller.inc": f'bind_socket = "127.0.0.1:{controller}";\ncount = 1;\n',
        "worker-proxy.inc": f'bind_socket = "127.0.0.1:{proxy}";\ncount = 1;\n',
        "options.inc": f'dns {{\n  nameserver = ["{dns}"];\n  timeout = 1s;\n  retransmits = 1;\n}}\n',
        "fuzzy_check.conf": "enabled = false;\n",
        "logging.inc": 'type = "console";\nlevel = "notice";\n',
        "multimap.conf": MULTIMAP,
        "actions.conf": "greylist = null;\n",
    }
    for name, text in files.items():
        (local / name).write_text(text)
    return confdir


def command(confdir):
    user = ["-u", "_rspamd", "-g", "_rspamd"] if os.geteuid() == 0 else []
    return [shutil.which("rspamd") or "/usr/bin/rspamd", "-f", *user, "-c", "/etc/rspamd/rspamd.conf",
            f"--var=LOCAL_CONFDIR={confdir}", f"--var=DBDIR={confdir}/db", f"--var=RUNDIR={confdir}/run"]


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("dir")
    p.add_argument("--normal", type=int, default=11333)
    p.add_argument("--controller", type=int, default=11334)
    p.add_argument("--proxy", type=int, default=11332)
    p.add_argument("--dns", default="127.0.0.1:5353")
    a = p.parse_args()
    write(a.dir, a.normal, a.controller, a.proxy, a.dns)
    print(" ".join(command(a.dir)))
