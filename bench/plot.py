#!/usr/bin/python3
"""Charts for docs/performance.md, drawn from the benchmarks' JSON output.

  bench/plot.py [--results bench/results] [--out docs/img]

Reads
  engine_bench.json   Google Benchmark JSON of bench/engine_bench (aggregates)
  hit_ratio.json      bench/hit_ratio --json
  tiered_bench.json   bench/tiered_bench --json (optional)
  memory_drift.json   bench/memory_drift --json (optional)
  gutter_bench.json   bench/gutter_bench --json (optional)
and writes
  throughput_vs_threads.svg   median Get throughput at 1, 2 and 8 threads
  hit_ratio_vs_size.svg       hit ratio against capacity, one panel per trace
  memory_drift.svg            RSS and reserved bytes over time, bench/memory_drift
  tiered_vs_baselines.svg     TieredCache figures against their baselines
  gutter_loads.svg            database loads per key in a one-server outage

Needs Debian's python3-matplotlib (apt-get install python3-matplotlib); runs
with the system interpreter, /usr/bin/python3.
"""

import argparse
import json
import os
import re
import sys

try:
    import matplotlib

    matplotlib.use("svg")
    import matplotlib.pyplot as plt
except ImportError:
    sys.exit("bench/plot.py needs matplotlib: apt-get install python3-matplotlib "
             "(and run it with /usr/bin/python3)")

# Deterministic SVG output: no random ids, no date in the metadata.
matplotlib.rcParams["svg.hashsalt"] = "tiercache"
matplotlib.rcParams["svg.fonttype"] = "none"

# engine_bench families, in legend order, with the label the page uses.
THROUGHPUT_SERIES = [
    ("BM_BareRobinMap_GetHit", "bare tsl::robin_map (no lock, no LRU)"),
    ("BM_Cache_GetHitReuse", "Cache::Get(key, &buffer)"),
    ("BM_Cache_GetHit", "Cache::Get(key)"),
    ("BM_Cache_GetHit_1Stripe", "Cache::Get, stripes = 1"),
    ("BM_MutexLru_GetHit", "std::mutex + unordered_map + list LRU"),
    ("BM_Cache_Mixed90_10", "Cache, 90% Get / 10% Set, 10% cached"),
    ("BM_MutexLru_Mixed90_10", "mutex LRU, 90% Get / 10% Set, 10% cached"),
]


def load_optional(results, name):
    """The JSON of an optional benchmark's output, or None when it was not run."""
    path = os.path.join(results, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def save(fig, path):
    fig.savefig(path, metadata={"Date": None}, bbox_inches="tight")
    plt.close(fig)
    print("wrote", path)


def throughput_vs_threads(results, out):
    with open(os.path.join(results, "engine_bench.json")) as f:
        data = json.load(f)
    # name/real_time/threads:N_median -> items (or ops) per second
    pattern = re.compile(r"^(BM_\w+)/.*threads:(\d+)_median$")
    series = {}
    for bench in data["benchmarks"]:
        m = pattern.match(bench["name"])
        if not m:
            continue
        rate = bench.get("items_per_second")
        if rate is None:
            rate = bench["iterations"] / (bench["real_time"] * 1e-9)
        series.setdefault(m.group(1), {})[int(m.group(2))] = rate
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for family, label in THROUGHPUT_SERIES:
        if family not in series:
            continue
        points = sorted(series[family].items())
        ax.plot([t for t, _ in points], [r / 1e6 for _, r in points], marker="o", label=label,
                linestyle="--" if "Mutex" in family or "Bare" in family else "-")
    ax.set_xscale("log", base=2)
    ax.set_xticks([1, 2, 8])
    ax.set_xticklabels(["1", "2", "8"])
    ax.set_xlabel("threads (the machine has 2 vCPUs)")
    ax.set_ylabel("million operations per second (median)")
    ax.set_title("L1 engine: throughput against threads\n"
                 "2^20 keys, 100-byte values, Zipf(0.99); bench/engine_bench")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_ylim(bottom=0)
    save(fig, os.path.join(out, "throughput_vs_threads.svg"))


def hit_ratio_vs_size(results, out):
    with open(os.path.join(results, "hit_ratio.json")) as f:
        data = json.load(f)
    capacities = data["capacities"]
    traces = data["traces"]
    fig, axes = plt.subplots(3, 3, figsize=(12, 10), sharex=True)
    for ax, (name, curves) in zip(axes.flat, sorted(traces.items())):
        for key, label, style, color in [
                ("exact_lru", "kLru, 1 stripe (exact LRU)", "-", "tab:blue"),
                ("automatic", "kLru, automatic stripes", "--", "tab:blue"),
                ("stripes_64", "kLru, 64 stripes", ":", "tab:blue"),
                ("tinylfu", "kTinyLfu, 1 stripe", "-", "tab:orange"),
                ("tinylfu_automatic", "kTinyLfu, automatic stripes", "--", "tab:orange")]:
            if key not in curves:
                continue
            points = [(c, v) for c, v in zip(capacities, curves[key]) if v >= 0]
            ax.plot([c for c, _ in points], [v for _, v in points], style, marker=".",
                    color=color, label=label)
        ax.set_title(f"{name} ({curves['requests']:,} requests)", fontsize=10)
        ax.set_xscale("log")
        ax.set_ylim(0, 100)
        ax.grid(True, alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("cache size (items)")
    for ax in axes[:, 0]:
        ax.set_ylabel("hit ratio (%)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Hit ratio against cache size on the LIRS traces, per eviction policy; "
                 "bench/hit_ratio")
    save(fig, os.path.join(out, "hit_ratio_vs_size.svg"))


def memory_drift(results, out):
    data = load_optional(results, "memory_drift.json")
    if data is None:
        return
    max_bytes = data["rows"][0]["max_bytes"]
    mib = 1024 * 1024
    writes = [s[0] / 1e6 for s in data["samples"]]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.plot(writes, [s[2] / mib for s in data["samples"]], label="RSS growth")
    ax.plot(writes, [s[1] / mib for s in data["samples"]], "--", label="Stats().reserved_bytes")
    ax.axhline(max_bytes / mib, color="black", linewidth=0.8, label="max_bytes")
    ax.axhline(1.15 * max_bytes / mib, color="red", linewidth=0.8, linestyle=":",
               label="1.15x max_bytes (the bound)")
    names = ["40 B", "2-4 KiB", "40 B", "1 B-64 KiB", "40 B"]
    start = 0
    for end, name in zip(data["phase_ends"], names):
        ax.axvline(end / 1e6, color="grey", linewidth=0.5)
        ax.text((start + end) / 2e6, 8, name, ha="center", fontsize=8)
        start = end
    ax.set_xlabel("writes (millions)")
    ax.set_ylabel("MiB")
    ax.set_ylim(0, 1.4 * max_bytes / mib)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(True, alpha=0.3)
    fig.suptitle("Memory while value sizes drift: a 64 MiB cache; bench/memory_drift")
    save(fig, os.path.join(out, "memory_drift.svg"))


def tiered_vs_baselines(results, out):
    data = load_optional(results, "tiered_bench.json")
    if data is None:
        return
    rows = data["results"]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    labels = [f"{r['benchmark']}\nvs {r['baseline_name']}" for r in rows]
    ratios = [r["ratio"] for r in rows]
    bars = ax.barh(range(len(rows)), ratios, color="#3b6ea8")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    for bar, ratio in zip(bars, ratios):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {ratio:.2f}x",
                va="center", fontsize=8)
    ax.set_xlabel("TieredCache relative to its baseline (> 1: better)")
    ax.set_title("TieredCache against same-run baselines; bench/tiered_bench")
    save(fig, os.path.join(out, "tiered_vs_baselines.svg"))


def gutter_loads(results, out):
    data = load_optional(results, "gutter_bench.json")
    if data is None:
        return
    rows = data["results"]
    outages = []
    for r in rows:
        if r["outage"] not in outages:
            outages.append(r["outage"])
    names = {"none": "all primaries up", "killed": "a primary killed\n(SIGKILL)",
             "hung": "a primary hung\n(SIGSTOP)"}
    fig, ax = plt.subplots(figsize=(7, 3.4))
    width = 0.38
    for offset, gutter, color, label in ((-width / 2, False, "#c0504d", "no gutter"),
                                         (width / 2, True, "#3b6ea8", "gutter pool")):
        values = []
        for outage in outages:
            row = next(r for r in rows if r["outage"] == outage and r["gutter"] == gutter)
            values.append(row["loads"] / row["keys"])
        bars = ax.bar([i + offset for i in range(len(outages))], values, width, color=color,
                      label=label)
        for bar, value in zip(bars, values):
            ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), f"{value:.2f}",
                    ha="center", va="bottom", fontsize=8)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(outages)))
    ax.set_xticklabels([names.get(o, o) for o in outages], fontsize=8)
    ax.set_ylabel("database loads per key")
    ax.set_title(f"{data['replicas']} replicas x {data['threads_per_replica']} threads, "
                 "fresh keys; bench/gutter_bench", fontsize=9)
    ax.legend(fontsize=8)
    save(fig, os.path.join(out, "gutter_loads.svg"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", default="bench/results")
    parser.add_argument("--out", default="docs/img")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    throughput_vs_threads(args.results, args.out)
    hit_ratio_vs_size(args.results, args.out)
    memory_drift(args.results, args.out)
    tiered_vs_baselines(args.results, args.out)
    gutter_loads(args.results, args.out)


if __name__ == "__main__":
    main()
