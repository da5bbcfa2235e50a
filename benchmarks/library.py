"""`digest import` of a generated BibTeX library (every entry an arXiv paper, with accents, escapes and math in
its fields, as exports have them), run as a user runs it: wall time and the process's peak memory, for a few sizes,
the median of --repeat runs. Prints figures; asserts nothing.

    .venv/bin/python benchmarks/library.py                  # 10,000 and 100,000 entries, 3 runs each
    .venv/bin/python benchmarks/library.py --sizes 100000 --repeat 1
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

from tests.helpers import write_bibtex_library

CONFIG = """\
arxiv: {categories: [cs.CL]}
llm: {model: gpt-4o-mini, api_key: not-used}
profiles: [{name: me, interests: Language models., email: [me@example.org]}]
email: {from: digest@example.org}
"""


def _import(folder: Path, library: Path) -> tuple[float, float]:
    """Seconds, and peak resident megabytes, of one `digest import` on a new state."""
    for old in folder.glob("digest.sqlite3*"):
        old.unlink()
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "digest", "import", str(library), "--config", str(folder / "config.yaml")],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "DIGEST_CONFIG"},
        check=False,
    )
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    return elapsed, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work)
        (folder / "config.yaml").write_text(CONFIG)
        for size in args.sizes:
            library = folder / f"library-{size}.bib"
            write_bibtex_library(library, size)
            runs = [_import(folder, library) for _ in range(args.repeat)]
            seconds = statistics.median(run[0] for run in runs)
            # RUSAGE_CHILDREN's peak is the largest child so far: sizes run smallest first, so it is this size's.
            peak = max(run[1] for run in runs)
            print(
                f"{size:>7,} entries ({library.stat().st_size / 1e6:.0f} MB): median {seconds:.1f} s "
                f"({', '.join(f'{run[0]:.1f}' for run in runs)}), {seconds / size * 1e3:.2f} ms an entry, "
                f"peak {peak:.0f} MB"
            )


if __name__ == "__main__":
    main()
