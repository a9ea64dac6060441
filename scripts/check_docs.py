#!/usr/bin/env python3
"""Checks that every relative link in the README and docs/ names a file that exists, and every
#anchor a heading of that file (GitHub's slugs); and that every repository path the prose names
in backticks (`xtask/src/main.rs`, `scripts/e2e.sh:120`) exists. Prints each broken one; exits 1
if any."""

import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
LINK = re.compile(r"\]\(([^)\s]+)\)")
SPAN = re.compile(r"`([^`\s]+)`")


def slug(heading: str) -> str:
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def anchors(path: pathlib.Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    fence = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fence = not fence
        if fence or not line.startswith("#"):
            continue
        base = slug(line.lstrip("#"))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def prose(path: pathlib.Path):
    """The numbered lines of a page outside its code blocks."""
    fence = False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("```"):
            fence = not fence
        if not fence:
            yield number, line


def links(path: pathlib.Path):
    for number, line in prose(path):
        for target in LINK.findall(line):
            yield number, target


def top_dirs() -> set[str]:
    """The repository's top-level folders, as git knows them."""
    files = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return {f.split("/")[0] for f in files if "/" in f}


def named_paths(path: pathlib.Path, tops: set[str]):
    """Backticked spans outside code blocks that are paths into the repository; templates
    (`{roomId}`, globs, placeholders) are not paths."""
    for number, line in prose(path):
        for span in SPAN.findall(line):
            if "/" not in span or span.split("/")[0] not in tops:
                continue
            if any(c in span for c in "{*<>$"):
                continue
            yield number, span.split(":")[0].split("#")[0].rstrip("/")


def main() -> int:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "charts/chatflow/README.md"]
    broken = []
    tops = top_dirs()
    for page in pages:
        for number, target in links(page):
            if re.match(r"^[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            dest = (page.parent / file).resolve() if file else page
            where = f"{page.relative_to(ROOT)}:{number}: {target}"
            if not dest.exists():
                broken.append(f"{where}: no such file")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{where}: no heading #{anchor}")
        for number, named in named_paths(page, tops):
            if not (ROOT / named).exists():
                broken.append(f"{page.relative_to(ROOT)}:{number}: `{named}`: no such path")
    for b in broken:
        print(b)
    print(f"{len(pages)} pages checked, {len(broken)} broken links or paths")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
