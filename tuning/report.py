#!/usr/bin/env python3
"""Turns tuning/run.sh's raw measurements into the results table and plots.

    python3 tuning/report.py DIR      (DIR holds raw.csv and machine.md)

Writes DIR/results.csv and DIR/results.md (medians per profile and scenario, and the
ratio of each median to the `baseline` profile's median of the same run), and
DIR/throughput.svg and DIR/p99.svg: one bar per profile and scenario. Standard library
only, so that the harness needs nothing installed to draw its plots.
"""

import csv
import statistics
import sys
from pathlib import Path

SCENARIOS = ["single", "batch100"]
COLOURS = {"single": "#4477aa", "batch100": "#ee7733"}


def load(path):
    ran, refused, order = {}, {}, []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            name = row["profile"]
            if name not in order:
                order.append(name)
            if row["status"] == "refused":
                refused[name] = (row["scope"], row["reason"])
                continue
            entry = ran.setdefault((name, row["scenario"]), {"scope": row["scope"], "runs": []})
            entry["runs"].append(
                (float(row["requests_per_s"] or 0), float(row["events_per_s"] or 0),
                 float(row["p50_ms"] or 0), float(row["p99_ms"] or 0))
            )
    return ran, refused, order


def summarize(ran, refused, order):
    rows = []
    for name in order:
        if name in refused:
            scope, reason = refused[name]
            rows.append({"profile": name, "scope": scope, "status": "refused", "reason": reason})
            continue
        for scenario in SCENARIOS:
            entry = ran.get((name, scenario))
            if not entry:
                continue
            runs = entry["runs"]
            rows.append({
                "profile": name, "scope": entry["scope"], "status": "ran", "scenario": scenario,
                "runs": len(runs),
                "requests_per_s": statistics.median(r[0] for r in runs),
                "requests_per_s_min": min(r[0] for r in runs),
                "requests_per_s_max": max(r[0] for r in runs),
                "events_per_s": statistics.median(r[1] for r in runs),
                "p50_ms": statistics.median(r[2] for r in runs),
                "p99_ms": statistics.median(r[3] for r in runs),
            })
    base = {r["scenario"]: r for r in rows if r["profile"] == "baseline" and r["status"] == "ran"}
    for r in rows:
        b = base.get(r.get("scenario"))
        if r["status"] == "ran" and b and b["requests_per_s"]:
            r["throughput_vs_baseline"] = r["requests_per_s"] / b["requests_per_s"]
            r["p99_vs_baseline"] = r["p99_ms"] / b["p99_ms"] if b["p99_ms"] else 0.0
    return rows


def write_csv(rows, path):
    fields = ["profile", "scope", "status", "scenario", "runs", "requests_per_s",
              "requests_per_s_min", "requests_per_s_max", "events_per_s",
              "p50_ms", "p99_ms", "throughput_vs_baseline", "p99_vs_baseline", "reason"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.3f}" if isinstance(v, float) else v) for k, v in r.items()})


def write_markdown(rows, machine, path):
    lines = [machine.rstrip(), "", "# Results (medians)", "",
             "| profile | scope | scenario | runs | requests/s | (min–max) | events/s | p50 ms | p99 ms | throughput vs baseline | p99 vs baseline |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["status"] == "refused":
            lines.append(f"| {r['profile']} | {r['scope']} | refused: {r['reason']} | | | | | | | | |")
            continue
        lines.append(
            f"| {r['profile']} | {r['scope']} | {r['scenario']} | {r['runs']} | {r['requests_per_s']:.0f} | "
            f"{r['requests_per_s_min']:.0f}–{r['requests_per_s_max']:.0f} | {r['events_per_s']:.0f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | "
            f"{r.get('throughput_vs_baseline', 0):.3f}x | {r.get('p99_vs_baseline', 0):.3f}x |")
    lines += ["", "![throughput](throughput.svg)", "", "![p99](p99.svg)", ""]
    Path(path).write_text("\n".join(lines))


def bar_chart(rows, key, title, unit, path):
    ran = [r for r in rows if r["status"] == "ran"]
    profiles = []
    for r in ran:
        if r["profile"] not in profiles:
            profiles.append(r["profile"])
    value = {(r["profile"], r["scenario"]): r.get(key, 0.0) for r in ran}
    top = max(value.values(), default=1.0) or 1.0
    left, bar, gap, height, width = 150, 14, 10, 22 * 0, 760
    row_h = bar * len(SCENARIOS) + gap
    chart_h = row_h * len(profiles)
    height = chart_h + 70
    plot_w = width - left - 90
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="13">{title}</text>']
    for i, name in enumerate(profiles):
        y0 = 30 + i * row_h
        out.append(f'<text x="{left - 6}" y="{y0 + bar + 4}" text-anchor="end">{name}</text>')
        for j, scenario in enumerate(SCENARIOS):
            v = value.get((name, scenario))
            if v is None:
                continue
            w = plot_w * v / top
            y = y0 + j * bar
            out.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar - 2}" fill="{COLOURS[scenario]}"/>')
            out.append(f'<text x="{left + w + 4:.1f}" y="{y + bar - 4}">{v:.3f}{unit}</text>')
    if key.endswith("vs_baseline"):
        x = left + plot_w / top
        out.append(f'<line x1="{x:.1f}" y1="26" x2="{x:.1f}" y2="{30 + chart_h}" stroke="black" stroke-dasharray="4 3"/>')
    ly = 30 + chart_h + 18
    for j, scenario in enumerate(SCENARIOS):
        x = left + j * 160
        out.append(f'<rect x="{x}" y="{ly - 10}" width="12" height="12" fill="{COLOURS[scenario]}"/>')
        out.append(f'<text x="{x + 16}" y="{ly}">{"1 event / request" if scenario == "single" else "100 events / request"}</text>')
    out.append("</svg>")
    Path(path).write_text("\n".join(out) + "\n")


def main():
    out = Path(sys.argv[1])
    ran, refused, order = load(out / "raw.csv")
    rows = summarize(ran, refused, order)
    write_csv(rows, out / "results.csv")
    machine = (out / "machine.md").read_text() if (out / "machine.md").exists() else ""
    write_markdown(rows, machine, out / "results.md")
    bar_chart(rows, "throughput_vs_baseline", "Requests/s relative to the baseline profile (median; dashed line = 1.0)", "x", out / "throughput.svg")
    bar_chart(rows, "p99_ms", "p99 latency (median of rounds)", " ms", out / "p99.svg")


if __name__ == "__main__":
    main()
