"""The documentation (README.md, docs/*.md, bench/RESULTS.md) against the tree and the command line:
every relative link points to a file that exists (and to a heading of it, when it names one); every long
flag a documented `provision`, `dollyS` or `dollyC` command line shows is in that command's `--help`; the
documented `provision render` of the example inventory runs. Fast, no root."""

from __future__ import annotations

import functools
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

PAGES = sorted({REPO / "README.md", REPO / "bench" / "RESULTS.md", *(REPO / "docs").glob("*.md")})
# How each documented command is run from this tree (pyproject.toml [project.scripts]: provision =
# provision.cli:main, dollyS = dolly_core.cli:server_main, dollyC = dolly_core.cli:client_main)
COMMANDS = {
    "provision": [sys.executable, "-m", "provision"],
    "dollyS": [sys.executable, "-m", "dolly_core.cli", "server"],
    "dollyC": [sys.executable, "-m", "dolly_core.cli", "client"],
}
PREFIXES = ("sudo ", ".venv/bin/", "$ ")  # what may stand before a documented command
FENCE = re.compile(r"^(\s*)(```|~~~)")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
LONG_FLAG = re.compile(r"(?<![\w-])--[A-Za-z][\w-]*")
SUBCOMMAND_LINE = re.compile(r"^ {4}([a-z][a-z0-9-]*)(?: \(([a-z][a-z0-9-, ]*)\))?(?:\s|$)")  # argparse lists a subparser's choices so


def page_id(page: Path) -> str:
    return str(page.relative_to(REPO))


def split_page(text: str) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(prose lines, fenced-code lines) of a Markdown page, each with its line number."""
    prose, code, fence = [], [], None
    for number, line in enumerate(text.splitlines(), 1):
        match = FENCE.match(line)
        if match and (fence is None or line.strip().startswith(fence)):
            fence = match.group(2) if fence is None else None
            continue
        (code if fence else prose).append((number, line))
    return prose, code


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()  # a link: its text
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")  # backticks, *, /, :, (, ), ... go


@functools.lru_cache(maxsize=None)
def anchors(page: Path) -> frozenset[str]:
    prose, _ = split_page(page.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    found = set()
    for _, line in prose:
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return frozenset(found)


def links(page: Path) -> list[tuple[int, str]]:
    """Relative links of a page's prose (code spans and fenced blocks left out)."""
    prose, _ = split_page(page.read_text(encoding="utf-8"))
    found = []
    for number, line in prose:
        for target in LINK.findall(INLINE_CODE.sub("", line)):
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:, ...
                found.append((number, target))
    return found


def link_problem(page: Path, target: str) -> str | None:
    path, _, anchor = target.partition("#")
    dest = (page.parent / path).resolve() if path else page
    if not dest.exists():
        return f"{target}: no such file {dest.relative_to(REPO) if dest.is_relative_to(REPO) else dest}"
    if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
        return f"{target}: {page_id(dest)} has no heading with the anchor #{anchor}"
    return None


def documented_commands(page: Path) -> list[tuple[int, str]]:
    """Command lines of `provision`, `dollyS` and `dollyC` a page shows: fenced-code lines and code spans that
    start with one (comments cut off; `CMD ... -- provision ...` gives the inner command line too)."""
    prose, code = split_page(page.read_text(encoding="utf-8"))
    candidates = [(n, line) for n, line in code]
    candidates += [(n, span) for n, line in prose for _, span in INLINE_CODE.findall(line)]
    found = []
    for number, line in candidates:
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        for prefix in PREFIXES:
            line = line.removeprefix(prefix)
        while line.split(" ", 1)[0] in COMMANDS:
            outer, _, inner = line.partition(" -- ")
            found.append((number, outer))
            line = inner.strip()
    return found


@functools.lru_cache(maxsize=None)
def help_text(command: tuple[str, ...]) -> str:
    proc = subprocess.run([*COMMANDS[command[0]], *command[1:], "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, f"{' '.join(command)} --help failed: {proc.stderr}"
    return proc.stdout


def subcommands(help_output: str) -> set[str]:
    """The subcommands a help text lists (argparse: four spaces, then the name, under the positionals)."""
    section = help_output.split("positional arguments:", 1)[1].split("\noptions:", 1)[0] \
        if "positional arguments:" in help_output else ""
    names = set()
    for line in section.splitlines():
        if m := SUBCOMMAND_LINE.match(line):  # "    dhcp (dhcpd)  ...": a name and its aliases
            names.add(m.group(1))
            names.update(alias.strip() for alias in (m.group(2) or "").split(","))
    return names - {""}


def command_of(line: str) -> tuple[str, ...]:
    """The command and subcommands a documented line runs, e.g. ('provision', 'lab', 'up')."""
    words = line.split()
    command = (words[0],)
    for word in words[1:]:
        if word.startswith("-"):
            continue
        if word in subcommands(help_text(command)):
            command += (word,)
    return command


def unknown_flags(line: str) -> list[str]:
    command = command_of(line)
    known = set(LONG_FLAG.findall(help_text(command)))
    return [flag for flag in LONG_FLAG.findall(line) if flag not in known]


def test_pages_are_there():
    names = {page_id(p) for p in PAGES}
    assert {"README.md", "docs/inventory.md", "docs/operating.md", "docs/templates.md", "docs/ring-cloner.md",
            "docs/boot.md", "docs/images.md", "docs/lab.md", "docs/architecture.md",
            "bench/RESULTS.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_relative_links_point_to_existing_files(page):
    problems = [f"{page_id(page)}:{n}: {problem}" for n, target in links(page)
                if (problem := link_problem(page, target))]
    assert not problems, "\n".join(problems)


def test_every_page_is_linked_from_the_readme():
    linked = {(REPO / target.partition("#")[0]).resolve() for _, target in links(REPO / "README.md")}
    missing = [page_id(p) for p in PAGES if p.name != "README.md" and p.resolve() not in linked]
    assert not missing, f"not linked from README.md: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_documented_flags_exist(page):
    problems = [f"{page_id(page)}:{n}: {' '.join(command_of(line))}: {', '.join(flags)} not in --help: {line}"
                for n, line in documented_commands(page) if (flags := unknown_flags(line))]
    assert not problems, "\n".join(problems)


def test_the_documented_commands_are_found():
    """The checks above look at real command lines (a parser that found none would pass everything)."""
    lines = [line for page in PAGES for _, line in documented_commands(page)]
    assert any(line.startswith("provision install --inventory") for line in lines)
    assert any(line.startswith("provision lab up --vm") for line in lines)
    assert any(line.startswith("dollyS ") and "--progress" in line for line in lines)
    assert any(line.startswith("dollyC ") and "--listen" in line for line in lines)
    assert command_of("provision lab up --vm --inventory x.yaml") == ("provision", "lab", "up")
    assert command_of("provision dhcp status") == ("provision", "dhcp")
    assert command_of("provision dhcpd status") == ("provision", "dhcpd")  # the alias
    assert command_of("dollyS -v -f dolly.conf") == ("dollyS",)


@pytest.mark.parametrize("line", [
    "provision install --inventory cluster.yaml --no-such-flag",
    "provision lab up --vm --kill n01",          # --kill belongs to `lab demo`, not `lab up`
    "provision render --out /tmp/x --nodes 2",
    "dollyC -v --listen 0.0.0.0:9998 --timeout 5",  # a dollyS flag
    "dollyS -v -f dolly.conf --root /tmp",          # a dollyC flag
])
def test_a_flag_the_command_lacks_is_caught(line):
    assert unknown_flags(line)


def test_the_documented_render_runs(tmp_path):
    """`provision render --inventory inventory/example.yaml --out DIR` as docs/templates.md shows it."""
    documented = [line for _, line in documented_commands(REPO / "docs" / "templates.md")
                  if line.startswith("provision render --inventory inventory/example.yaml --out ")]
    assert documented, "docs/templates.md shows no `provision render --inventory inventory/example.yaml --out DIR`"
    argv = shlex.split(documented[0])
    out = tmp_path / "rendered"
    argv[argv.index("--out") + 1] = str(out)
    proc = subprocess.run([*COMMANDS["provision"], *argv[1:]], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                                            "PROVISION_STATE_DIR": str(tmp_path / "state")})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("rendered 20 nodes of kek-example into "), proc.stdout
    for rel in ("dhcpd.conf", "dolly.conf", "kickstart/n001.ks", "kickstart/n020.ks",
                "tftpboot/pxelinux.cfg/01-00-16-3e-10-00-01"):
        assert (out / rel).is_file(), rel


def source_directories() -> list[str]:
    """Every directory of modules: the two packages, their subpackages, and provision/scripts."""
    found = ["provision/scripts"]
    for top in ("provision", "dolly_core"):
        found += [str(init.parent.relative_to(REPO)) for init in (REPO / top).rglob("__init__.py")
                  if "__pycache__" not in init.parts]
    return sorted(found)


def architecture_section(directory: str) -> str:
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    match = re.search(rf"^### {re.escape(directory)}/\n(.*?)(?=^#{{1,3}} |\Z)", text, re.M | re.S)
    assert match, f"docs/architecture.md has no section '### {directory}/'"
    return match.group(1)


@pytest.mark.parametrize("directory", source_directories())
def test_architecture_lists_every_module(directory):
    """docs/architecture.md has a section per source directory with a table row for each of its modules (and
    scripts), and no row for a file that is not there."""
    listed = set(re.findall(r"^\| `([^`]+)` \|", architecture_section(directory), re.M))
    files = {p.name for p in (REPO / directory).iterdir() if p.suffix in (".py", ".sh") and p.is_file()}
    assert not files - listed, f"docs/architecture.md, {directory}/: no row for {sorted(files - listed)}"
    assert not listed - files, f"docs/architecture.md, {directory}/: rows for missing files {sorted(listed - files)}"


def test_template_variables_and_attributes_are_there(tmp_path):
    """Every variable and attribute docs/templates.md lists renders (StrictUndefined: a missing one fails):
    site templates that print all of them, rendered from the example inventory."""
    text = (REPO / "docs" / "templates.md").read_text(encoding="utf-8")
    section = text.split("## Variables the templates get", 1)[1]
    per_node_table, rest = section.split("`dhcpd.conf.j2`:", 1)
    dhcpd_part, rest = rest.split("`dolly.conf.j2`:", 1)
    dolly_part, attribute_table = rest.split("Attributes a template can use", 1)
    names = lambda part: [n for n in re.findall(r"`([^`]+)`", part) if re.fullmatch(r"[a-z_]+", n)]  # noqa: E731
    per_node = [n for row in per_node_table.splitlines() if row.startswith("| `")
                for n in names(row.split("|")[1])]
    objects = {"inv": "inv", "inv.server": "inv.server", "inv.network": "inv.network", "inv.boot": "inv.boot",
               "inv.images[i]": "inv.images[0]", "inv.kickstart": "inv.kickstart", "node": "node",
               "node.disk": "node.disk", "a partition": "node.disk.partitions[0]"}
    attributes = []
    for row in attribute_table.splitlines():
        cells = row.split("|")
        if len(cells) < 3 or cells[1].strip().strip("`") not in objects:
            continue
        owner = objects[cells[1].strip().strip("`")]
        for attr in re.findall(r"`([a-z_]+)(?:\(name\))?`", re.sub(r"\([^()]*`[^()]*\)", "", cells[2])):
            attributes.append(f"{owner}.fqdn(node.name)" if attr == "fqdn" and owner == "inv" else f"{owner}.{attr}")
    assert len(per_node) >= 10 and len(attributes) >= 50, (per_node, attributes)
    site = tmp_path / "site"
    (site / "kickstart").mkdir(parents=True)
    (site / "kickstart" / "node.ks.j2").write_text("".join(f"{{{{ {e} }}}}\n" for e in [*per_node, *attributes]))
    (site / "dhcpd.conf.j2").write_text("# " + " ".join(f"{{{{ {n} }}}}" for n in names(dhcpd_part)) + "\n")
    (site / "dolly.conf.j2").write_text(" ".join(f"{{{{ {n} }}}}" for n in names(dolly_part)) + "\n")
    proc = subprocess.run([*COMMANDS["provision"], "render", "--inventory", "inventory/example.yaml", "--out",
                           str(tmp_path / "out"), "--templates", str(site)], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert set(names(dhcpd_part)) >= {"hosts", "loader", "uefi_loader", "ipxe_loader"}
    assert set(names(dolly_part)) >= {"server", "clients"}
