"""`python -m bench [--smoke] [--out DIR] [--only NAME,...]`: run every benchmark in bench/ and write the results.

Each benchmark is a module ``bench/bench_<name>.py`` with ``run(smoke: bool) -> dict``. Results go to
``OUT/results.json`` and ``OUT/results.md``. ``--smoke`` runs tiny sizes so CI exercises every benchmark; its figures
are not meant to be quoted.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import platform
import sys
import time
import traceback
from pathlib import Path

import bench
from sim.planio import atomic_write


def discover() -> list[str]:
    return sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_"))


def to_markdown(results: dict) -> str:
    lines = [f"# Benchmark results ({'smoke' if results['smoke'] else 'full'})", "",
             f"Machine: {results['machine']}; Python {results['python']}; {results['date']}", ""]
    for name, res in results["benchmarks"].items():
        lines += [f"## {name}", "", "```json", json.dumps(res, indent=1, default=str), "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: exercise every benchmark quickly")
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--only", help="comma-separated benchmark names")
    args = ap.parse_args(argv)
    names = discover()
    if args.only:
        names = [n for n in names if n in args.only.split(",")]
    results = {"smoke": args.smoke, "machine": f"{platform.machine()} {platform.processor()}".strip(),
               "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M:%S"), "benchmarks": {}}
    failed = []
    for name in names:
        print(f"== bench {name}", flush=True)
        t0 = time.perf_counter()
        try:
            mod = importlib.import_module(f"bench.bench_{name}")
            res = mod.run(smoke=args.smoke)
            res["bench_wall_s"] = round(time.perf_counter() - t0, 2)
        except Exception as exc:
            traceback.print_exc()
            res = {"error": f"{type(exc).__name__}: {exc}"}
            failed.append(name)
        results["benchmarks"][name] = res
    out = Path(args.out)
    suffix = "-smoke" if args.smoke else ""
    atomic_write(out / f"results{suffix}.json", json.dumps(results, indent=1, default=str))
    atomic_write(out / f"results{suffix}.md", to_markdown(results))
    print(f"{len(names) - len(failed)} benchmarks ran, {len(failed)} failed; results in {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
