#!/usr/bin/env python3
"""Environment-variable consistency between the Rust binaries and the deployments.

For every binary (gateway, agent, metrics-sidecar, autoscaler, bootstrap = the Lambda) it
extracts from the source the environment variables the binary reads, then checks each place
that runs the binary:

  * docker-compose.yml: every service built from the Euglena image (the binary is the first
    word of its `command`);
  * deploy/*.yaml (CloudFormation): every ECS container definition running the Euglena image
    and every Lambda function running the `bootstrap` binary.

Checks (any failure exits 1):
  1. no variable is set that nothing reads (except the documented ALLOWLIST below);
  2. no required variable is missing (ECS_CLUSTER and ECS_SERVICE for the Lambda, and
     whatever the source marks required);
  3. every variable a binary reads is either configurable through compose (and so listed in
     .env.example) or named in NOT_IN_COMPOSE with a reason;
  4. .env.example and the `${VAR}` interpolations of docker-compose.yml name the same set;
  5. every compose service runs a binary that exists in the workspace, on the port ARCHITECTURE §1
     gives it, has a healthcheck, and depends on others only with condition service_healthy; a
     service or ECS container running a binary with a listener is checked with that binary's
     own `healthcheck` subcommand (the image has no curl or shell);
  6. self-test of the extractor: facts known to be in the source must be found (so a change
     in coding style that the regexes miss fails loudly instead of passing vacuously).

How reads are found: in each crate's src/ (tests stripped), calls of the runtime `Env` accessors
(`env.string("X"`, `env.parse("X"`, `env.parse::<T>("X"`, `env.ranged("X"`, `env.seconds("X"`,
`env.millis("X"`, `env.bool("X"`, `env.opt_string("X"`, `env.raw("X"`), closures defined over
them (`let required = |var: &str| env.opt_string(var)...; required("X")`), `std::env::var("X")`
/ `var_os`, and tracing's `EnvFilter::*_default_env` (RUST_LOG). Reads inside
`impl T { fn from_env .. }` belong to T; a binary reads what its entry file's `T::from_env`
calls reach (transitively), plus the reads outside any from_env of its own crate and of the shared
crates (proto and runtime).

Usage: check_env_vars.py [--root DIR] [--quiet]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

try:
    import yaml
except ImportError:  # pragma: no cover - the deploy checks install PyYAML with cfn-lint
    sys.exit("check_env_vars: PyYAML is required (.venv/bin/pip install pyyaml)")

# The shared crates come first: every binary may read what they read.
SHARED = ["proto", "runtime"]
CRATES = [*SHARED, "gateway", "agent", "metrics-sidecar", "autoscaler"]

# ARCHITECTURE §1: the port each long-running binary listens on, and the variable that moves it.
CONTRACT_PORTS = {"gateway": (8080, "GATEWAY_ADDR"), "agent": (8081, "AGENT_HEALTH_ADDR"),
              "metrics-sidecar": (8082, "METRICS_SIDECAR_ADDR")}

# Variables a binary does not read in its own source but that are read on its behalf by a
# library or the runtime, so setting them is legitimate. Keep the reason next to each.
AWS_SDK_VARS = {
    "AWS_REGION": "aws-config region provider (metrics-sidecar/src/aws.rs loads aws-config)",
    "AWS_DEFAULT_REGION": "aws-config region provider",
    "AWS_ENDPOINT_URL": "aws-config endpoint override, e.g. a local moto_server",
    "AWS_ACCESS_KEY_ID": "aws-config credential chain",
    "AWS_SECRET_ACCESS_KEY": "aws-config credential chain",
    "AWS_SESSION_TOKEN": "aws-config credential chain",
    "AWS_PROFILE": "aws-config credential chain",
}
ALLOWLIST: dict[str, dict[str, str]] = {
    # metrics-sidecar and the Lambda build their clients with metrics_sidecar::aws::load().
    "metrics-sidecar": AWS_SDK_VARS,
    "bootstrap": AWS_SDK_VARS,
}

# Variables a binary reads that compose deliberately does not expose through .env.
NOT_IN_COMPOSE = {
    "REDIS_SENTINELS": "multi-node Redis only (docs/DEPLOY.md, scripts/chaos-cluster.sh); compose runs one Redis",
    "REDIS_SENTINEL_MASTER": "with REDIS_SENTINELS only",
    "REDIS_SENTINEL_PASSWORD": "with REDIS_SENTINELS only",
    "HOSTNAME": "set by Docker to the container id; the agent's default AGENT_ID uses it",
    "PATH": "the image's PATH; `autoscaler local` looks for `agent` on it",
    "AGENT_ID": "must be unique per replica; the default ({host}-{pid}-{rand}) is",
    "AGENT_BIN": "the image puts `agent` beside `autoscaler`, the default location",
    "GATEWAY_ADDR": "fixed to the contract's 0.0.0.0:8080 in compose (the port mapping depends on it)",
    "AGENT_HEALTH_ADDR": "fixed to the contract's 0.0.0.0:8081 in compose (ARCHITECTURE §1)",
    "METRICS_SIDECAR_ADDR": "fixed to the contract's 0.0.0.0:8082 in compose (ARCHITECTURE §1)",
    "REDIS_URL": "fixed to the compose `redis` service",
    "RABBITMQ_URL": "built from RABBITMQ_USER/RABBITMQ_PASSWORD and the compose `rabbitmq` service",
    "REDIS_CA_FILE": "the compose stack's redis speaks plain redis:// on its own network; a private CA is for a self-hosted TLS server (docs/DEPLOY.md)",
    "RABBITMQ_CA_FILE": "the compose stack's rabbitmq speaks plain amqp:// on its own network; a private CA is for a self-hosted TLS broker (docs/DEPLOY.md)",
    "ECS_CLUSTER": "Lambda only (CloudFormation sets it)",
    "ECS_SERVICE": "Lambda only (CloudFormation sets it)",
    "DRY_RUN": "Lambda only (CloudFormation sets it)",
    "ECS_AGENT_URI": "injected by the ECS agent into every ECS task; absent locally",
    "ECS_PROTECTION_MINUTES": "task scale-in protection only acts on ECS (needs ECS_AGENT_URI)",
    "ECS_PROTECTION_RENEW_SECONDS": "task scale-in protection only acts on ECS (needs ECS_AGENT_URI)",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "standard OpenTelemetry override; compose exposes OTEL_EXPORTER_OTLP_ENDPOINT, which turns tracing on",
    "OTEL_SDK_DISABLED": "standard OpenTelemetry switch; leaving OTEL_EXPORTER_OTLP_ENDPOINT empty is compose's off",
    "OTEL_TRACES_EXPORTER": "standard OpenTelemetry switch; leaving OTEL_EXPORTER_OTLP_ENDPOINT empty is compose's off",
    "OTEL_SERVICE_NAME": "each process names its spans after its binary (gateway, agent, ...), which compose keeps",
}

# Must be set wherever the binary runs; merged with what the source marks required.
# (The gateway needs signing keys from one of several variables; it checks that itself.)
REQUIRED = {"bootstrap": {"ECS_CLUSTER", "ECS_SERVICE"}}

# Interpolated in docker-compose.yml but meant for compose itself or third-party images.
COMPOSE_ONLY_VARS = {"EUGLENA_IMAGE", "REDIS_IMAGE", "RABBITMQ_IMAGE", "QDRANT_IMAGE",
                     "GATEWAY_PORT", "RABBITMQ_MANAGEMENT_PORT", "AGENT_REPLICAS",
                     "RABBITMQ_USER", "RABBITMQ_PASSWORD"}

NAME = r"([A-Z][A-Z0-9_]*)"
ACCESSORS = r"(?:string|parse|ranged|seconds|millis|bool|opt_string|raw)"
TURBOFISH = r"(?:\s*::\s*<[^()]*?>)?"
ENV_READ = re.compile(r"\benv\s*\.\s*" + ACCESSORS + TURBOFISH + r"\s*\(\s*\"" + NAME + r"\"")
STD_READ = re.compile(r"\b(?:std\s*::\s*)?env\s*::\s*var(?:_os)?\s*\(\s*\"" + NAME + r"\"")
CLOSURE_DEF = re.compile(r"\blet\s+(\w+)\s*=\s*\|[^|]*\|[^;]*?\benv\s*\.\s*" + ACCESSORS + r"\s*\(")
RUST_LOG_READ = re.compile(r"EnvFilter\s*::\s*(?:try_)?from_default_env")
FROM_ENV_CALL = re.compile(r"\b([A-Z]\w*)\s*::\s*from_env\s*\(")
IMPL_BLOCK = re.compile(r"\bimpl(?:\s*<[^>]*>)?\s+(?:[\w:]+\s+for\s+)?([A-Z]\w*)(?:<[^>]*>)?\s*\{")
REQUIRED_OPT = re.compile(r"\benv\s*\.\s*opt_string\s*\(\s*\"" + NAME + r"\"\s*\)\s*\.\s*ok_or")


def strip_comments(src: str) -> str:
    """Removes // and /* */ comments, keeping string and char literals (and line count)."""
    out, i, n = [], 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            i = n if j < 0 else j
        elif src.startswith("/*", i):
            j = src.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("\n" * src.count("\n", i, j))
            i = j
        elif c == "r" and re.match(r'r#*"', src[i:i + 10]) and (i == 0 or not (src[i - 1].isalnum() or src[i - 1] == "_")):
            hashes = re.match(r'r(#*)"', src[i:]).group(1)
            end = src.find('"' + hashes, i + 2 + len(hashes))
            end = n if end < 0 else end + 1 + len(hashes)
            out.append(src[i:end])
            i = end
        elif c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            out.append(src[i:j + 1])
            i = j + 1
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", src[i:i + 4]):
            m = re.match(r"'(\\.|[^\\'])'", src[i:i + 4])
            out.append(m.group(0))
            i += len(m.group(0))
        else:
            out.append(c)
            i += 1
    return "".join(out)


def block_end(src: str, open_brace: int) -> int:
    """Index just past the brace matching src[open_brace] (comments already stripped)."""
    depth, i, n = 0, open_brace, len(src)
    while i < n:
        c = src[i]
        if c == '"':
            i += 1
            while i < n and src[i] != '"':
                i += 2 if src[i] == "\\" else 1
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return n


def strip_test_modules(src: str) -> str:
    """Drops `#[cfg(test)] mod x { .. }` blocks: tests set variables, they do not read them."""
    while True:
        m = re.search(r"#\[cfg\(test\)\]\s*(?:pub\s+)?mod\s+\w+\s*\{", src)
        if not m:
            return src
        end = block_end(src, m.end() - 1)
        src = src[:m.start()] + src[end:]


def reads_in(text: str) -> tuple[set[str], set[str]]:
    """(variables read, variables marked required) in a piece of source."""
    found = {m.group(1) for m in ENV_READ.finditer(text)} | {m.group(1) for m in STD_READ.finditer(text)}
    required = {m.group(1) for m in REQUIRED_OPT.finditer(text)}
    for closure in {m.group(1) for m in CLOSURE_DEF.finditer(text)}:
        calls = {m.group(1) for m in re.finditer(r"\b" + closure + r"\s*\(\s*\"" + NAME + r"\"", text)}
        found |= calls
        if re.search(r"\blet\s+" + closure + r"\s*=\s*\|[^;]*ok_or", text):
            required |= calls
    if RUST_LOG_READ.search(text):
        found.add("RUST_LOG")
    return found, required


class Source:
    """The env reads of the workspace, by `from_env` impl and by crate."""

    def __init__(self, root: Path):
        self.root = root
        self.impls: dict[tuple[str, str], dict] = {}  # (crate, Type) -> reads/required/calls
        self.globals: dict[str, set[str]] = {}       # crate -> reads outside any from_env
        self.global_required: dict[str, set[str]] = {}
        self.entries: dict[str, tuple[str, Path]] = {}  # binary -> (crate, entry file)
        for crate in CRATES:
            self._scan_crate(crate)

    def _scan_crate(self, crate: str) -> None:
        src_dir = self.root / crate / "src"
        self.globals[crate], self.global_required[crate] = set(), set()
        for path in sorted(src_dir.rglob("*.rs")):
            text = strip_test_modules(strip_comments(path.read_text()))
            rest = text
            for m in IMPL_BLOCK.finditer(text):
                body = text[m.end() - 1:block_end(text, m.end() - 1)]
                fm = re.search(r"\bfn\s+from_env\s*\([^)]*\)[^{]*\{", body)
                if not fm:
                    continue
                fbody = body[fm.end() - 1:block_end(body, fm.end() - 1)]
                found, required = reads_in(fbody)
                calls = {c.group(1) for c in FROM_ENV_CALL.finditer(fbody)}
                self.impls[(crate, m.group(1))] = {"reads": found, "required": required, "calls": calls}
                rest = rest.replace(fbody, "", 1)
            found, required = reads_in(rest)
            self.globals[crate] |= found
            self.global_required[crate] |= required
        manifest = (self.root / crate / "Cargo.toml").read_text()
        bins = re.findall(r'\[\[bin\]\]\s*name\s*=\s*"([^"]+)"\s*path\s*=\s*"([^"]+)"', manifest)
        if bins:
            for name, rel in bins:
                self.entries[name] = (crate, self.root / crate / rel)
        elif (src_dir / "main.rs").exists():
            self.entries[crate] = (crate, src_dir / "main.rs")

    def _resolve(self, crate: str, type_name: str) -> tuple[str, str] | None:
        for key in [(crate, type_name), *((shared, type_name) for shared in SHARED)]:
            if key in self.impls:
                return key
        matches = [k for k in self.impls if k[1] == type_name]
        return matches[0] if len(matches) == 1 else None

    def binary(self, name: str) -> tuple[set[str], set[str]]:
        """(reads, required) of one binary."""
        crate, entry = self.entries[name]
        text = strip_comments(entry.read_text())
        reads = set(self.globals[crate]).union(*(self.globals[shared] for shared in SHARED))
        required = set(self.global_required[crate])
        direct, direct_req = reads_in(text)
        reads |= direct
        required |= direct_req
        if "runtime::telemetry::init" in text:
            reads |= {"LOG_FORMAT", "RUST_LOG"}
        todo = [c.group(1) for c in FROM_ENV_CALL.finditer(text)]
        seen: set[tuple[str, str]] = set()
        while todo:
            key = self._resolve(crate, todo.pop())
            if key is None or key in seen:
                continue
            seen.add(key)
            reads |= self.impls[key]["reads"]
            required |= self.impls[key]["required"]
            todo.extend(self.impls[key]["calls"])
        return reads, required | REQUIRED.get(name, set())


class Report:
    def __init__(self, quiet: bool):
        self.errors: list[str] = []
        self.quiet = quiet

    def info(self, msg: str) -> None:
        if not self.quiet:
            print(msg)

    def error(self, msg: str) -> None:
        self.errors.append(msg)
        print(f"ERROR: {msg}")


# ---------------------------------------------------------------- CloudFormation loading
class CfnLoader(yaml.SafeLoader):
    pass


def _cfn_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node):
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


CfnLoader.add_multi_constructor("!", _cfn_tag)


def flatten(items) -> list:
    """A CloudFormation list whose entries may be Fn::If: both branches, minus AWS::NoValue."""
    if items is None or items == {"Ref": "AWS::NoValue"}:
        return []
    if isinstance(items, dict) and "Fn::If" in items:
        return [x for branch in items["Fn::If"][1:] for x in flatten(branch)]
    if isinstance(items, list):
        return [x for item in items for x in flatten(item)]
    return [items]


def literal(value) -> str | None:
    return value if isinstance(value, str) else None


# ---------------------------------------------------------------- checks
def check_service(report: Report, where: str, binaries: list[str], keys: set[str],
                  reads: dict[str, set[str]], required: dict[str, set[str]]) -> None:
    readable = set().union(*(reads[b] for b in binaries))
    allowed = set().union(*(ALLOWLIST.get(b, {}).keys() for b in binaries))
    report.info(f"{where}: runs {' + '.join(binaries)}; sets {len(keys)} variable(s)")
    for var in sorted(keys - readable - allowed):
        report.error(f"{where} sets {var}, which {'/'.join(binaries)} never reads")
    for var in sorted(keys & allowed - readable):
        reason = next(ALLOWLIST[b][var] for b in binaries if var in ALLOWLIST.get(b, {}))
        report.info(f"  {var}: allowed ({reason})")
    need = set().union(*(required[b] for b in binaries[:1]))
    for var in sorted(need - keys):
        report.error(f"{where} does not set {var}, which {binaries[0]} requires")


def compose_binaries(service: dict) -> list[str]:
    command = service.get("command") or service.get("entrypoint") or []
    if isinstance(command, str):
        command = command.split()
    if not command:
        return []
    first = Path(command[0]).name
    if first == "autoscaler" and command[1:2] == ["local"]:
        return ["autoscaler", "agent"]  # ARCHITECTURE §6: its agent children inherit its environment
    return [first]


def compose_env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


# A structural subset of the Compose specification: the fallback when docker-compose itself
# (which validates against the full schema) cannot be installed.
COMPOSE_TOP_KEYS = {"version", "name", "services", "volumes", "networks", "configs", "secrets"}
COMPOSE_SERVICE_KEYS = {
    "build", "cap_add", "cap_drop", "command", "container_name", "cpus", "depends_on", "deploy",
    "entrypoint", "env_file", "environment", "expose", "extra_hosts", "healthcheck", "hostname",
    "image", "init", "labels", "logging", "mem_limit", "networks", "pid", "ports", "profiles",
    "read_only", "restart", "security_opt", "shm_size", "stop_grace_period", "stop_signal",
    "tmpfs", "ulimits", "user", "volumes", "working_dir"}
COMPOSE_HEALTHCHECK_KEYS = {"test", "interval", "timeout", "retries", "start_period", "disable"}


def check_compose_structure(report: Report, doc) -> None:
    if not isinstance(doc, dict) or not isinstance(doc.get("services"), dict):
        report.error("docker-compose.yml: no services mapping")
        return
    for key in doc:
        if key not in COMPOSE_TOP_KEYS and not str(key).startswith("x-"):
            report.error(f"docker-compose.yml: unknown top-level key {key!r}")
    for name, svc in doc["services"].items():
        if not isinstance(svc, dict):
            report.error(f"compose service {name} is not a mapping")
            continue
        for key in set(svc) - COMPOSE_SERVICE_KEYS:
            report.error(f"compose service {name}: unknown key {key!r}")
        for key in set(svc.get("healthcheck") or {}) - COMPOSE_HEALTHCHECK_KEYS:
            report.error(f"compose service {name}: unknown healthcheck key {key!r}")
        if not isinstance(svc.get("environment", {}), (dict, list)):
            report.error(f"compose service {name}: environment must be a mapping or a list")
        for vol in svc.get("volumes", []):
            source = str(vol).split(":")[0]
            if not source.startswith((".", "/")) and source not in (doc.get("volumes") or {}):
                report.error(f"compose service {name}: volume {source!r} is not declared under volumes")


def check_compose(report: Report, root: Path, src: Source, reads, required) -> None:
    path = root / "docker-compose.yml"
    text = path.read_text()
    doc = yaml.safe_load(text)
    check_compose_structure(report, doc)
    services = doc.get("services", {})
    exposed: dict[str, set[str]] = {}
    ours = 0
    for name, svc in services.items():
        if not svc.get("healthcheck") or svc["healthcheck"].get("disable"):
            report.error(f"compose service {name} has no healthcheck")
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list) or any((d or {}).get("condition") != "service_healthy" for d in deps.values()):
            report.error(f"compose service {name}: depends_on must use condition: service_healthy")
        if "env_file" in svc:
            report.error(f"compose service {name} uses env_file; list its variables under environment")
        binaries = compose_binaries(svc)
        if not binaries or binaries[0] not in src.entries:
            if "build" in svc:
                report.error(f"compose service {name} builds the Euglena image but runs no workspace binary")
            continue
        ours += 1
        env = compose_env(svc)
        check_service(report, f"docker-compose.yml service {name}", binaries, set(env), reads, required)
        for b in binaries:
            exposed.setdefault(b, set()).update(env)
        if binaries[0] in CONTRACT_PORTS:
            port, var = CONTRACT_PORTS[binaries[0]]
            if var in env and not env[var].endswith(f":{port}"):
                report.error(f"compose service {name}: {var}={env[var]} is not the contract's port {port}")
            probe = [str(x) for x in svc.get("healthcheck", {}).get("test", [])]
            if probe != ["CMD", binaries[0], "healthcheck"]:
                report.error(f"compose service {name}: healthcheck must be [CMD, {binaries[0]}, healthcheck] "
                             f"(it probes the binary's own {var}), not {probe}")
        if binaries[0] == "gateway":
            ports = [str(p) for p in svc.get("ports", [])]
            if not any(p.split(":")[-1].split("/")[0] == "8080" for p in ports):
                report.error(f"compose service {name}: gateway must publish container port 8080 (ARCHITECTURE §1)")
    if ours == 0:
        report.error("docker-compose.yml runs no Euglena binary")
    # 3. every variable a binary reads is reachable from compose, or deliberately not.
    for b in sorted(exposed):
        missing = reads[b] - exposed[b] - set(NOT_IN_COMPOSE)
        for var in sorted(missing):
            report.error(f"{b} reads {var}, but no compose service running it sets it "
                         f"(expose it via .env or add it to NOT_IN_COMPOSE with a reason)")
    # 4. .env.example <-> interpolations.
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    interpolated = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", code))
    example = set()
    for line in (root / ".env.example").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            example.add(line.split("=", 1)[0].strip())
    for var in sorted(interpolated - example):
        report.error(f"docker-compose.yml interpolates ${{{var}}}, which .env.example does not list")
    for var in sorted(example - interpolated):
        report.error(f".env.example lists {var}, which docker-compose.yml never uses")
    allowed = set().union(*(set(v) for v in ALLOWLIST.values()))
    unknown = example - COMPOSE_ONLY_VARS - allowed - set().union(*reads.values())
    for var in sorted(unknown):
        report.error(f".env.example lists {var}, which no binary reads and compose does not use itself")
    report.info(f".env.example: {len(example)} variables, all used by docker-compose.yml")


def check_cloudformation(report: Report, root: Path, src: Source, reads, required) -> None:
    templates = sorted((root / "deploy").glob("*.yaml")) + sorted((root / "deploy").glob("*.yml"))
    if not templates:
        report.error("no CloudFormation template in deploy/")
    for path in templates:
        doc = yaml.load(path.read_text(), Loader=CfnLoader)  # noqa: S506 - SafeLoader subclass
        if not isinstance(doc, dict) or "Resources" not in doc:
            continue
        seen = 0
        for rid, res in doc["Resources"].items():
            props = res.get("Properties", {})
            if res.get("Type") == "AWS::ECS::TaskDefinition":
                for cdef in flatten(props.get("ContainerDefinitions", [])):
                    command = [literal(c) for c in cdef.get("Command", [])]
                    if not command or Path(command[0] or "").name not in src.entries:
                        continue
                    seen += 1
                    binary = Path(command[0]).name
                    binaries = ["autoscaler", "agent"] if command[:2] == ["autoscaler", "local"] else [binary]
                    keys = {e["Name"] for e in flatten(cdef.get("Environment", []))}
                    keys |= {s["Name"] for s in flatten(cdef.get("Secrets", []))}
                    where = f"{path.name} {rid} container {literal(cdef.get('Name'))}"
                    check_service(report, where, binaries, keys, reads, required)
                    if binary in CONTRACT_PORTS:
                        port = CONTRACT_PORTS[binary][0]
                        mapped = {m.get("ContainerPort") for m in flatten(cdef.get("PortMappings", []))}
                        probe = [str(x) for x in cdef.get("HealthCheck", {}).get("Command", [])]
                        if port not in mapped:
                            report.error(f"{where}: no port mapping for the contract's port {port}")
                        if probe != ["CMD", binary, "healthcheck"]:
                            report.error(f"{where}: health check must be [CMD, {binary}, healthcheck], not {probe}")
            elif res.get("Type") in ("AWS::Lambda::Function", "AWS::Serverless::Function"):
                if props.get("Handler") != "bootstrap" and "provided" not in str(props.get("Runtime")):
                    continue
                seen += 1
                if props.get("Runtime") != "provided.al2023":
                    report.error(f"{path.name} {rid}: the Lambda runtime must be provided.al2023")
                keys = set((props.get("Environment") or {}).get("Variables", {}) or {})
                check_service(report, f"{path.name} {rid} (Lambda)", ["bootstrap"], keys, reads, required)
        report.info(f"{path.name}: {seen} Euglena container(s)/function(s) checked")


def default_in_source(root: Path, var: str) -> int | None:
    """The numeric default the agent's source gives `var` (e.g. env.seconds("X", 900))."""
    for path in sorted((root / "agent" / "src").rglob("*.rs")):
        m = re.search(r"\benv\s*\.\s*\w+\s*(?:::<[^()]*?>)?\s*\(\s*\"" + var + r"\"\s*,\s*(\d+)", path.read_text())
        if m:
            return int(m.group(1))
    return None


def check_consumer_timeout(report: Report, root: Path) -> None:
    """ARCHITECTURE §3: TASK_TIMEOUT_SECONDS (+ the drain) must stay below the broker's consumer_timeout."""
    task = default_in_source(root, "TASK_TIMEOUT_SECONDS")
    drain = default_in_source(root, "AGENT_DRAIN_SECONDS")
    if task is None or drain is None:
        report.error("could not find the defaults of TASK_TIMEOUT_SECONDS / AGENT_DRAIN_SECONDS in agent/src")
        return
    for line in (root / ".env.example").read_text().splitlines():
        m = re.match(r"(TASK_TIMEOUT_SECONDS|AGENT_DRAIN_SECONDS)=(\d+)\s*$", line.strip())
        if m:
            task, drain = (int(m.group(2)), drain) if m.group(1) == "TASK_TIMEOUT_SECONDS" else (task, int(m.group(2)))
    for path in sorted((root / "deploy").glob("*.yaml")):
        doc = yaml.load(path.read_text(), Loader=CfnLoader)  # noqa: S506
        param = (doc.get("Parameters") or {}).get("TaskTimeoutSeconds")
        if param:
            task = max(task, int(param.get("MaxValue", param.get("Default", task))))
    limit_ms = (task + drain) * 1000
    files = [root / "deploy" / "rabbitmq" / "20-euglena.conf"] + sorted((root / "deploy").glob("*.yaml"))
    found, bad = 0, len(report.errors)
    for path in files:
        for m in re.finditer(r"consumer_timeout(?:\s*=\s*|\s+)(\d+)\b", path.read_text()):
            found += 1
            value = int(m.group(1))
            if value != 0 and value <= limit_ms:
                report.error(f"{path.relative_to(root)}: consumer_timeout {value} ms is not above "
                             f"TASK_TIMEOUT_SECONDS + AGENT_DRAIN_SECONDS = {limit_ms} ms")
    if found == 0:
        report.error("no consumer_timeout setting found in deploy/ (ARCHITECTURE §3 needs it raised)")
    if len(report.errors) == bad:
        report.info(f"consumer_timeout: {found} setting(s), all above the longest run + drain ({limit_ms} ms)")


def self_test(report: Report, reads: dict[str, set[str]], required: dict[str, set[str]]) -> None:
    expect = {
        "gateway": {"SUPABASE_JWT_SECRET", "MAX_MANDATE_CHARS", "REDIS_URL", "AGENT_INPUT_QUEUE",
                    "LOG_FORMAT", "RUST_LOG", "PUBLISH_TIMEOUT_MS"},
        "agent": {"QDRANT_URL", "OPENAI_API_KEY", "LLM_TEMPERATURE", "TASK_TIMEOUT_SECONDS", "HOSTNAME"},
        "metrics-sidecar": {"CLOUDWATCH_ENABLED", "METRICS_INTERVAL_SECONDS", "RABBITMQ_URL"},
        "autoscaler": {"AUTOSCALER_INTERVAL_SECONDS", "AGENT_BIN", "MIN_WORKERS", "REDIS_URL"},
        "bootstrap": {"ECS_CLUSTER", "ECS_SERVICE", "DRY_RUN", "MAX_WORKERS", "CLOUDWATCH_NAMESPACE"},
    }
    for binary, names in expect.items():
        if binary not in reads:
            report.error(f"self-test: binary {binary} not found in the workspace")
            continue
        for var in sorted(names - reads[binary]):
            report.error(f"self-test: the extractor missed {var} in {binary} (did the code style change?)")
    if not {"ECS_CLUSTER", "ECS_SERVICE"} <= required.get("bootstrap", set()):
        report.error("self-test: ECS_CLUSTER/ECS_SERVICE not detected as required by bootstrap")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    report = Report(args.quiet)
    src = Source(args.root)
    reads, required = {}, {}
    for binary in sorted(src.entries):
        reads[binary], required[binary] = src.binary(binary)
        report.info(f"{binary} reads {len(reads[binary])}: {' '.join(sorted(reads[binary]))}")
        if required[binary]:
            report.info(f"{binary} requires: {' '.join(sorted(required[binary]))}")
    self_test(report, reads, required)
    check_compose(report, args.root, src, reads, required)
    check_cloudformation(report, args.root, src, reads, required)
    check_consumer_timeout(report, args.root)
    if report.errors:
        print(f"check_env_vars: {len(report.errors)} problem(s)")
        return 1
    print("check_env_vars: environment variables consistent (source, compose, CloudFormation)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
