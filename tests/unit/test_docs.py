"""The README stays a front door and the docs stay connected: its length, its first commands, every link.

Reads files only; it must not run the commands it checks (the quickstart and the suite are run elsewhere).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
DOC_PAGES = sorted((REPO / "docs").glob("*.md"))

# The README's first lines, as users copy them; .ci/run runs the second.
QUICKSTART = "pip install torch==2.13.0 -e . && bash examples/quickstart.sh"
TESTS = "pip install torch==2.13.0 -e '.[dev]' && python -m pytest"
README_MAX_LINES = 300

# Where code, configs and examples live; a document they cite must be in the repository.
SOURCE_DIRS = ("megatron_sota", "tools", "tests", "examples", "docs")
SOURCE_FILES = ("setup.py", "Dockerfile", "pytest.ini", ".ci/run", "README.md")
TEXT_SUFFIXES = {".py", ".sh", ".sbatch", ".yaml", ".yml", ".md", ".ini", ".cfg", ".toml", ".txt", ""}
# The project's shared notes live beside the checkout, not in it: a reader of this repository cannot
# follow them. The baseline script is different: it is an input that examples/gpu/prepare_h200_run.sh
# copies into .bench/ (a program to run, not a document cited for facts).
OUTSIDE_DOCUMENT = re.compile(
    r"shared/docs/|(?:\.\./|/work/)shared/(?!bench/gpu_baseline\.py)"
    r"|\b(?:GPU|LOCAL_SLURM|POSTTRAIN|SERVING|ARCHITECTURE|STYLE)\.md\b"
)
DOCS_PATH = re.compile(r"(?<![\w/.-])docs/[\w./-]*\.md\b")
MARKDOWN_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def fenced_blocks(text: str) -> list[list[str]]:
    """The lines inside each ``` block, in order."""
    blocks, current = [], None
    for line in text.splitlines():
        if line.startswith("```"):
            if current is None:
                current = []
            else:
                blocks.append(current)
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def heading_anchors(text: str) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    anchors, seen = set(), {}
    in_code = False
    for line in text.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not re.match(r"#{1,6} ", line):
            continue
        slug = re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        anchors.add(slug if count == 0 else f"{slug}-{count}")
        seen[slug] = count + 1
    return anchors


def relative_links(page: Path) -> list[str]:
    """Link targets outside code blocks that are not URLs (http:, https:, mailto:)."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return [target for target in MARKDOWN_LINK.findall(text) if not re.match(r"[a-z]+:", target)]


def source_files() -> list[Path]:
    files = [REPO / name for name in SOURCE_FILES if (REPO / name).is_file()]
    for directory in SOURCE_DIRS:
        files += [p for p in (REPO / directory).rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES]
    return [p for p in files if "__pycache__" not in p.parts and p != Path(__file__).resolve()]


def test_readme_is_a_front_door_of_at_most_300_lines():
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines, expected at most {README_MAX_LINES}: move detail into docs/<subsystem>.md"
    )


def test_readme_first_code_block_holds_exactly_the_two_commands():
    text = README.read_text()
    first_lines = text.splitlines()[:3]
    assert first_lines[0].startswith("# ") and first_lines[2] == "```bash", (
        f"README.md must open with its title and then the commands' code block; found {first_lines}"
    )
    commands = [line for line in fenced_blocks(text)[0] if line.strip() and not line.lstrip().startswith("#")]
    assert commands == [QUICKSTART, TESTS]


def test_ci_runs_the_readmes_test_command():
    ci_commands = [line.strip() for line in (REPO / ".ci/run").read_text().splitlines()]
    assert TESTS in ci_commands, f".ci/run does not run the README's command 2: {TESTS}"


@pytest.mark.parametrize("page", [README, *DOC_PAGES], ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page: Path):
    broken = []
    for target in relative_links(page):
        path_part, _, anchor = target.partition("#")
        destination = (page.parent / path_part).resolve() if path_part else page
        if not destination.exists():
            broken.append(f"{target}: no file {destination.relative_to(REPO) if REPO in destination.parents else destination}")
        elif anchor and destination.suffix == ".md" and anchor not in heading_anchors(destination.read_text()):
            broken.append(f"{target}: no heading with anchor '#{anchor}' in {destination.name}")
    assert broken == [], f"{page.relative_to(REPO)}: broken links:\n  " + "\n  ".join(broken)


def test_no_source_file_cites_a_document_outside_the_repository():
    found = []
    for path in source_files():
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if OUTSIDE_DOCUMENT.search(line):
                found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert found == [], "cite docs/<page>.md (holding the facts and their source) instead of:\n  " + "\n  ".join(found)


def test_docs_pages_named_in_source_files_exist():
    missing = []
    for path in source_files():
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for named in DOCS_PATH.findall(line):
                if not (REPO / named).is_file():
                    missing.append(f"{path.relative_to(REPO)}:{number}: {named}")
    assert missing == [], "these docs pages do not exist:\n  " + "\n  ".join(missing)
