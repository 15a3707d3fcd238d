"""`python -m bench`: every benchmark against its same-run baseline, one table, one JSON file.

python -m bench            the full run (`make bench`, a few minutes)
python -m bench --smoke    a short run that exercises the harness (CI); timings not judged
python -m bench --only polling,pipeline
"""

from __future__ import annotations

import argparse
import sys
import time

GROUPS = ("polling", "pipeline", "webhooks", "llm")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--smoke", action="store_true", help="short runs; targets not judged")
    parser.add_argument("--only", default=",".join(GROUPS), help="comma-separated groups")
    parser.add_argument("--keep", action="store_true", help="keep the work directory and logs")
    args = parser.parse_args(argv)
    groups = [g.strip() for g in args.only.split(",") if g.strip()]
    unknown = set(groups) - set(GROUPS)
    if unknown:
        parser.error(f"unknown groups: {', '.join(sorted(unknown))}")

    from bench import stack as stack_module

    started = time.monotonic()
    with stack_module.instance(keep=args.keep) as (stack, app):
        from bench import llm, memory, pipeline, polling, report, webhooks

        modules = {"polling": polling, "pipeline": pipeline, "webhooks": webhooks, "llm": llm}
        figures = []
        for group in groups:
            print(f"bench: {group} ...", file=sys.stderr, flush=True)
            figures += modules[group].run(stack, app, smoke=args.smoke)
        figures += memory.run(stack, app, smoke=args.smoke)
        if args.keep:
            print(f"bench: work directory kept: {stack.workdir}", file=sys.stderr)
        extra = {**stack.extra, "seconds": round(time.monotonic() - started, 1)}

    print()
    print(report.table(figures))
    print()
    print("Baselines (measured in the same run):")
    print(report.baselines(figures))
    path = report.write(figures, extra, args.smoke)
    print(f"\n{len(figures)} figures in {extra['seconds']:.0f} s; written to {path}")
    missed = [f for f in figures if not f.met]
    if args.smoke:
        print("smoke run: the harness works; timings are not judged here")
        return 0
    if missed:
        print(f"{len(missed)} target(s) missed: " + "; ".join(f.name for f in missed))
        return 1
    print("every target met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
