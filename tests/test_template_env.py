"""The deploy template (template.yaml) must only set environment variables the binaries read.

The source of truth is the Rust code: the ``INGRESS_VARS`` list in functions/ingress/src/config.rs
and ``RELAY_VARS`` in functions/relay/src/config.rs (every variable each binary reads), plus the
standard AWS variables, the ``RUST_LOG`` filter (shared/src/logging.rs), and the variables the ingress image's entrypoint
consumes itself (``ENTRYPOINT_VARS`` in infra/ingress-entrypoint.rs). A name in the template that
is not in those sets is drift: a renamed or removed setting that would be silently ignored.

The same checks cover the files for ``sam local invoke`` (events/env.json, events/sqs-job.json)
and a few template invariants other parts of the system rely on (PROXY protocol on both sides,
listener ports, queue visibility timeout).

Runs without AWS access and without the Rust toolchain. Needs PyYAML or cfn-lint for the YAML
(infra/check-template.sh provides both).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "template.yaml"
INGRESS_CONFIG_RS = ROOT / "functions" / "ingress" / "src" / "config.rs"
RELAY_CONFIG_RS = ROOT / "functions" / "relay" / "src" / "config.rs"
LOGGING_RS = ROOT / "shared" / "src" / "logging.rs"
JOB_RS = ROOT / "shared" / "src" / "job.rs"
ENTRYPOINT_RS = ROOT / "infra" / "ingress-entrypoint.rs"
DOCKERFILE = ROOT / "infra" / "Dockerfile"
ENV_JSON = ROOT / "events" / "env.json"
SQS_EVENT = ROOT / "events" / "sqs-job.json"

# Read by the AWS SDK's default chain (shared/src/aws.rs documents AWS_ENDPOINT_URL*), not by
# the program's own configuration.
STANDARD_AWS_VARS = {
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL_SQS",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
}
REQUIRED = {"SPOOL_BUCKET", "SPOOL_QUEUE_URL"}
NO_VALUE = {"Ref": "AWS::NoValue"}


# ---------------------------------------------------------------------------------------------
# Sources of truth
# ---------------------------------------------------------------------------------------------


def rust_str_list(path: Path, name: str) -> list[str]:
    """The string literals of ``pub const NAME: &[&str] = &[ ... ];`` in a Rust file."""
    src = path.read_text()
    m = re.search(r"\bconst\s+" + re.escape(name) + r"\s*:\s*&\[\s*&str\s*\]\s*=\s*&\[(.*?)\]\s*;", src, re.S)
    assert m, f"{path.relative_to(ROOT)}: no `const {name}: &[&str] = &[...]`"
    body = re.sub(r"//[^\n]*", "", m.group(1))
    names = re.findall(r'"([^"\\]+)"', body)
    assert names, f"{name} in {path.relative_to(ROOT)} is empty"
    return names


def entrypoint_file_vars() -> list[tuple[str, str, str]]:
    """``FILE_VARS`` of infra/ingress-entrypoint.rs: (content var, contract var, file name)."""
    src = ENTRYPOINT_RS.read_text()
    m = re.search(r"\bconst\s+FILE_VARS\s*:[^=]*=\s*&\[(.*?)\]\s*;", src, re.S)
    assert m, "infra/ingress-entrypoint.rs: no FILE_VARS"
    triples = re.findall(r'\(\s*"([^"]+)"\s*,\s*"([^"]+)"\s*,\s*"([^"]+)"\s*\)', m.group(1))
    assert triples, "FILE_VARS is empty"
    return triples


def runtime_vars() -> set[str]:
    """Variables read outside config.rs by both binaries (the log filter)."""
    logging = LOGGING_RS.read_text()
    assert "RUST_LOG" in logging and "from_default_env" in logging, "logging no longer reads RUST_LOG"
    return {"RUST_LOG"}


def ingress_allowed() -> set[str]:
    return set(rust_str_list(INGRESS_CONFIG_RS, "INGRESS_VARS")) | STANDARD_AWS_VARS | runtime_vars() | set(
        rust_str_list(ENTRYPOINT_RS, "ENTRYPOINT_VARS")
    )


def relay_allowed() -> set[str]:
    return set(rust_str_list(RELAY_CONFIG_RS, "RELAY_VARS")) | STANDARD_AWS_VARS | runtime_vars()


# ---------------------------------------------------------------------------------------------
# Template loading and walking
# ---------------------------------------------------------------------------------------------


def load_template(path: Path = TEMPLATE) -> dict:
    """Parse a CloudFormation template, short-form tags (!Ref, !If, ...) as their long forms."""
    try:
        from cfnlint.decode import cfn_yaml  # type: ignore[import-not-found]
    except ImportError:
        cfn_yaml = None
    if cfn_yaml is not None:
        return _plain(cfn_yaml.load(str(path)))
    yaml = pytest.importorskip("yaml", reason="needs cfn-lint or PyYAML (run infra/check-template.sh)")

    class Loader(yaml.SafeLoader):
        pass

    def tag(loader, suffix, node):
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        if suffix == "Ref":
            return {"Ref": value}
        if suffix == "GetAtt" and isinstance(value, str):
            return {"Fn::GetAtt": value.split(".", 1)}
        if suffix == "Condition":
            return {"Condition": value}
        return {"Fn::" + suffix: value}

    Loader.add_multi_constructor("!", tag)
    return yaml.load(path.read_text(), Loader=Loader)


def _plain(node):
    """cfn-lint's node types as plain dicts, lists and strings."""
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, str):
        return str(node)
    return node


def branches(node):
    """The values a node can take: both branches of every Fn::If, AWS::NoValue dropped."""
    if node == NO_VALUE:
        return
    if isinstance(node, dict) and set(node) == {"Fn::If"}:
        _, yes, no = node["Fn::If"]
        yield from branches(yes)
        yield from branches(no)
        return
    yield node


def list_items(node):
    """Items of a list property whose items or whole value may be conditional."""
    for lst in branches(node):
        if isinstance(lst, list):
            for item in lst:
                yield from branches(item)


def resources(tpl: dict, *types: str):
    for name, res in (tpl.get("Resources") or {}).items():
        if res.get("Type") in types:
            yield name, res


def relay_functions(tpl: dict) -> dict[str, set[str]]:
    """Environment variable names of each function that runs the `relay` binary."""
    glob = (((tpl.get("Globals") or {}).get("Function") or {}).get("Environment") or {}).get("Variables") or {}
    out = {}
    for name, res in resources(tpl, "AWS::Serverless::Function", "AWS::Lambda::Function"):
        binary = ((res.get("Metadata") or {}).get("BuildProperties") or {}).get("Binary")
        if binary != "relay":
            continue
        names = set(glob)
        for env in branches((res.get("Properties") or {}).get("Environment") or {}):
            for variables in branches(env.get("Variables") or {}):
                names |= set(variables)
        out[name] = names
    return out


def ingress_definitions(res: dict) -> list[dict]:
    """The ingress containers of a task definition (not its sidecars, such as rspamd)."""
    return [c for c in list_items((res.get("Properties") or {}).get("ContainerDefinitions"))
            if c.get("Name") == "ingress"]


def ingress_containers(tpl: dict) -> dict[str, set[str]]:
    """Environment and Secrets names of the ingress container of every ECS task definition."""
    out = {}
    for name, res in resources(tpl, "AWS::ECS::TaskDefinition"):
        for container in ingress_definitions(res):
            names = set()
            for key in ("Environment", "Secrets"):
                for item in list_items(container.get(key)):
                    names.add(item["Name"])
            out[f"{name}/{container.get('Name')}"] = names
    return out


def check(tpl: dict, ingress_ok: set[str], relay_ok: set[str]) -> list[str]:
    """Everything wrong with the template's environment, as readable lines (empty when fine)."""
    problems = []
    relays = relay_functions(tpl)
    ingresses = ingress_containers(tpl)
    if not relays:
        problems.append("no relay function (Metadata.BuildProperties.Binary: relay) in the template")
    if not ingresses:
        problems.append("no ECS task definition for the ingress in the template")
    for where, names, ok in [(f"relay {n}", v, relay_ok) for n, v in relays.items()] + [
        (f"ingress {n}", v, ingress_ok) for n, v in ingresses.items()
    ]:
        for unknown in sorted(names - ok):
            problems.append(f"{where}: sets {unknown}, which the binary does not read")
        for missing in sorted(REQUIRED - names):
            problems.append(f"{where}: does not set required {missing}")
    return problems


@pytest.fixture(scope="module")
def tpl() -> dict:
    return load_template()


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------


def test_rust_lists_parse():
    ingress = rust_str_list(INGRESS_CONFIG_RS, "INGRESS_VARS")
    relay = rust_str_list(RELAY_CONFIG_RS, "RELAY_VARS")
    for names in (ingress, relay):
        assert REQUIRED <= set(names)
        assert all(re.fullmatch(r"[A-Z][A-Z0-9_]*", n) for n in names), names
        assert len(names) == len(set(names))
    assert "INGRESS_PROXY_PROTOCOL" in ingress and "RELAY_SMARTHOST" in relay


def test_template_env_matches_what_the_binaries_read(tpl):
    assert check(tpl, ingress_allowed(), relay_allowed()) == []


def test_both_binaries_get_the_spool_settings(tpl):
    relays, ingresses = relay_functions(tpl), ingress_containers(tpl)
    assert relays and ingresses
    for names in list(relays.values()) + list(ingresses.values()):
        assert REQUIRED <= names


def test_checker_reports_an_unknown_relay_variable(tpl):
    bad = copy.deepcopy(tpl)
    name = next(iter(relay_functions(bad)))
    bad["Resources"][name]["Properties"]["Environment"]["Variables"]["RELAY_BOGUS_SETTING"] = "x"
    problems = check(bad, ingress_allowed(), relay_allowed())
    assert any("RELAY_BOGUS_SETTING" in p for p in problems), problems


def test_checker_reports_unknown_ingress_variables_and_secrets(tpl):
    bad = copy.deepcopy(tpl)
    name, _ = next(resources(bad, "AWS::ECS::TaskDefinition"))
    container = bad["Resources"][name]["Properties"]["ContainerDefinitions"][0]
    container["Environment"].append({"Name": "INGRESS_LISTEN_ADDRESS", "Value": "0.0.0.0:25"})
    container["Secrets"] = {"Fn::If": ["HasTls", [{"Name": "INGRESS_TLS_PASSWORD", "ValueFrom": "arn"}], NO_VALUE]}
    problems = check(bad, ingress_allowed(), relay_allowed())
    assert any("INGRESS_LISTEN_ADDRESS" in p for p in problems), problems
    assert any("INGRESS_TLS_PASSWORD" in p for p in problems), problems
    # A variable only the relay reads is drift on the ingress side too.
    container["Environment"].append({"Name": "RELAY_SMARTHOST", "Value": "h:25"})
    assert any("RELAY_SMARTHOST" in p for p in check(bad, ingress_allowed(), relay_allowed()))


def test_checker_reports_missing_required_variables(tpl):
    bad = copy.deepcopy(tpl)
    name = next(iter(relay_functions(bad)))
    del bad["Resources"][name]["Properties"]["Environment"]["Variables"]["SPOOL_QUEUE_URL"]
    tname, _ = next(resources(bad, "AWS::ECS::TaskDefinition"))
    env = bad["Resources"][tname]["Properties"]["ContainerDefinitions"][0]["Environment"]
    env[:] = [e for e in env if e.get("Name") != "SPOOL_BUCKET"]
    problems = check(bad, ingress_allowed(), relay_allowed())
    assert any("required SPOOL_QUEUE_URL" in p and p.startswith("relay") for p in problems), problems
    assert any("required SPOOL_BUCKET" in p and p.startswith("ingress") for p in problems), problems


def test_checker_reports_a_missing_relay_function(tpl):
    bad = copy.deepcopy(tpl)
    for name in relay_functions(bad):
        bad["Resources"][name]["Metadata"]["BuildProperties"]["Binary"] = "ingress"
    assert any("no relay function" in p for p in check(bad, ingress_allowed(), relay_allowed()))


def test_entrypoint_variables_feed_contract_variables():
    ingress = set(rust_str_list(INGRESS_CONFIG_RS, "INGRESS_VARS"))
    entry = set(rust_str_list(ENTRYPOINT_RS, "ENTRYPOINT_VARS"))
    assert not entry & ingress, "entrypoint variables must not shadow contract variables"
    for content_var, path_var, _ in entrypoint_file_vars():
        assert content_var in entry
        assert path_var in ingress, f"{content_var} feeds {path_var}, which the ingress does not read"


def test_template_secrets_are_entrypoint_variables(tpl):
    entry = set(rust_str_list(ENTRYPOINT_RS, "ENTRYPOINT_VARS"))
    for name, res in resources(tpl, "AWS::ECS::TaskDefinition"):
        for container in list_items(res["Properties"]["ContainerDefinitions"]):
            secrets = {s["Name"] for s in list_items(container.get("Secrets"))}
            # Secrets are file contents for the entrypoint; the ingress itself takes file paths.
            assert secrets <= entry, f"{name}: {sorted(secrets - entry)} are not entrypoint variables"


def test_dockerfile_env_is_known():
    names = set()
    for line in re.sub(r"\\\n", " ", DOCKERFILE.read_text()).splitlines():
        m = re.match(r"\s*ENV\s+(.*)", line)
        if m:
            names |= set(re.findall(r"([A-Z_][A-Z0-9_]*)=", m.group(1)))
    assert names, "infra/Dockerfile sets no ENV"
    assert names <= ingress_allowed(), sorted(names - ingress_allowed())


def test_sam_local_env_file_matches_the_template(tpl):
    env = json.loads(ENV_JSON.read_text())
    relays = relay_functions(tpl)
    assert set(env) <= set(relays) | {"Parameters"}, set(env)
    for function, values in env.items():
        if function == "Parameters":
            continue
        names = set(values)
        assert names <= relay_allowed(), sorted(names - relay_allowed())
        # `sam local invoke --env-vars` only overrides variables the template declares.
        assert names <= relays[function], sorted(names - relays[function])
        assert REQUIRED <= names


def job_fields() -> tuple[set[str], set[str]]:
    """(all fields, fields without #[serde(default)]) of `pub struct Job` in shared/src/job.rs."""
    src = JOB_RS.read_text()
    m = re.search(r"pub struct Job \{(.*?)\n\}", src, re.S)
    assert m, "shared/src/job.rs: no `pub struct Job`"
    fields, required = set(), set()
    attrs = ""
    for line in m.group(1).splitlines():
        line = line.strip()
        if line.startswith("#["):
            attrs += line
            continue
        fm = re.match(r"pub (\w+):", line)
        if fm:
            fields.add(fm.group(1))
            if "default" not in attrs:
                required.add(fm.group(1))
            attrs = ""
    return fields, required


def test_sample_sqs_event_carries_a_valid_job():
    event = json.loads(SQS_EVENT.read_text())
    records = event["Records"]
    assert records and all(r["eventSource"] == "aws:sqs" for r in records)
    fields, required = job_fields()
    for record in records:
        job = json.loads(record["body"])
        assert set(job) <= fields, sorted(set(job) - fields)
        assert required <= set(job), sorted(required - set(job))
        version = re.search(r"JOB_SCHEMA_VERSION: u32 = (\d+);", (ROOT / "shared" / "src" / "job.rs").read_text())
        assert job["v"] == int(version.group(1)), "the sample is on the schema this build writes"
        assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{26}", job["job_id"]) and job["jobs"] == 1, job
        assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{26}", job["queue_id"]), job["queue_id"]
        digest = hashlib.sha256(job["queue_id"].encode()).hexdigest()
        assert job["message_key"] == f"spool/{digest[:2]}/{job['queue_id']}.eml", "shared/src/keys.rs's layout"
        assert job["recipients"] and all(r["state"] == "pending" for r in job["recipients"])
        assert all(r["address"].lower().endswith("@" + job["domain"]) for r in job["recipients"])
        sample = ROOT / "events" / "message.eml"
        if job.get("size"):
            assert job["size"] == len(sample.read_bytes())


# ---- template invariants the programs rely on ----------------------------------------------


def test_proxy_protocol_matches_the_target_groups(tpl):
    groups = dict(resources(tpl, "AWS::ElasticLoadBalancingV2::TargetGroup"))
    assert groups
    for name, res in groups.items():
        attrs = {a["Key"]: a["Value"] for a in res["Properties"].get("TargetGroupAttributes", [])}
        assert attrs.get("proxy_protocol_v2.enabled") == "true", name
    for name, res in resources(tpl, "AWS::ECS::TaskDefinition"):
        for container in ingress_definitions(res):
            env = {e["Name"]: e.get("Value") for e in list_items(container["Environment"])}
            assert env.get("INGRESS_PROXY_PROTOCOL") == "true", name


def test_listen_ports_match_target_groups_and_port_mappings(tpl):
    ports = {
        res["Properties"]["Port"] for _, res in resources(tpl, "AWS::ElasticLoadBalancingV2::TargetGroup")
    }
    listen = set()
    mapped = set()
    for _, res in resources(tpl, "AWS::ECS::TaskDefinition"):
        for container in ingress_definitions(res):
            mapped |= {p["ContainerPort"] for p in list_items(container.get("PortMappings"))}
            for e in list_items(container["Environment"]):
                if e["Name"] in ("INGRESS_LISTEN", "INGRESS_SUBMISSION_LISTEN", "INGRESS_TLS_LISTEN"):
                    listen |= {int(a.rsplit(":", 1)[1]) for a in e["Value"].split(",")}
    assert ports == listen, (ports, listen)
    assert listen <= mapped
    assert all(p >= 1024 for p in listen), "the image runs as non-root: listen on unprivileged ports"
    front = {res["Properties"]["Port"] for _, res in resources(tpl, "AWS::ElasticLoadBalancingV2::Listener")}
    assert front == {25, 587, 465}


def test_queue_and_function_timeouts(tpl):
    res = tpl["Resources"]
    queue = res["RelayQueue"]["Properties"]
    function = res["RelayFunction"]["Properties"]
    assert int(queue["VisibilityTimeout"]) >= 6 * int(function["Timeout"])
    assert int(queue["MaximumMessageSize"]) in (262144, 1048576)
    assert int(tpl["Parameters"]["MaxReceiveCount"]["MinValue"]) >= 5
    assert queue["RedrivePolicy"]["maxReceiveCount"] == {"Ref": "MaxReceiveCount"}
    events = function["Events"]
    assert any(e["Type"] == "SQS" and "ReportBatchItemFailures" in e["Properties"]["FunctionResponseTypes"]
               for e in events.values())


def test_no_secret_is_resolved_into_the_template_and_the_relay_reads_its_own(tpl):
    """The smarthost password reaches the relay as an ARN it reads at runtime, never as a value a
    reader of the function's configuration (or of the stack) could see."""
    assert "{{resolve:" not in TEMPLATE.read_text(), "a dynamic reference puts the secret's value in the template"
    function = tpl["Resources"]["RelayFunction"]["Properties"]
    env = function["Environment"]["Variables"]
    assert "RELAY_SMARTHOST_PASSWORD" not in env
    assert env["RELAY_SMARTHOST_PASSWORD_SECRET"] == {
        "Fn::If": ["HasSmarthostPassword", {"Ref": "SmarthostPasswordSecretArn"}, NO_VALUE]}
    statements = tpl["Resources"]["RelayFunctionRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    [grant] = [st["Fn::If"][1] for st in statements if isinstance(st, dict) and "Fn::If" in st
               and st["Fn::If"][0] == "HasSmarthostPassword"]
    assert grant["Resource"] == {"Ref": "SmarthostPasswordSecretArn"}, "that one secret, nothing else"
    assert grant["Action"] == {"Fn::If": ["SmarthostPasswordInSsm", "ssm:GetParameter", "secretsmanager:GetSecretValue"]}
    pattern = re.compile(tpl["Parameters"]["SmarthostPasswordSecretArn"]["AllowedPattern"])
    for ok in ("", "arn:aws:secretsmanager:eu-west-1:123456789012:secret:relay/pw-AbCdEf",
               "arn:aws:ssm:eu-west-1:123456789012:parameter/relay/pw"):
        assert pattern.fullmatch(ok), ok
    for bad in ("relay/pw", "arn:aws:s3:::bucket/key", "{{resolve:secretsmanager:relay/pw}}"):
        assert not pattern.fullmatch(bad), bad


# ---------------------------------------------------------------------------------------------
# Observability: the dashboard and alarms read the metrics the programs emit.

RELAY_METRICS_RS = ROOT / "functions" / "relay" / "src" / "metrics.rs"
INGRESS_METRICS_RS = ROOT / "functions" / "ingress" / "src" / "metrics.rs"


def metric_names(path: Path) -> set[str]:
    """The `pub const NAME: &str = "Metric";` names of a metrics.rs."""
    return set(re.findall(r'pub const [A-Z_]+: &str = "([A-Z][A-Za-z]+)";', path.read_text()))


def test_dashboard_is_json_and_shows_every_metric_the_programs_emit(tpl):
    body, variables = tpl["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    names = set(re.findall(r"\$\{([^}]+)\}", body))
    assert names <= set(variables) | set(tpl["Parameters"]) | {"AWS::Region"}, names
    dashboard = json.loads(re.sub(r"\$\{[^}]+\}", "1", body))
    shown = {m[1] for w in dashboard["widgets"] for m in w["properties"].get("metrics", []) if len(m) > 1
             and isinstance(m[1], str)}
    emitted = metric_names(RELAY_METRICS_RS) | metric_names(INGRESS_METRICS_RS)
    assert emitted == {"Sent", "Deferred", "Bounced", "DeliveryDelay", "Accepted", "Rejected", "TempFailed",
                       "AuthChecked", "Blocklisted", "SpamRejected", "FilterUnavailable",
                       "Suppressed", "AsyncBounces", "Complaints", "AuthLockouts"}
    assert emitted <= shown, emitted - shown
    alarms = dashboard["widgets"][-1]["properties"]["alarms"]
    alarm_resources = {k for k, v in tpl["Resources"].items() if v["Type"] == "AWS::CloudWatch::Alarm"}
    assert len(alarms) == len(alarm_resources), "every alarm is on the dashboard"


def test_metric_alarms_name_emitted_metrics_in_the_configured_namespace(tpl):
    emitted = metric_names(RELAY_METRICS_RS) | metric_names(INGRESS_METRICS_RS)
    for name in ("BounceRateAlarm", "TempFailedAlarm"):
        props = tpl["Resources"][name]["Properties"]
        metrics = [m["MetricStat"]["Metric"] for m in props.get("Metrics", []) if "MetricStat" in m] or [props]
        for m in metrics:
            assert m["Namespace"] == {"Ref": "MetricsNamespace"}, name
            assert m["MetricName"] in emitted, (name, m["MetricName"])
    env = tpl["Resources"]["RelayFunction"]["Properties"]["Environment"]["Variables"]
    assert env["METRICS_NAMESPACE"] == {"Ref": "MetricsNamespace"}
