"""mkdocs hook: links from a page to a file of the repository outside ``docs/`` (source,
tests, benchmarks, examples) point to that file on GitHub on the site, as they do when
the page is read on GitHub. A link to a file that does not exist is left alone, so that
``--strict`` still fails on it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

LINK = re.compile(r"\]\((\.\./[^)#\s]+)(#[^)\s]*)?\)")


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    docs = Path(config["docs_dir"]).resolve()
    repo = docs.parent
    base = config.get("repo_url", "").rstrip("/")
    page_dir = (docs / page.file.src_uri).parent

    def rewrite(match: re.Match[str]) -> str:
        target = (page_dir / match.group(1)).resolve()
        if docs in target.parents or not target.exists() or repo not in target.parents:
            return match.group(0)
        kind = "tree" if target.is_dir() else "blob"
        rel = target.relative_to(repo).as_posix()
        return f"]({base}/{kind}/main/{rel}{match.group(2) or ''})"

    return LINK.sub(rewrite, markdown)
