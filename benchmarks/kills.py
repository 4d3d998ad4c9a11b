"""SIGKILL each long step of ussl at random moments and report what survived; prints JSON.

    python benchmarks/kills.py --kills 20 --work /tmp/kills [--seed 0]

Steps: the teacher (its whole process group, and its parent alone), the GUI's job child
running the teacher, training (resumed afterwards), `ussl segment` over an image folder and
over a video. Each kill is checked for orphan processes, files under a final name that are not
whole, work recorded as done that differs from an uninterrupted run's, and whether the re-run
converges to the uninterrupted run's result (masks byte for byte, model weights and card,
output files byte for byte). The harness is tests/kill_harness.py; the test suite runs a few
kills of each step (tests/core/test_kills.py).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.kill_harness import Data, kill_trial, random_delays, reference_run, scenarios, trial_ok  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20, help="kills per step (a trial that ends "
                        "before its kill is repeated, at most 4 x KILLS trials a step)")
    parser.add_argument("--work", required=True, help="an empty folder for the runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--videos", type=int, default=8, help="generated videos (each one shot)")
    parser.add_argument("--frames", type=int, default=60, help="frames per generated video")
    parser.add_argument("--only", default="", help="comma-separated step names (default: all)")
    args = parser.parse_args()
    work = Path(args.work)
    rng = random.Random(args.seed)
    started = time.monotonic()
    data = Data(work / "data", n_videos=args.videos, n_frames=args.frames)
    report = {"command": " ".join(["python", *sys.argv]), "steps": {}}
    for scenario in scenarios(data):
        if args.only and scenario.name not in args.only.split(","):
            continue
        reference_run(scenario, data.base / "reference")
        trials = []
        while sum(t.killed for t in trials) < args.kills and len(trials) < 4 * args.kills:
            delay = random_delays(scenario, 1, rng)[0]
            trials.append(kill_trial(scenario, data.base / "trial", delay))
            print(f"{scenario.name}: {asdict(trials[-1])}", file=sys.stderr, flush=True)
        killed = [t for t in trials if t.killed]
        report["steps"][scenario.name] = {
            "uninterrupted_s": round(scenario.seconds, 2),
            "kills": len(killed),
            "survived": sum(trial_ok(t) for t in killed),
            "orphans": sum(t.orphans for t in killed),
            "files_not_whole": sum(len(t.bad_files) for t in killed),
            "done_work_lost": sum(len(t.lost) for t in killed),
            "converged": sum(t.converged for t in killed),
            "mean_units_done_at_kill": round(sum(t.done_at_kill for t in killed) / max(1, len(killed)), 2),
            "failures": [asdict(t) for t in killed if not trial_ok(t)],
        }
    report["wall_seconds"] = round(time.monotonic() - started, 1)
    text = json.dumps(report, indent=2)
    (work / "kills.json").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
