"""The documentation stays true: README.md and every page in docs/.

- Every YAML example (a ```yaml block), and every config in docs/plugins.md's
  table of built-in plugins, is validated: configs and config
  fragments by `meshgate validate` (a fragment is placed in the smallest
  config around it: a route for a `filters:` list, a listener for a list of
  listeners, stub clusters for cluster names nobody declares, the
  repository's C example plugins built for plugin names that are not
  built in); the Kubernetes fragment by `kubernetes-validate`, inside the
  NetworkPolicy it belongs to. An example of a shape this file does not
  know fails, so that no example goes unchecked.
- Links between pages resolve (file and #anchor), and the repository paths
  the pages name exist.
- Each docs page says which tests check it and the command that runs them.
- The README's layout table names every folder under Sources/,
  Sources/GatewayHost/ and Plugins/, and nothing that is gone.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

import pki
from conftest import REPO_ROOT
from meshkit import addr, free_port

DOCS = REPO_ROOT / "docs"
PAGES = [REPO_ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
HEADER_DIR = REPO_ROOT / "Sources" / "FilterABI" / "include"
C_EXAMPLES = REPO_ROOT / "Plugins" / "examples"
KUBERNETES_VERSION = "1.37.0"
BUILT_IN_PLUGINS = {"round_robin", "least_conn", "random", "consistent_hash", "retry", "hedge", "circuit_breaker",
                    "tracing", "rate_limit", "mirror", "outlier_detection"}
CONFIG_KEYS = {"runtime", "admin", "listeners", "clusters", "plugin_dir", "plugins"}
DESCRIPTION_KEYS = {"services", "load_balancer", "retry_policy", "mtls", "connection_pool", "hedging"}
NETWORK_POLICY_RULE_KEYS = {"from", "ports"}


def rel(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT))


# --------------------------------------------------------------------------
# YAML examples


@dataclass
class Example:
    page: Path
    line: int      # the line of the opening fence
    text: str      # dedented

    @property
    def where(self) -> str:
        return f"{rel(self.page)}:{self.line}"


FENCE = re.compile(r"^([ \t]*)```(?:yaml|yml)[ \t]*\n(.*?)^[ \t]*```[ \t]*$", re.S | re.M | re.I)


def yaml_examples() -> list[Example]:
    found = []
    for page in PAGES:
        text = page.read_text()
        for m in FENCE.finditer(text):
            found.append(Example(page, text[:m.start()].count("\n") + 1, textwrap.dedent(m.group(2))))
    return found


EXAMPLES = yaml_examples()


def test_the_pages_have_their_yaml_examples():
    """The extraction finds the examples (a changed fence would otherwise
    leave every example unchecked and this file green)."""
    pages = {rel(e.page) for e in EXAMPLES}
    for page in ("docs/configuration.md", "docs/plugins.md", "docs/traffic.md", "docs/discovery.md", "docs/operations.md"):
        assert page in pages, f"no ```yaml example found in {page}"
    assert len(EXAMPLES) >= 10, [e.where for e in EXAMPLES]


def values_of(node, key: str):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key and isinstance(v, str):
                yield v
            yield from values_of(v, key)
    elif isinstance(node, list):
        for item in node:
            yield from values_of(item, key)


def plugin_names(doc: dict) -> set[str]:
    names = set()
    for listener in doc.get("listeners") or []:
        for route in listener.get("routes") or []:
            for f in route.get("filters") or []:
                names.add(f["plugin"])
    return names


def stub_listener(routes: list[dict]) -> dict:
    return {"name": "docs-test", "address": addr(free_port()), "routes": routes}


def route_to(cluster: str, **extra) -> dict:
    return {"match": {"service": "mesh.v1.MeshService"}, "cluster": cluster, **extra}


def complete_config(example: Example, doc, workdir: Path, bins, changed: bool = False) -> tuple[str | None, str]:
    """The config text `meshgate validate` gets for an example, and what
    was added around it; None when the example is no config of a known
    shape."""
    added = []
    if isinstance(doc, dict) and set(doc) == {"filters"}:
        doc = {"listeners": [stub_listener([route_to("mesh", filters=doc["filters"])])]}
        added.append("a listener and route around the filters")
    elif isinstance(doc, list) and doc and all(isinstance(x, dict) and {"name", "address"} <= set(x) for x in doc):
        doc = {"listeners": [stub_listener([route_to("mesh")])] + doc}
        added.append("a listener beside the listeners")
    elif isinstance(doc, dict) and doc and set(doc) <= DESCRIPTION_KEYS:
        pass   # the product description's form: complete as written
    elif not (isinstance(doc, dict) and doc and set(doc) <= CONFIG_KEYS):
        return None, ""
    if isinstance(doc, dict) and "services" not in doc:
        if not doc.get("listeners"):
            doc["listeners"] = [stub_listener([route_to(c["name"]) for c in doc.get("clusters") or []])]
            added.append("a listener routing to each cluster")
        declared = {c["name"] for c in doc.get("clusters") or []}
        missing = sorted(set(values_of(doc.get("listeners"), "cluster")) - declared)
        if missing:
            doc["clusters"] = (doc.get("clusters") or []) + [
                {"name": name, "endpoints": [{"address": addr(free_port())}]} for name in missing]
            added.append(f"stub clusters {missing}")
        # Plugins that are not built in: the repository's C examples.
        declared_plugins = {p["name"]: p["path"] for p in doc.get("plugins") or []}
        for name in sorted(plugin_names(doc) - BUILT_IN_PLUGINS):
            source = C_EXAMPLES / f"{name}.c"
            assert source.is_file(), f"{example.where}: plugin {name!r} is neither built in nor in {rel(C_EXAMPLES)}"
            out = workdir / declared_plugins.get(name, f"lib{name}.so")
            subprocess.run(["cc", "-Wall", "-Werror", "-shared", "-fPIC", "-I", str(HEADER_DIR), str(source), "-o", str(out)],
                           check=True, capture_output=True, timeout=60)
            if name not in declared_plugins:
                doc["plugins"] = (doc.get("plugins") or []) + [{"name": name, "path": f"./lib{name}.so"}]
                added.append(f"plugin {name} from {rel(source)}")
        # A relative plugin_dir (the build folder) is this run's binaries.
        plugin_dir = doc.get("plugin_dir")
        if plugin_dir and not Path(plugin_dir).is_absolute():
            (workdir / plugin_dir).parent.mkdir(parents=True, exist_ok=True)
            (workdir / plugin_dir).symlink_to(bins.meshgate.parent)
    text = example.text if not (added or changed) else yaml.safe_dump(doc, sort_keys=False)
    return text, "; ".join(added)


@pytest.fixture(scope="module")
def workload_pki(tmp_path_factory) -> Path:
    """The dev PKI the examples' `certs/...` paths name."""
    return pki.dev_pki(tmp_path_factory.mktemp("docs-pki") / "certs")


def validate_config(text: str, workdir: Path, certs: Path, bins) -> subprocess.CompletedProcess:
    if not (workdir / "certs").exists():
        shutil.copytree(certs, workdir / "certs")
    path = workdir / "example.yaml"
    path.write_text(text)
    return subprocess.run([str(bins.meshgate), "validate", "--config", str(path)], capture_output=True, text=True,
                          timeout=60, cwd=workdir)


def validate_network_policy_rules(rules: list, workdir: Path) -> subprocess.CompletedProcess:
    """Ingress rules added to deploy/kubernetes' grpc-mesh NetworkPolicy,
    where the docs say to add them, then validated strictly."""
    docs = list(yaml.safe_load_all((REPO_ROOT / "deploy/kubernetes/networkpolicy.yaml").read_text()))
    policy = next(d for d in docs if d and d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "grpc-mesh")
    policy["spec"]["ingress"] = policy["spec"]["ingress"] + rules
    path = workdir / "networkpolicy.yaml"
    path.write_text(yaml.safe_dump(policy, sort_keys=False))
    exe = shutil.which("kubernetes-validate")
    if exe is None:
        pytest.fail("kubernetes-validate not found: pip install kubernetes-validate (Tests/integration/requirements.txt)")
    result = subprocess.run([exe, "--strict", "-k", KUBERNETES_VERSION, str(path)], capture_output=True, text=True, timeout=120)
    assert "passed for resource" in result.stdout or result.returncode != 0, result.stdout + result.stderr
    return result


def first_nested_mapping(doc):
    """The first mapping inside the example's top level (breadth first)."""
    queue = list(doc.values()) if isinstance(doc, dict) else list(doc)
    while queue:
        node = queue.pop(0)
        if isinstance(node, dict):
            return node
        if isinstance(node, list):
            queue.extend(node)
    return None


def check_example(example: Example, workdir: Path, certs: Path, bins, break_it: bool = False) -> subprocess.CompletedProcess:
    """Validates an example; with `break_it`, after adding a key nobody
    knows to the first mapping inside it."""
    try:
        doc = yaml.safe_load(example.text)
    except yaml.YAMLError as e:
        pytest.fail(f"{example.where}: not YAML: {e}")
    if break_it:
        target = first_nested_mapping(doc)
        assert target is not None, f"{example.where}: nothing to break"
        target["unknown_key_for_the_test"] = 1
    if isinstance(doc, list) and doc and all(isinstance(x, dict) and set(x) - {"unknown_key_for_the_test"} <= NETWORK_POLICY_RULE_KEYS for x in doc):
        return validate_network_policy_rules(doc, workdir)
    text, added = complete_config(example, doc, workdir, bins, changed=break_it)
    if text is None:
        pytest.fail(f"{example.where}: a YAML example of a shape test_docs.py does not know how to validate "
                    f"(top level: {list(doc) if isinstance(doc, dict) else type(doc).__name__}); teach complete_config")
    result = validate_config(text, workdir, certs, bins)
    result.added = added
    return result


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.where for e in EXAMPLES])
def test_every_yaml_example_is_valid(example, tmp_path, workload_pki, bins):
    result = check_example(example, tmp_path, workload_pki, bins)
    added = getattr(result, "added", "")
    assert result.returncode == 0, (f"{example.where}: the example does not validate"
                                    + (f" (with {added} added around it)" if added else "") + ":\n"
                                    + result.stdout + result.stderr)


def test_a_broken_example_fails_validation(tmp_path, workload_pki, bins):
    """The check above can fail: every example, given a key nobody knows in
    its first nested mapping, is refused."""
    for i, example in enumerate(EXAMPLES):
        workdir = tmp_path / str(i)
        workdir.mkdir()
        result = check_example(example, workdir, workload_pki, bins, break_it=True)
        assert result.returncode != 0, f"{example.where} with an unknown key still validates"
        assert "unknown_key_for_the_test" in result.stdout + result.stderr, result.stdout + result.stderr


def built_in_plugin_rows() -> list[tuple[str, str, str]]:
    """(plugin, library, config) from docs/plugins.md's built-in plugins table."""
    page = (DOCS / "plugins.md").read_text()
    section = page[page.index("\n## Built-in plugins\n"):]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`"):
            rows.append((cells[0].strip("`"), cells[1].strip("`"), cells[3]))
        elif rows and not line.startswith("|"):
            break
    return rows


def test_the_built_in_plugins_table_configs_are_valid(tmp_path, workload_pki, bins):
    """docs/plugins.md's table of built-in plugins: every one is listed,
    its library is built, and its config column validates as that plugin's
    config."""
    rows = built_in_plugin_rows()
    assert {name for name, _, _ in rows} == BUILT_IN_PLUGINS, rows
    for name, library, config in rows:
        assert (bins.meshgate.parent / library).is_file(), f"{name}: {library} is not among the built binaries"
        entry = {"plugin": name}
        if config != "none":
            code = re.match(r"`([^`]+)`", config)    # the config, then perhaps a remark
            assert code, f"{name}: {config}"
            entry["config"] = yaml.safe_load(code.group(1))
            assert isinstance(entry["config"], dict), f"{name}: {config}"
        example = Example(DOCS / "plugins.md", 0, yaml.safe_dump({"filters": [entry]}, sort_keys=False))
        workdir = tmp_path / name
        workdir.mkdir()
        result = check_example(example, workdir, workload_pki, bins)
        assert result.returncode == 0, f"docs/plugins.md, {name}'s config {config}:\n" + result.stdout + result.stderr


# --------------------------------------------------------------------------
# Links, paths, test commands


LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = heading.strip().lower().replace("`", "").replace("*", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6} +(.+?)\s*$", text, re.M)}


def test_links_between_pages_resolve():
    broken = []
    for page in PAGES:
        text = re.sub(r"^ *```.*?^ *```", "", page.read_text(), flags=re.S | re.M)
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            if not resolved.exists():
                broken.append(f"{rel(page)}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                broken.append(f"{rel(page)}: {target} (no heading with that anchor in {rel(resolved)})")
    assert not broken, "\n".join(broken)


REPO_PATH = re.compile(r"(?<![\w/.-])((?:Tests|scripts|bench|deploy|config/examples|Plugins|Sources|proto)/[\w./+-]+\.(?:py|sh|yaml|c|h|proto|swift))\b")


def test_the_files_the_pages_name_exist():
    missing = sorted({f"{rel(page)}: {p}" for page in PAGES for p in REPO_PATH.findall(page.read_text())
                      if not (REPO_ROOT / p).exists()})
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("page", sorted(DOCS.glob("*.md")), ids=lambda p: p.name)
def test_each_page_says_how_it_is_tested(page):
    """A `Tested by` paragraph and a command running the tests it names,
    which exist; a page with YAML examples names this file."""
    text = page.read_text()
    assert re.search(r"^Tested by ", text, re.M), f"{rel(page)} has no 'Tested by' paragraph"
    commands = [c for c in re.findall(r"```bash\n(.*?)```", text, re.S) if "-m pytest" in c or "swift test" in c]
    assert commands, f"{rel(page)} shows no command that runs its tests"
    named = re.findall(r"Tests/integration/test_\w+\.py", commands[0])
    for test in named:
        assert (REPO_ROOT / test).is_file(), f"{rel(page)} names {test}, which does not exist"
    if any(e.page == page for e in EXAMPLES):
        assert "Tests/integration/test_docs.py" in commands[0], f"{rel(page)} has YAML examples: its command runs test_docs.py"


# --------------------------------------------------------------------------
# The README's layout table


def layout_rows() -> list[str]:
    readme = (REPO_ROOT / "README.md").read_text()
    begin, end = readme.find("<!-- layout:begin"), readme.find("<!-- layout:end -->")
    assert 0 <= begin < end, "README.md has no <!-- layout:begin --> ... <!-- layout:end --> section"
    return [line for line in readme[begin:end].splitlines() if line.startswith("| `")]


def layout_folders() -> list[str]:
    """The folders the first column names: `Sources/A`, `B` is Sources/A
    and Sources/B; a name ending in / (`proto/`) is a top-level folder."""
    folders = []
    for row in layout_rows():
        parent = None
        for raw in re.findall(r"`([^`]+)`", row.split("|")[1]):
            name = raw.rstrip("/")
            if raw.endswith("/"):          # `proto/`: a top-level folder
                folders.append(name)
            elif "/" in name or parent is None:
                parent = str(Path(name).parent)
                folders.append(name)
            else:
                folders.append(str(Path(parent) / name) if parent != "." else name)
    return folders


def test_the_layout_table_names_every_folder():
    listed = set(layout_folders())
    required = {rel(d) for top in ("Sources", "Plugins") for d in (REPO_ROOT / top).iterdir() if d.is_dir()}
    required |= {rel(d) for d in (REPO_ROOT / "Sources" / "GatewayHost").iterdir() if d.is_dir()} \
        if (REPO_ROOT / "Sources" / "GatewayHost").is_dir() else set()
    assert not sorted(required - listed), f"README's layout table misses {sorted(required - listed)}"
    gone = sorted(f for f in listed if not (REPO_ROOT / f).exists())
    assert not gone, f"README's layout table names folders that do not exist: {gone}"
