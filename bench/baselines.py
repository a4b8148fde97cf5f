"""The baselines table: every baseline controller on the shared RESCO scenarios and the bundled corridor.

    python -m bench.baselines --seeds 1-10 --out bench/results/baselines

runs `gronvag evaluate` for each scenario (shared ones under the benchmark protocol `--protocol resco`, the bundled
corridor under SUMO's defaults plus unfinished trips) and writes `baselines.md` / `.csv` and plots with
`gronvag compare`, prefixed with the command that made them. Not part of `python -m bench` (it takes a while).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "scenarios"
SCENARIOS = ("cologne1", "cologne3", "ingolstadt1", "grid4x4", "arterial4x4", "stockholm-corridor")
CONTROLLERS = ("fixed", "webster", "webster-coord", "actuated", "max-pressure")


def main(argv: list[str] | None = None) -> int:
    from sim.evaluate import evaluate, parse_seeds
    from sim.planio import atomic_write
    from sim.report import compare

    ap = argparse.ArgumentParser(prog="python -m bench.baselines")
    ap.add_argument("--seeds", default="1-10")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--controllers", default=",".join(CONTROLLERS))
    ap.add_argument("--out", default="bench/results/baselines")
    ap.add_argument("--jobs", type=int)
    args = ap.parse_args(argv)
    out = Path(args.out)
    dirs = []
    for name in args.scenarios.split(","):
        shared = SHARED / name
        if name.startswith(("cologne", "ingolstadt", "grid4x4", "arterial")) and not shared.is_dir():
            print(f"skip {name}: ../shared/scenarios is absent")
            continue
        spec = str(shared) if shared.is_dir() else name
        protocol = "resco" if shared.is_dir() else "default"
        d = out / "runs" / name
        evaluate(spec, args.controllers.split(","), parse_seeds(args.seeds), d, protocol=protocol, jobs=args.jobs)
        dirs.append(d)
    compare(dirs, out)
    cmd = "python -m bench.baselines " + " ".join(argv if argv is not None else sys.argv[1:])
    md = out / "compare.md"
    if md.exists():
        atomic_write(out.parent / "baselines.md",
                     f"# Baselines\n\nMade by `{cmd.strip()}`.\n\n" + md.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
