"""The front page and the docs stay true to the tree: the README stays short, every relative
link lands on a file in the repository (and on a heading, where it names one), the README's
set-up commands are the ones CI runs, every stage is in the README's table, and no generated
HTML is tracked."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from capgap.cli import STAGES

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "results" / "README.md",
         ROOT / "results" / "study" / "STUDY.md"]
MAX_README_LINES = 250

_FENCE = re.compile(r"^```.*?^```", re.M | re.S)
_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _prose(text: str) -> str:
    """The text without fenced blocks and inline code, where brackets are not links."""
    return _CODE.sub("", _FENCE.sub("", text))


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in _FENCE.sub("", page.read_text(encoding="utf-8")).splitlines():
        if m := re.match(r"#{1,6}\s+(.*)", line):
            slug = _slug(m.group(1))
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def _relative_links(page: Path) -> list[str]:
    return [t for t in _LINK.findall(_prose(page.read_text(encoding="utf-8")))
            if not re.match(r"[a-z][a-z0-9+.-]*:", t)]  # http:, https:, mailto:


def _readme_commands() -> list[str]:
    """The README's set-up commands: the lines of its first code block that make a venv."""
    block = _FENCE.search(README.read_text(encoding="utf-8")).group(0)
    return [line for line in block.splitlines() if line.startswith("python3 -m venv ")]


def _ci_command() -> str:
    lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    (command,) = [line for line in lines if line.startswith("python3 -m venv ")]
    return command


def test_readme_is_a_front_page():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f"README.md has {len(lines)} lines (at most {MAX_README_LINES}): move details to docs/")


def test_relative_links_resolve_inside_the_repository():
    dead = []
    for page in PAGES:
        for target in _relative_links(page):
            path, _, anchor = target.partition("#")
            where = (page.parent / path).resolve() if path else page
            if not where.is_relative_to(ROOT) or not where.exists():
                dead.append(f"{page.relative_to(ROOT)}: {target} (no such file in the repository)")
            elif where.suffix == ".html":
                dead.append(f"{page.relative_to(ROOT)}: {target} (generated HTML is not tracked: "
                            "say how to build it)")
            elif anchor and where.suffix == ".md" and anchor not in _anchors(where):
                dead.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not dead, "\n".join(dead)


def test_link_checker_catches_what_it_should(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# The study (`capgap study`)\n\n## A, b: c's d\n\n[x](a.md) ![y](b/c.png) "
                    "[z](https://e.org) `[not](a link)`\n\n```\n[no](link)\n```\n")
    assert _relative_links(page) == ["a.md", "b/c.png"]
    assert _anchors(page) == {"the-study-capgap-study", "a-b-cs-d"}


def test_readme_test_command_is_the_one_ci_runs():
    install_and_run, install_and_test = _readme_commands()
    # .ci/run may quieten pip (-q); every other word is the README's
    ci = [w for w in shlex.split(_ci_command()) if w != "-q"]
    assert shlex.split(install_and_test) == ci, (
        "the README's test command and .ci/run differ: change both together")
    assert install_and_run == install_and_test.replace(
        "-e '.[test]'", "-e .").replace(".venv/bin/python -m pytest", ".venv/bin/capgap pilot"), (
        "the README's two set-up commands should install the same way")


def test_readme_table_names_every_stage():
    readme = README.read_text(encoding="utf-8")
    rows = "\n".join(line for line in readme.splitlines() if line.startswith("| "))
    missing = [s for s in STAGES if f"`capgap {s}" not in rows]
    assert not missing, f"stages missing from the README's table: {missing}"


def test_no_generated_html_is_tracked():
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    tracked = subprocess.run([git, "ls-files", "*.html"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    assert not tracked, f"generated HTML is tracked (capgap report rebuilds it): {tracked}"
