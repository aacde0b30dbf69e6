"""`compseed …`: run a chain, serve the judge, measure the mini-world judge.

    compseed run configs/mini.yaml [--set generate.steps=2 ...] [--only 00_prompts,01_generate]
    compseed serve-judge [--host 127.0.0.1] [--port 8765]
    compseed judge-accuracy [--n 2000] [--out reports/judge_accuracy.md]
    compseed prompts miniworld train
    compseed bench [--quick] [--only generation,judging] [--out reports/bench]
    compseed finetune configs/mini.yaml [--arm qk]
    compseed train-miniworld configs/train/miniworld.yaml
    compseed evaluate-model models/miniworld --seeds 64 --steps 10 --out reports/miniworld_eval
    compseed model-card models/miniworld reports/miniworld_eval reports/miniworld_eval/card_notes.md
    compseed effect configs/effect/all.yaml [--table-only]
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def _run(args) -> int:
    from .chain import run_chain

    only = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
    report = run_chain(args.config, overrides=args.set, notebooks=only, report_root=args.reports,
                       stage=args.stage, show=not args.quiet)
    print(f"reports written to {report}")
    return 0


def _kit_errors() -> tuple[type[BaseException], ...]:
    """The kit's own errors: their message names the bad input, so they end in one line, no traceback."""
    from .chain import ChainError
    from .config import ConfigError
    from .judge.errors import JudgeError
    from .prompts import PromptFileError
    from .sources import ModelLoadError
    from .store import CorruptImageError, RunInUse

    return (ChainError, ConfigError, JudgeError, ModelLoadError, PromptFileError, CorruptImageError, RunInUse,
            ValueError, FileNotFoundError)


def _setup_logging(verbose: bool) -> None:
    """The CLI decides process-wide logging: through tqdm (live bars stay intact), quiet HTTP and papermill."""

    from .progress import TqdmLoggingHandler

    handler = TqdmLoggingHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler], force=True)
    for name in ("httpx", "httpx2", "httpcore", "openai", "papermill", "traitlets", "asyncio"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose and name == "papermill" else logging.WARNING)
    from .notebook import DropNotices

    # transformers logs "requires torchvision" through its own handler the first time a pipeline class is
    # imported (e.g. when a tiny test pipeline is first built): a filter on the logger that makes the record
    logging.getLogger("transformers.utils.import_utils").addFilter(DropNotices())


def _finetune(args) -> int:
    from .config import load_config
    from .evaluate import train_arms
    from .store import Run, run_lock

    cfg = load_config(args.config, args.set)
    run = Run.open(cfg.run_dir)
    with run_lock(cfg.run_dir, "compseed finetune"):
        for arm, folder in train_arms(run, cfg, only=args.arm or None).items():
            print(f"{arm}: {folder}")
    return 0


def _report(args) -> int:
    from .report import write_report

    if not Path(args.report_dir).is_dir():
        raise FileNotFoundError(f"no report folder {args.report_dir}")
    print(write_report(args.report_dir, args.run_dir))
    return 0


def _bench(args) -> int:
    from .bench import run_all

    only = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
    def counts(text: str, flag: str) -> tuple[int, ...]:
        try:
            out = tuple(int(n) for n in text.split(","))
        except ValueError:
            out = ()
        if not out or min(out) < 1:
            raise SystemExit(f"compseed bench: {flag} {text!r} must be comma-separated positive integers")
        return out

    sizes = counts(args.sizes, "--sizes") if args.sizes else (32, 128, 256, 512, 1024)
    procs = counts(args.processes, "--processes") if args.processes else None
    threads = counts(args.threads, "--threads") if args.threads else (1,)
    try:
        print(run_all(args.out, quick=args.quick, only=only, model=args.model, sizes=sizes, processes=procs,
                      threads=threads))
    except ValueError as e:
        raise SystemExit(f"compseed bench: {e}") from None
    return 0


def _prompts(args) -> int:
    from . import prompts

    for p in prompts.load(args.world, args.split):
        print(f"{p.id}\t{p.category}\t{p.text}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `compseed` console script."""
    from . import interrupt

    if argv is None:  # as a program: Ctrl-C ends it even if it was started with SIGINT ignored
        interrupt.install()
    try:
        code = _main(argv)
    except KeyboardInterrupt:  # outside any command's own handling (imports, argument parsing)
        if argv is not None:
            raise
        interrupt.leave_now()
    if code == 130 and argv is None:
        # Ctrl-C as a program: the one-line message is out and finished work is on disk; leave now,
        # with no exit-time cleanup that could wait on an interrupted kernel's busy cell.
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        interrupt.leave_now(message="")
    return code


def _main(argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "serve-judge":  # the server owns its flags
        from .judge import server

        return server.main(argv[1:]) or 0
    if argv and argv[0] == "train-miniworld":
        from .miniworld.generator import train

        return train.main(argv[1:]) or 0
    if argv and argv[0] == "evaluate-model":
        from .miniworld.generator import evaluate

        return evaluate.main(argv[1:]) or 0
    if argv and argv[0] == "model-card":
        from .miniworld.generator import card

        return card.main(argv[1:]) or 0
    if argv and argv[0] == "effect":
        from . import effect

        return effect.main(argv[1:]) or 0
    if argv and argv[0] == "rejudge":
        from .judge import rejudge

        return rejudge.main(argv[1:]) or 0
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
    p.add_argument("--stage", default="base",
                   help="image stage the notebooks write (default: base); a new name keeps a run's finished "
                        "images when generation settings change")
    p.add_argument("--reports", default="reports", help="where executed notebooks go")
    p.add_argument("--quiet", action="store_true", help="no live progress or log lines from the notebooks")
    p.set_defaults(func=_run)
    p = sub.add_parser("finetune", help="fine-tune a run's arms on its datasets (notebook 06 without the notebook; "
                                        "`accelerate launch -m compseed_lib.cli finetune …` on many GPUs)")
    p.add_argument("config", help="a configs/*.yaml file whose run has built its datasets (05_build_dataset)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--arm", action="append", default=[], help="only this arm (repeatable): qk, lora, ...")
    p.set_defaults(func=_finetune)
    p = sub.add_parser("report", help="write a report folder's HTML pages and index.html again")
    p.add_argument("report_dir", help="e.g. reports/mini")
    p.add_argument("run_dir", help="e.g. runs/mini")
    p.set_defaults(func=_report)
    p = sub.add_parser("prompts", help="list the prompts of a world and split")
    p.add_argument("world", help="comp90, miniworld or a folder")
    p.add_argument("split", choices=["train", "eval"])
    p.set_defaults(func=_prompts)
    p = sub.add_parser("bench", help="measure generation, judging, scaling and fine-tuning as ratios "
                                     "(reports/bench/; the GPU shape: bench/gpu_sd21.py)")
    p.add_argument("--quick", action="store_true", help="tiny sizes (seconds to minutes): checks it works")
    p.add_argument("--only", help="comma-separated: generation, judging, chain, scaling, finetune")
    p.add_argument("--out", default="reports/bench", help="folder for bench.json and README.md")
    p.add_argument("--model", help="generator for generation, scaling and fine-tuning (default: the default "
                                   "chain's, configs/mini.yaml)")
    p.add_argument("--sizes", help="scaling: comma-separated image counts (default 32,128,256,512,1024)")
    p.add_argument("--processes", help="scaling: comma-separated process counts (default 1, 2, 4 ... up to the cores)")
    p.add_argument("--threads", help="generation: comma-separated torch thread counts, one table each (default 1)")
    p.set_defaults(func=_bench)
    sub.add_parser("serve-judge", help="OpenAI-compatible judge server on loopback (see --help)")
    sub.add_parser("train-miniworld", help="train the mini-world generator from scratch (see --help)")
    sub.add_parser("rejudge", help="re-read a run's stored raw answers with the current parser (see --help)")
    sub.add_parser("judge-accuracy", help="measure the mini-world judge on fresh renders (see --help)")
    sub.add_parser("evaluate-model", help="the model card's numbers for a mini-world generator (see --help)")
    sub.add_parser("model-card", help="write a mini-world generator's model card (see --help)")
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        from .interrupt import MESSAGE

        print(MESSAGE, file=sys.stderr)
        return 130
    except _kit_errors() as e:  # the message names the bad input; -v adds the traceback
        from .chain import ChainInterrupted

        if args.verbose:
            import traceback

            traceback.print_exception(e.__cause__ or e, file=sys.stderr)
        print(f"compseed: error: {e}", file=sys.stderr)
        return 130 if isinstance(e, ChainInterrupted) else 1 if args.cmd == "run" else 2


if __name__ == "__main__":
    sys.exit(main())
