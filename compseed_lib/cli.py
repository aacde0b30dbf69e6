"""`compseed …`: run a chain, serve the judge, measure the mini-world judge.

    compseed run configs/mini.yaml [--set generate.steps=2 ...] [--only 00_prompts,01_generate]
    compseed serve-judge [--host 127.0.0.1] [--port 8765]
    compseed judge-accuracy [--n 2000] [--out reports/judge_accuracy.md]
    compseed prompts miniworld train
    compseed train-miniworld configs/train/miniworld.yaml
"""
from __future__ import annotations

import argparse
import logging
import sys


def _run(args) -> int:
    from .chain import ChainError, run_chain

    only = args.only.split(",") if args.only else None
    try:
        report = run_chain(args.config, overrides=args.set, notebooks=only, report_root=args.reports,
                           stream=not args.quiet)
    except ChainError as e:
        print(f"compseed: error: {e}", file=sys.stderr)
        return 1
    print(f"reports written to {report}")
    return 0


def _prompts(args) -> int:
    from . import prompts

    for p in prompts.load(args.world, args.split):
        print(f"{p.id}\t{p.category}\t{p.text}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `compseed` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "serve-judge":  # the server owns its flags
        from .judge import server

        return server.main(argv[1:]) or 0
    if argv and argv[0] == "train-miniworld":
        from .miniworld import train

        return train.main(argv[1:]) or 0
    if argv and argv[0] == "judge-accuracy":
        from .miniworld import report

        return report.main(argv[1:]) or 0
    parser = argparse.ArgumentParser(prog="compseed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run", help="execute the notebook chain for a config with papermill")
    p.add_argument("config", help="a configs/*.yaml file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. generate.steps=2 (repeatable)")
    p.add_argument("--only", help="comma-separated notebook names to run (default: the whole chain)")
    p.add_argument("--reports", default="reports", help="where executed notebooks go")
    p.add_argument("--quiet", action="store_true", help="do not echo notebook output")
    p.set_defaults(func=_run)
    p = sub.add_parser("prompts", help="list the prompts of a world and split")
    p.add_argument("world", help="comp90, miniworld or a folder")
    p.add_argument("split", choices=["train", "eval"])
    p.set_defaults(func=_prompts)
    sub.add_parser("serve-judge", help="OpenAI-compatible judge server on loopback (see --help)")
    sub.add_parser("train-miniworld", help="train the mini-world generator from scratch (see --help)")
    sub.add_parser("judge-accuracy", help="measure the mini-world judge on fresh renders (see --help)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as e:  # our errors name the bad input; no traceback
        print(f"compseed: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
