"""The markdown of benchmarks/speed.py: throughput, share of the fp32 peak and peak memory per head and engine."""

from __future__ import annotations

GOAL = 2.0  # issue 20: the default engine at least 2x naive eager on every head


def _cell(row: dict, key: str, fmt: str) -> str:
    return format(row[key], fmt) if key in row else row.get("error", "missing")[:60]


def _throughput(by: dict, heads: list[str], batch: int, engines: tuple, labels: dict) -> list[str]:
    lines = [f"#### Items/s at batch {batch} (x eager)", "",
             "| head | input | " + " | ".join(labels[e] for e in engines) + " | auto picks | auto / eager |",
             "|---|---|" + "---|" * (len(engines) + 2)]
    for head in heads:
        rows = {e: by.get((head, e, batch), {}) for e in engines}
        eager = rows["eager"].get("items_per_s")
        cells = [f"{r['items_per_s']:.2f} ({r['items_per_s'] / eager:.2f}x)" if eager and "items_per_s" in r
                 else _cell(r, "items_per_s", ".2f") for r in rows.values()]
        auto = rows["eager"].get("auto", "?")
        ratio = rows.get(auto, {}).get("items_per_s", float("nan")) / eager if eager else float("nan")
        shape = "x".join(str(s) for s in rows["eager"].get("input_shape", []))
        lines.append(f"| {head} | {shape} | " + " | ".join(cells) + f" | {labels.get(auto, auto)} | {ratio:.2f}x |")
    return lines


def _flops(by: dict, heads: list[str], batch: int, engines: tuple, labels: dict, peak: float) -> list[str]:
    lines = [f"#### Achieved GFLOP/s at batch {batch} (share of the {peak:.0f} GFLOP/s fp32 peak)", "",
             "| head | GFLOP / item | " + " | ".join(labels[e] for e in engines) + " |",
             "|---|---|" + "---|" * len(engines)]
    for head in heads:
        rows = [by.get((head, e, batch), {}) for e in engines]
        flops = rows[0].get("gflop_per_item")
        if flops is None:
            continue
        cells = [f"{flops * r['items_per_s']:.1f} ({flops * r['items_per_s'] / peak:.0%})" if "items_per_s" in r
                 else _cell(r, "items_per_s", ".2f") for r in rows]
        lines.append(f"| {head} | {flops:.3f} | " + " | ".join(cells) + " |")
    return lines


def _memory(by: dict, heads: list, batch: int, engines: tuple, labels: dict) -> list[str]:
    """The peak-memory table: what each engine adds over the loaded process when the run measured it (Linux),
    else the whole process's peak (which the imports' resident ~1 GiB dominates)."""
    added = any("engine_rss_mib" in by.get((h, e, batch), {}) for h in heads for e in engines)
    key = "engine_rss_mib" if added else "peak_rss_mib"
    title = (f"#### Memory each engine adds (MiB of resident peak over the process with torch and the model loaded), "
             f"batch {batch}" if added else f"#### Peak RSS (MiB) at batch {batch}")
    lines = [title, "", "| head | " + " | ".join(labels[e] for e in engines) + " |", "|---|" + "---|" * len(engines)]
    for head in heads:
        lines.append(f"| {head} | " + " | ".join(_cell(by.get((head, e, batch), {}), key, ".0f") for e in engines) + " |")
    if added:
        base = [by[(h, e, batch)]["setup_rss_mib"] for h in heads for e in engines if "setup_rss_mib" in by.get((h, e, batch), {})]
        lines += ["", f"The process held {min(base):.0f}-{max(base):.0f} MiB before the engine was built (torch, the "
                  "engine packages and the fp32 model)."]
    return lines


def render_tables(record: dict, argv: str, engines: tuple, labels: dict) -> str:
    by = {(r["head"], r["engine"], r.get("batch")): r for r in record["results"]}
    heads = sorted({r["head"] for r in record["results"]})
    batches = record.get("batches") or [record.get("batch")]
    peak = record.get("peak_gflops")
    lines = ["### Inference speed per head (random weights, CPU-recipe input size)", "",
             f"Throughput: every engine of a head timed in one process, interleaved over {record.get('rounds', 1)} "
             "rounds, median round; memory: each engine alone in a fresh process, at the largest batch.", "",
             f"`python benchmarks/speed.py {argv}`".replace(" `", "`") + f" on {record['machine']}, {record['date']}, "
             f"batches {', '.join(map(str, batches))}, {record['threads']} threads, peak fp32 matmul "
             f"{peak:.1f} GFLOP/s, wall {record['wall_s']} s.", ""]
    for batch in batches:
        lines += _throughput(by, heads, batch, engines, labels) + [""]
    for batch in batches:
        lines += _flops(by, heads, batch, engines, labels, peak) + [""]
    lines += ["bf16 and int8 compute in narrower types than the fp32 peak, so their share may pass 100 %.", "",
              *_memory(by, heads, max(batches), engines, labels)]
    lines += ["", f"Goal: the default engine (`--engine auto`) at least {GOAL:g}x naive eager on every head. Misses are "
              "reported as measured."]
    for batch in batches:
        misses = []
        for head in heads:
            eager = by.get((head, "eager", batch), {})
            auto = by.get((head, eager.get("auto"), batch), {})
            if "items_per_s" in eager and auto.get("items_per_s", 0) < GOAL * eager["items_per_s"]:
                misses.append(head)
        lines.append(f"- batch {batch}: below {GOAL:g}x on {', '.join(misses) if misses else 'no head'}.")
    return "\n".join(lines) + "\n"
