"""``scrapvision prepare --task scrap_cls`` on the synthetic yard video: frames kept/dropped, crops, timing.

    python benchmarks/scrap_cls_prepare.py [--quick]

Writes a 300-frame (30 s at 10 fps, 320x240) video in which a grapple crosses the scene twice, runs the
real CLI for both motion methods with the OpenCV segmenter, and checks the result against the ground
truth: no kept frame may show the grapple, every crop must match a pile (box IoU). Results go to
benchmarks/results/scrap_cls_prepare.json and a section of benchmarks/results/scrap_cls.md.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_env import machine, write_section  # noqa: E402
from benchmarks.scrap_cls_common import MARKDOWN, RESULTS  # noqa: E402
from scrapvision.cli import main as cli  # noqa: E402
from scrapvision.data.synthetic.scrap_grades import render_video_frames  # noqa: E402
from scrapvision.heads import load_all  # noqa: E402


def box_iou(a: list[int], b: tuple[int, int, int, int]) -> float:
    w = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    h = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return w * h / (a[2] * a[3] + b[2] * b[3] - w * h)


def write_two_pass_video(path: Path, frames: int, shape: tuple[int, int], seed: int) -> dict:
    """Two grapple passes: frames [60, 100) and [180, 230) (scaled to ``frames``)."""
    a = (frames // 5, frames // 3)
    b = (frames * 3 // 5, frames * 23 // 30)
    first, boxes, truth1 = render_video_frames(frames, shape, a, seed)
    second, _, truth2 = render_video_frames(frames, shape, b, seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (shape[1], shape[0]))
    moving = []
    for t in range(frames):
        frame = second[t] if b[0] <= t < b[1] else first[t]
        moving += [t] if truth1[t] or truth2[t] else []
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return {"boxes": boxes, "moving_frames": moving, "passes": [a, b]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="60 frames at 160x120")
    args = parser.parse_args()
    frames, shape = (60, (120, 160)) if args.quick else (300, (240, 320))
    results, host = [], machine()
    load_all()  # import every head (timm, torch) before timing, so the first method is not charged for it
    with tempfile.TemporaryDirectory(prefix="scrap_cls_prepare_") as tmp:
        video = Path(tmp) / "yard.avi"
        truth = write_two_pass_video(video, frames, shape, seed=0)
        for method in ("mog2", "diff"):
            out = Path(tmp) / method
            command = ["prepare", "--task", "scrap_cls", "--video", str(video), "--out", str(out), "--motion", method]
            start = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()) as printed:
                code = cli(command)
            seconds = time.perf_counter() - start
            if code != 0:
                sys.exit(f"prepare failed for {method}")
            report = json.loads((out / "prepare_report.json").read_text())
            kept = report["kept_frames"]
            ious = [max(box_iou(c["box_xywh"], b) for b in truth["boxes"]) for c in report["crops"]]
            results.append({
                "motion": method, "frames": report["frames"], "grapple_frames": len(truth["moving_frames"]),
                "flagged_moving": report["moving"], "dropped": report["dropped"], "still": report["still"],
                "kept_frames": kept, "kept_with_grapple": len(set(kept) & set(truth["moving_frames"])),
                "crops": len(report["crops"]), "piles": len(truth["boxes"]),
                "min_crop_iou": round(min(ious), 3) if ious else None, "seconds": round(seconds, 2),
                "fps_processed": round(report["frames"] / seconds, 1), "cli_output": printed.getvalue().strip(),
            })
    payload = {"command": "python benchmarks/scrap_cls_prepare.py" + (" --quick" if args.quick else ""),
               "date": time.strftime("%Y-%m-%d %H:%M %Z"), "machine": host, "video": {"frames": frames, "size_hw": shape, "fps": 10,
               "grapple_passes": truth["passes"]}, "results": results}
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "scrap_cls_prepare_quick" if args.quick else "scrap_cls_prepare"
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=1))
    lines = [
        "## scrap_cls: `prepare` on the synthetic yard video",
        "",
        f"- Command: `{payload['command']}` (runs `scrapvision prepare --task scrap_cls --video yard.avi --out DIR "
        "--motion M` for both motion methods, OpenCV segmenter; SAM not run: no checkpoint offline)",
        f"- Date: {payload['date']}; machine: {payload['machine']}",
        f"- Video: {frames} frames, {shape[1]}x{shape[0]}, 10 fps, 3 scrap piles, grapple passes in frames "
        f"{truth['passes'][0]} and {truth['passes'][1]} (half-open), in view in {len(truth['moving_frames'])} frames",
        "",
        "| motion | frames | flagged moving | dropped (incl. settle) | still | kept frames | kept with grapple | "
        "crops | min crop IoU vs pile | seconds | frames/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(f"| {r['motion']} | {r['frames']} | {r['flagged_moving']} | {r['dropped']} | {r['still']} | "
                     f"{len(r['kept_frames'])} | {r['kept_with_grapple']} | {r['crops']} | {r['min_crop_iou']} | "
                     f"{r['seconds']} | {r['fps_processed']} |")
    lines += ["", f"CLI output ({results[0]['motion']}): `{results[0]['cli_output'].splitlines()[0]}`", ""]
    section = "\n".join(lines)
    write_section(MARKDOWN, "scrap_cls:prepare", section, quick=args.quick)
    print(section)


if __name__ == "__main__":
    main()
