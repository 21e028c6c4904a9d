"""python -m bench: run the benchmark, write bench/results/<date>.json and .md, print the tables.

python -m bench                     # the full run (`make bench`), updates docs/benchmarks.md
python -m bench --quick --out DIR   # tiny sizes, a smoke run (`make bench-quick`)
python -m bench --fanout-sizes 1000,2000 --idle-seconds 5 --no-page
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from dataclasses import fields
from pathlib import Path
from types import FrameType

from bench.harness import Config
from bench.report import render, update_page
from bench.runner import main_run

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "benchmarks.md"  # the latest full run's tables, between its bench markers


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def parse(argv: list[str] | None) -> tuple[Config, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, seconds not minutes (a smoke run)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="where to write results")
    parser.add_argument("--no-page", action="store_true", help="do not update the tables in docs/benchmarks.md")
    parser.add_argument("--sqlite", action="store_true", help="SQLite instead of PostgreSQL (no DB counters)")
    defaults = Config()
    for f in fields(Config):
        if f.name in ("quick", "postgres"):
            continue
        value = getattr(defaults, f.name)
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, list):
            parser.add_argument(
                flag,
                type=lambda s: [int(x) for x in s.split(",") if x],
                default=None,
                help=f"comma-separated (default {','.join(map(str, value))})",
            )
        elif isinstance(value, bool):
            parser.add_argument(
                flag, type=lambda s: s.lower() in ("1", "yes", "true", "on"), default=None, help=f"(default {value})"
            )
        else:
            parser.add_argument(flag, type=type(value), default=None, help=f"(default {value})")
    args = parser.parse_args(argv)
    config = Config.quick_config() if args.quick else Config()
    for f in fields(Config):
        given = getattr(args, f.name, None)
        if given is not None and f.name not in ("quick", "postgres"):
            setattr(config, f.name, given)
    config.postgres = not args.sqlite
    return config, args


def main(argv: list[str] | None = None) -> int:
    config, args = parse(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    results = main_run(config)
    markdown = render(results)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d-%H%M")
    json_path = args.out / f"{stamp}.json"
    md_path = args.out / f"{stamp}.md"
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    md_path.write_text(markdown + "\n")
    print("\n" + markdown, flush=True)
    print(f"results: {json_path}\n         {md_path}")
    if not args.quick and not args.no_page and update_page(PAGE, markdown, f"bench/results/{md_path.name}"):
        print(f"{PAGE.relative_to(ROOT)}: benchmark tables updated")
    failed = [name for name, phase in results["phases"].items() if phase.get("error")]
    if failed:
        print(f"phases that failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
