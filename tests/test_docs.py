"""The documentation holds together: README.md stays short, and every relative link of README.md, docs/ and
config/README.md points at a file that exists and, with a #fragment, at a heading of that file (GitHub's anchors)."""

import re

import pytest

from conftest import ROOT

README_MAX_BYTES = 12 * 1024  # a README a newcomer reads in two minutes; the rest lives in docs/
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), ROOT / "config" / "README.md"]
# Files a page refers to that are made separately and not committed yet: the picture of the demo's report.

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|<[^>]+>", "", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path) -> set[str]:
    """Every anchor of a markdown file's headings (a repeated heading gets -1, -2, ... as on GitHub)."""
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", path.read_text()).splitlines():
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(path) -> list[str]:
    """The relative link targets of a markdown file, outside code blocks."""
    return [
        t for t in LINK.findall(FENCE.sub("", path.read_text())) if not re.match(r"[a-z][a-z0-9+.-]*:", t)
    ]  # http:, https:, mailto:


def test_slug_is_githubs():
    assert slug("The CellPLM package (`cellplm/`)") == "the-cellplm-package-cellplm"
    assert slug("Fidelity: ours vs the authors' code") == "fidelity-ours-vs-the-authors-code"
    assert slug("Quick start (fresh machine: Python 3.11 and make)") == "quick-start-fresh-machine-python-311-and-make"


def test_readme_is_short():
    size = len((ROOT / "README.md").read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes (at most {README_MAX_BYTES}): move detail to docs/"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    assert page.exists(), page
    broken = []
    for target in links(page):
        file, _, fragment = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.exists():
            broken.append(f"{target}: no file {dest.relative_to(ROOT)}")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(f"{target}: no heading #{fragment} in {dest.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_every_docs_page_is_in_the_index():
    index = (ROOT / "docs" / "README.md").read_text()
    missing = [p.name for p in (ROOT / "docs").glob("*.md") if p.name != "README.md" and f"({p.name})" not in index]
    assert not missing, f"docs/README.md does not list {missing}"


def test_readme_lists_every_difference_of_every_reimplementation():
    """A method.yaml's `differences` (where a re-implementation departs from its upstream code) are each a bullet
    of the README, word for word, so that the front page and the method's metadata cannot drift apart."""
    import yaml

    bullets = {line[2:] for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("- ")}
    listed = {}
    for meta in sorted((ROOT / "cellplm/bench/methods").glob("*/method.yaml")):
        for difference in yaml.safe_load(meta.read_text()).get("differences", []):
            listed[difference] = meta.parent.name
    assert "scdiff" in listed.values()
    assert {d: m for d, m in listed.items() if d not in bullets} == {}
