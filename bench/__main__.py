"""python -m bench: run the issue-7 benchmark, write bench/results/<date>.json and .md, print the table.

python -m bench                     # the full run (`make bench`), updates README's table
python -m bench --quick --out DIR   # tiny sizes, a smoke run (`make bench-quick`)
python -m bench --fanout-sizes 1000,2000 --idle-seconds 5 --no-readme
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
from bench.report import render, update_readme
from bench.runner import main_run

ROOT = Path(__file__).resolve().parent.parent


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def parse(argv: list[str] | None) -> tuple[Config, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, seconds not minutes (a smoke run)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="where to write results")
    parser.add_argument("--no-readme", action="store_true", help="do not update README.md's bench table")
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
    if (
        not args.quick
        and not args.no_readme
        and update_readme(ROOT / "README.md", markdown, f"bench/results/{md_path.name}")
    ):
        print("README.md: benchmark table updated")
    failed = [name for name, phase in results["phases"].items() if phase.get("error")]
    if failed:
        print(f"phases that failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
