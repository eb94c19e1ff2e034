"""The package's Kaggle RLE codecs against the NumPy slice loop of Kaggle kernels (the strongest common
baseline) and the pure-Python reference, on 256x1600 masks, interleaved in one run.

    python benchmarks/rle_speed.py [--quick] [--masks N]

Masks are decoded from the real ``severstal_sample/train.csv`` strings when present (under
$SCRAPVISION_DATA, default ../shared/data), else drawn by the synthetic generator. Every real string is
also round-tripped by the vectorised codec and mismatches are counted. Writes
``benchmarks/results/severstal_rle_speed.json`` and the ``rle_speed`` section of
``benchmarks/results/severstal.md``; ``--quick`` writes ``severstal_rle_speed_quick.json`` and
``severstal_quick.md`` instead, which RESULTS.md does not include.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from bench_env import machine, now, write_section

from scrapvision.checkpoint import atomic_write
from scrapvision.data.rle import rle_decode, rle_decode_reference, rle_encode, rle_encode_reference
from scrapvision.data.synthetic.steel_strip import generate_records

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SHAPE = (256, 1600)


def load_strings() -> tuple[list[tuple[str, str]], str]:
    """(image id, RLE) pairs and where they came from."""
    path = Path(os.environ.get("SCRAPVISION_DATA", REPO.parent / "shared" / "data")) / "severstal_sample" / "train.csv"
    if path.is_file():
        with open(path, newline="") as handle:
            return [(r["ImageId"], r["EncodedPixels"]) for r in csv.DictReader(handle)], f"real: {path}"
    records = generate_records(200, seed=0, shape=SHAPE, clean_fraction=0.0)
    pairs = [(f"{r.image_id} class {c + 1}", rle) for r in records for c, rle in enumerate(r.rles) if rle]
    return pairs, "synthetic: steel_strip generator, seed 0, 256x1600"


def kaggle_decode(rle: str, shape: tuple[int, int]) -> np.ndarray:
    """The decoder of the public Severstal kernels: one slice assignment per run, no validation, and a
    transposed view (not a contiguous mask) as the result."""
    s = rle.split()
    starts, lengths = [np.asarray(x, dtype=int) for x in (s[0::2], s[1::2])]
    starts -= 1
    img = np.zeros(shape[0] * shape[1], dtype=np.uint8)
    for lo, hi in zip(starts, starts + lengths):
        img[lo:hi] = 1
    return img.reshape(shape[1], shape[0]).T


def kaggle_encode(mask: np.ndarray) -> str:
    """The encoder of the public Severstal kernels (``mask2rle``)."""
    pixels = np.concatenate([[0], mask.T.flatten(), [0]])
    runs = np.where(pixels[1:] != pixels[:-1])[0] + 1
    runs[1::2] -= runs[::2]
    return " ".join(str(x) for x in runs)


def timed(fn, *args, repeat: int = 1) -> tuple[float, object]:
    start = time.perf_counter()
    for _ in range(repeat):
        out = fn(*args)
    return (time.perf_counter() - start) / repeat, out


def compare(strings: list[tuple[str, str]], repeat: int) -> dict[str, list[float]]:
    """Per-mask seconds of each codec, interleaved so load changes hit every codec alike."""
    times: dict[str, list[float]] = {f"{op}_{who}": [] for op in ("encode", "decode") for who in ("vec", "kaggle", "ref")}
    for image_id, rle in strings:
        t, mask = timed(rle_decode, rle, SHAPE, image_id, repeat=repeat)
        times["decode_vec"].append(t)
        t, kaggle_mask = timed(kaggle_decode, rle, SHAPE, repeat=repeat)
        times["decode_kaggle"].append(t)
        t, ref_mask = timed(rle_decode_reference, rle, SHAPE, image_id)
        times["decode_ref"].append(t)
        t, text = timed(rle_encode, mask, repeat=repeat)
        times["encode_vec"].append(t)
        t, kaggle_text = timed(kaggle_encode, kaggle_mask, repeat=repeat)
        times["encode_kaggle"].append(t)
        t, ref_text = timed(rle_encode_reference, mask)
        times["encode_ref"].append(t)
        if not (np.array_equal(mask, ref_mask) and np.array_equal(mask, kaggle_mask)
                and text == ref_text == kaggle_text == rle):
            sys.exit(f"codecs disagree on {image_id}")
    return times


def round_trip_all(strings: list[tuple[str, str]]) -> tuple[int, float]:
    start = time.perf_counter()
    bad = sum(rle_encode(rle_decode(rle, SHAPE, image_id)) != rle for image_id, rle in strings)
    return bad, time.perf_counter() - start


def summary(times: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    out = {}
    for op in ("encode", "decode"):
        total = {who: sum(times[f"{op}_{who}"]) for who in ("vec", "kaggle", "ref")}
        out[op] = {f"{who}_median_ms": 1e3 * statistics.median(times[f"{op}_{who}"]) for who in total}
        out[op] |= {f"{who}_total_s": t for who, t in total.items()}
        out[op] |= {"speedup_vs_kaggle": total["kaggle"] / total["vec"], "speedup_vs_reference": total["ref"] / total["vec"]}
    return out


def write_markdown(result: dict, quick: bool = False) -> None:
    s = result["summary"]
    lines = [
        "## RLE codec speed (the package against the Kaggle kernels' NumPy slice loop)", "",
        f"- Command: `{result['command']}`", f"- Machine: {result['machine']}", f"- Date: {result['date']}",
        f"- Wall time: {result['wall_time_s']:.1f} s", f"- Masks: {result['n_masks_timed']} masks of 256x1600 "
        f"({result['source']}, {result['mean_runs_per_mask']:.0f} runs per mask on average), the package's and "
        f"the Kaggle calls repeated {result['repeat']}x per mask, the reference once, all interleaved",
        f"- Round trip of all {result['n_strings']} strings (decode then encode, the package): "
        f"{result['round_trip_mismatches']} mismatches, {result['round_trip_all_s']:.2f} s", "",
        "| op | package median ms/call | Kaggle NumPy loop median ms/call | pure-Python reference median ms/call | "
        "package vs Kaggle loop (total time) | package vs reference |",
        "|---|---|---|---|---|---|",
    ]
    for op in ("encode", "decode"):
        lines.append(f"| {op} | {s[op]['vec_median_ms']:.3f} | {s[op]['kaggle_median_ms']:.3f} | {s[op]['ref_median_ms']:.1f} | "
                     f"{s[op]['speedup_vs_kaggle']:.2f}x | {s[op]['speedup_vs_reference']:.0f}x |")
    lines += ["", "The Kaggle loop validates nothing and its decoder returns a transposed view; the package's decoder "
              "checks every run (one-line errors naming the image) and returns a C-contiguous boolean mask. "
              "Every timed mask is checked equal across the three codecs."]
    write_section(RESULTS / "severstal.md", "rle_speed", "\n".join(lines), quick=quick)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20 masks instead of the default")
    parser.add_argument("--masks", type=int, default=150, help="masks timed with both codecs (default 150)")
    parser.add_argument("--repeat", type=int, default=5, help="repeats of each vectorised call (default 5)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    date, host = now(), machine()
    strings, source = load_strings()
    n = 20 if args.quick else args.masks
    step = max(1, len(strings) // n)
    chosen = strings[::step][:n]  # spread over the file: small and large masks alike
    times = compare(chosen, args.repeat)
    bad, all_s = round_trip_all(strings)
    result = {
        "command": "python benchmarks/rle_speed.py" + " ".join([""] + sys.argv[1:]), "machine": host, "date": date,
        "source": source, "n_strings": len(strings), "n_masks_timed": len(chosen), "repeat": args.repeat,
        "mean_runs_per_mask": float(np.mean([len(r.split()) // 2 for _, r in chosen])),
        "summary": summary(times), "round_trip_mismatches": bad, "round_trip_all_s": all_s,
        "wall_time_s": time.perf_counter() - start,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    with atomic_write(RESULTS / f"severstal_rle_speed{'_quick' if args.quick else ''}.json", "w") as handle:
        json.dump(result, handle, indent=2)
    write_markdown(result, args.quick)
    print(json.dumps(result["summary"], indent=2))
    print(f"round trip: {bad} mismatches of {len(strings)}; wall {result['wall_time_s']:.1f} s")


if __name__ == "__main__":
    main()
