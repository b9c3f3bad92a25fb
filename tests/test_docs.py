"""The documentation stays true to the code: every environment variable a program reads is in
docs/configuration.md (and nothing the code no longer reads is), and every relative link between
the README and the docs/ pages resolves, #anchors included.

Variables are found in the Rust sources, not in a hand-kept list, so a branch that adds a
variable anywhere fails here until the page lists it:
- a string literal that is a variable name of ours (`INGRESS_*`, `RELAY_*`, `SPOOL_*`,
  `METRICS_*`, `STATE_*`, `FEEDBACK_*`, `AWS_*`) in the programs' non-test code — the
  configuration readers (`r.opt("…")`, `r.duration("…", …)`, …), the `*_VARS` lists and
  `std::env::var("…")` all name them that way;
- any other literal passed to `std::env::var`/`var_os` (e.g. `NO_COLOR`);
- `RUST_LOG`, read by tracing's `EnvFilter::…from_default_env`, the AWS SDK's standard
  variables, read by `aws_config::defaults`, and `AWS_ENDPOINT_URL_<SERVICE>` of each service
  client a program uses (`aws_sdk_dynamodb::` → `AWS_ENDPOINT_URL_DYNAMODB`).

Runs without AWS, LocalStack or the Rust toolchain.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG_MD = ROOT / "docs" / "configuration.md"
# The programs' sources: every Rust file that ends up in a binary a user runs.
SOURCE_DIRS = [ROOT / "shared" / "src", ROOT / "functions", ROOT / "cli" / "src", ROOT / "infra"]
OUR_PREFIXES = ("INGRESS_", "RELAY_", "SPOOL_", "METRICS_", "STATE_", "FEEDBACK_", "AWS_")
# Read by the AWS SDK's default chain wherever `aws_config::defaults` builds the clients.
SDK_VARS = {
    "AWS_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_ENDPOINT_URL",
}
# ... and each service client's own endpoint override, where a file uses that client.
SDK_SERVICE_VARS = {
    "aws_sdk_s3": "AWS_ENDPOINT_URL_S3",
    "aws_sdk_sqs": "AWS_ENDPOINT_URL_SQS",
    "aws_sdk_dynamodb": "AWS_ENDPOINT_URL_DYNAMODB",
    "aws_sdk_secretsmanager": "AWS_ENDPOINT_URL_SECRETS_MANAGER",
    "aws_sdk_ssm": "AWS_ENDPOINT_URL_SSM",
}
# A section of configuration.md whose heading starts with this lists the scripts' variables
# (tests, benchmarks, infra/local), which no program reads.
SCRIPTS_HEADING = "Scripts"
NAME = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+$")


def program_sources() -> list[Path]:
    """Rust files of the programs, without tests, test kits, examples, benchmarks or fuzzing."""
    out = []
    for d in SOURCE_DIRS:
        for p in sorted(d.rglob("*.rs")):
            rel = p.relative_to(ROOT).parts
            if any(part in ("tests", "examples", "benches", "target", "fuzz") for part in rel):
                continue
            if p.name.endswith("_tests.rs") or p.name in ("testkit.rs", "tests.rs"):
                continue
            out.append(p)
    assert out, "no Rust sources found"
    return out


def strip_test_code(src: str) -> str:
    """`src` without comments and without the items under `#[cfg(test)]` (a `mod x;` line or
    a braced item, matched by counting braces outside string literals)."""
    src = re.sub(r"//[^\n]*", "", src)
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]", src):
        if m.start() < i:
            continue
        out.append(src[i : m.start()])
        j = m.end()
        semi, brace = src.find(";", j), src.find("{", j)
        if brace == -1 or (semi != -1 and semi < brace):
            i = semi + 1
            continue
        depth, k, in_str = 0, brace, False
        while k < len(src):
            c = src[k]
            if in_str:
                if c == "\\":
                    k += 1
                elif c == '"':
                    in_str = False
            elif c == '"':
                in_str = True
            elif c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    break
            k += 1
        i = k + 1
    out.append(src[i:])
    return "".join(out)


def variables_read() -> dict[str, set[str]]:
    """Each variable the programs read -> the files (relative paths) that read it."""
    reads: dict[str, set[str]] = {}
    for p in program_sources():
        code = strip_test_code(p.read_text())
        rel = str(p.relative_to(ROOT))
        names = {s for s in re.findall(r'"([A-Z][A-Z0-9_]*)"', code) if NAME.match(s) and s.startswith(OUR_PREFIXES)}
        names |= set(re.findall(r'env::var(?:_os)?\(\s*"([A-Za-z0-9_]+)"', code))
        if re.search(r"EnvFilter::(?:try_)?from_default_env", code):
            names.add("RUST_LOG")
        if "aws_config::defaults" in code:
            names |= SDK_VARS
        names |= {var for crate, var in SDK_SERVICE_VARS.items() if crate + "::" in code}
        for n in names:
            reads.setdefault(n, set()).add(rel)
    return reads


def documented_variables() -> dict[str, int]:
    """Variables named in the first cell of a table row of configuration.md -> line number,
    outside the scripts section."""
    out: dict[str, int] = {}
    section = ""
    for no, line in enumerate(CONFIG_MD.read_text().splitlines(), 1):
        if line.startswith("## "):
            section = line[3:].strip()
        if section.startswith(SCRIPTS_HEADING) or not line.startswith("|"):
            continue
        first = line.split("|")[1]
        for name in re.findall(r"`([A-Z][A-Z0-9_]*)`", first):
            out.setdefault(name, no)
    return out


def test_the_scanner_finds_known_reads():
    """The scan is not vacuous: it sees reads of each kind, each in the file that does them."""
    reads = variables_read()
    assert "functions/relay/src/config.rs" in reads["RELAY_RETRY_SCHEDULE"]
    assert "functions/ingress/src/config.rs" in reads["INGRESS_LISTEN"]
    assert "shared/src/config/mod.rs" in reads["SPOOL_BUCKET"]
    assert "cli/src/render.rs" in reads["NO_COLOR"]
    assert "shared/src/logging.rs" in reads["RUST_LOG"]
    assert "infra/ingress-entrypoint.rs" in reads["INGRESS_SECRETS_DIR"]
    assert "AWS_LAMBDA_RUNTIME_API" in reads
    # test-only literals are not reads
    assert strip_test_code('a("X_Y");\n#[cfg(test)]\nmod tests { b("RELAY_ZZ"); { "}" } }\nc();') == 'a("X_Y");\n\nc();'


def test_every_variable_read_is_documented():
    documented = documented_variables()
    missing = {n: files for n, files in variables_read().items() if n not in documented}
    assert not missing, "docs/configuration.md lacks variables the code reads:\n" + "\n".join(
        f"  {n} (read by {', '.join(sorted(f))}): add a row | `{n}` | meaning | default | example |"
        for n, f in sorted(missing.items())
    )


def test_every_documented_variable_is_read():
    reads = variables_read()
    stale = {n: no for n, no in documented_variables().items() if n not in reads}
    assert not stale, "docs/configuration.md lists variables no program reads any more:\n" + "\n".join(
        f"  {n} (docs/configuration.md line {no}): remove it, or move it under '## {SCRIPTS_HEADING}'"
        for n, no in sorted(stale.items())
    )


# ---------------------------------------------------------------------------------------------
# Links
# ---------------------------------------------------------------------------------------------


# Pages other branches are writing now (issues 17-21); inbound.md links them already. A link to
# one of these may dangle until that branch is merged; drop each name here once its page exists.
PAGES_IN_FLIGHT: set[str] = set()


def doc_pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "functions" / "relay" / "README.md",
            ROOT / "tests" / "README.md"]


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: lowercased, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    out, seen = set(), {}
    in_code = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not re.match(r"#{1,6} ", line):
            continue
        a = github_anchor(line.lstrip("#"))
        n = seen.get(a, 0)
        seen[a] = n + 1
        out.add(a if n == 0 else f"{a}-{n}")
    return out


def links(path: Path) -> list[tuple[int, str]]:
    out, in_code = [], False
    for no, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("```"):
            in_code = not in_code
        if in_code:
            continue
        line = re.sub(r"`[^`]*`", "", line)
        out += [(no, t) for t in re.findall(r"\]\(([^)\s]+)\)", line)]
    return out


def test_github_anchors():
    assert github_anchor("Use as the inbound MX of your domains") == "use-as-the-inbound-mx-of-your-domains"
    assert github_anchor("relayctl: the queue from the operator's side") == "relayctl-the-queue-from-the-operators-side"
    assert github_anchor("`RELAY_ROUTES` and loops") == "relay_routes-and-loops"


@pytest.mark.parametrize("page", doc_pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path):
    broken = []
    for no, target in links(page):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        where = f"{page.relative_to(ROOT)}:{no}: ({target})"
        if not dest.exists():
            if dest.parent == ROOT / "docs" and dest.name in PAGES_IN_FLIGHT and not anchor:
                continue
            broken.append(f"{where} no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{where} no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_readme_is_a_front_page():
    n = len((ROOT / "README.md").read_text().splitlines())
    assert n <= 300, f"README.md has {n} lines; move topics to docs/"
