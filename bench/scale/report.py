"""The tables of bench/scale/run.py results and the issue's targets, as Markdown.

    .venv/bin/python bench/scale/report.py bench/scale/results/A.json [B.json ...]

Several files (say a 1M + 10M run and a separate 30M run) are read as one; a size measured in two
files (two commits) appears twice. Targets: the peak RSS of every step's process tree <= 4 GB at 10M
events and <= 6 GB at 30M; the CPU seconds of every step grow at most n log n between sizes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from pathlib import Path
from typing import Any

RSS_TARGET_MB = {10_000_000: 4096, 30_000_000: 6144}


def order(key: str) -> tuple[int, int]:
    """Steps in the order they ran: day 1, day 2, refresh-index, serve."""
    steps = ("generate", "validate", "features", "train", "evaluate", "deploy", "refresh-index", "serve")
    name, _, day = key.partition("@day")
    return (int(day or 9), steps.index(name) if name in steps else 99)


Key = tuple[int, str]  # (events, results file)


def load(paths: list[Path]) -> tuple[dict[Key, dict[str, Any]], list[dict[str, Any]]]:
    runs: dict[Key, dict[str, Any]] = {}
    headers = []
    for path in paths:
        doc = json.loads(path.read_text())
        headers.append({"file": str(path), **{k: doc.get(k) for k in ("git", "nice", "machine", "env", "started",
                                                                        "finished", "caps")}})
        for events, run in doc["runs"].items():
            runs[(int(events), path.name)] = run | {"file": path.name, "git": doc.get("git")}
    return dict(sorted(runs.items())), headers


def mb(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def step_table(events: int, run: dict[str, Any]) -> list[str]:
    git = run.get("git") or {}
    out = [f"### {events:,} events ({run['file']}, commit {str(git.get('commit'))[:7]}"
           f"{' dirty' if git.get('dirty') else ''}, {run.get('started')} to {run.get('finished', 'unfinished')})",
           "",
           "| step | exit | wall s | CPU s | peak RSS MB (process) | peak RSS MB (tree) | load before / after |",
           "|---|---|---|---|---|---|---|"]
    for key in sorted(run["steps"], key=order):
        s = run["steps"][key]
        exit_ = str(s["exit"]) + (f" ({s['capped']})" if s.get("capped") else "")
        out.append(f"| {key} | {exit_} | {s['wall_seconds']:,.1f} | {s['cpu_seconds']:,.1f} | {mb(s['peak_rss_mb'])} "
                   f"| {mb(s['peak_tree_rss_mb'])} | {s['loadavg_before'][0]} / {s['loadavg_after'][0]} |")
    serve = run["steps"].get("serve")
    if serve and "burst" in serve:
        b = serve["burst"]
        out += ["", f"serve: ready after {serve.get('ready_seconds')} s "
                f"(model holder's load {serve.get('load_seconds')} s), "
                f"RSS {mb(serve.get('rss_ready_mb'))} MB ready, {mb(serve.get('rss_after_burst_mb'))} MB after "
                f"{b['requests']} requests ({b['concurrency']} at a time, {b['seconds']} s; p50 {b['p50_ms']} ms, "
                f"p95 {b['p95_ms']} ms; statuses {b['statuses']})"]
    for key in ("evaluate@day2",):
        ev = run["steps"].get(key, {}).get("output")
        if isinstance(ev, dict):
            out += ["", f"{key}: {ev.get('eval_users')} users, candidate {ev.get('candidate_metrics')}, "
                    f"champion {ev.get('champion_metrics')}" + (f", sample {ev['eval_sample']}"
                                                                 if ev.get("eval_sample") else "")]
    return [*out, ""]


def targets(runs: dict[Key, dict[str, Any]]) -> list[str]:
    out = ["### Against the targets", "",
           "| events | largest step (tree RSS) | target | steps over |", "|---|---|---|---|"]
    for (events, _), run in runs.items():
        steps = run["steps"]
        if not steps:
            continue
        top = max(steps, key=lambda k: steps[k]["peak_tree_rss_mb"])
        target = RSS_TARGET_MB.get(events)
        over = [k for k, s in steps.items() if target and s["peak_tree_rss_mb"] > target]
        out.append(f"| {events:,} ({run['file']}) | {top} {mb(steps[top]['peak_tree_rss_mb'])} MB | "
                   f"{f'<= {target:,} MB' if target else '-'} | {', '.join(over) or ('none' if target else '-')} |")
    sizes = [e for e, r in runs.items() if r["steps"]]
    if len(sizes) > 1:
        out += ["", "CPU seconds growth between sizes against n log n (ratio of CPU seconds / ratio of n log n; "
                "<= 1 meets the target):", ""]
        # each run against the next smaller size's run of the same commit (else that size's first run)
        events = sorted({e for e, _ in sizes})
        pairs = []
        for small, large in itertools.pairwise(events):
            for b in (k for k in sizes if k[0] == large):
                same = [a for a in sizes if a[0] == small and runs[a]["git"] == runs[b]["git"]]
                pairs.append(((same or [a for a in sizes if a[0] == small])[0], b))
        out += ["| step | " + " | ".join(f"{a[0] / 1e6:g}M -> {b[0] / 1e6:g}M ({a[1]} -> {b[1]})"
                                      for a, b in pairs) + " |",
                "|---|" + "---|" * len(pairs)]
        keys = sorted({k for e in sizes for k in runs[e]["steps"]}, key=order)
        for key in keys:
            cells = []
            for a, b in pairs:
                sa, sb = runs[a]["steps"].get(key), runs[b]["steps"].get(key)
                if not sa or not sb or sa["exit"] or sb["exit"] or not sa["cpu_seconds"]:
                    cells.append("-")
                    continue
                grew = sb["cpu_seconds"] / sa["cpu_seconds"]
                bound = (b[0] * math.log(b[0])) / (a[0] * math.log(a[0]))
                cells.append(f"{grew:.1f}x / {bound:.1f}x = {grew / bound:.2f}")
            out.append(f"| {key} | " + " | ".join(cells) + " |")
    return out


def matrix(runs: dict[Key, dict[str, Any]]) -> list[str]:
    """One row per step, one column per size: CPU seconds / peak RSS of the process tree (MB)."""
    sizes = [e for e, r in runs.items() if r["steps"]]
    keys = sorted({k for e in sizes for k in runs[e]["steps"]}, key=order)
    out = ["| step | " + " | ".join(f"{e[0] / 1e6:g}M ({e[1]})" for e in sizes) + " |",
           "|---|" + "---|" * len(sizes)]
    for key in keys:
        cells = []
        for e in sizes:
            s = runs[e]["steps"].get(key)
            if s is None:
                cells.append("")
                continue
            mark = "" if s["exit"] == 0 else f" (exit {s['exit']})"
            cells.append(f"{s['cpu_seconds']:,.0f} s / {mb(s['peak_tree_rss_mb'])} MB{mark}")
        out.append(f"| {key} | " + " | ".join(cells) + " |")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", type=Path, nargs="+")
    p.add_argument("--matrix", action="store_true", help="only a step x size table of CPU seconds / peak RSS")
    args = p.parse_args()
    runs, headers = load(args.results)
    if args.matrix:
        print("\n".join(matrix(runs)))
        return
    lines = []
    for h in headers:
        git = h.get("git") or {}
        lines.append(f"* {h['file']}: commit {git.get('commit')} (dirty: {git.get('dirty')}"
                     f"{', ' + git['source'] if git.get('source') else ''}), nice {h.get('nice')}, "
                     f"{h.get('started')} to {h.get('finished')}, settings {h.get('env')}")
    lines.append("")
    for (events, _), run in runs.items():
        lines += step_table(events, run)
    lines += targets(runs)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
