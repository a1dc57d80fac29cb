"""A README section that a benchmark writes: between two marker comments, replaced whole (or added
before "## Limits"), so the rest of the README is never touched."""

import re
from pathlib import Path


def put(readme: Path, begin: str, end: str, text: str) -> None:
    """Write `text` between the markers `begin` and `end` in `readme`."""
    block = f"{begin}\n{text}{end}\n"
    found = readme.read_text()
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n", re.S)
    if pattern.search(found):
        found = pattern.sub(lambda _: block, found)
    elif "\n## Limits" in found:
        found = found.replace("\n## Limits", f"\n{block}\n## Limits", 1)
    else:
        found += f"\n{block}"
    readme.write_text(found)
