"""``scrapvision prepare --task scrap_cls --video FILE --out DIR``: options and the run."""

from __future__ import annotations

import argparse
from pathlib import Path

from ...data.video import PrepareOptions, SamSegmenter, prepare_video
from ...errors import ScrapvisionError


def add_prepare_args(parser: argparse.ArgumentParser) -> None:
    d = PrepareOptions()
    parser.add_argument("--video", required=True, metavar="FILE", help="yard video (any format OpenCV reads)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="writes DIR/frames/, DIR/crops/<label>/ (an ImageFolder) and DIR/prepare_report.json")
    parser.add_argument("--label", default=d.label, help=f"class folder for the crops (default {d.label})")
    parser.add_argument("--motion", choices=("mog2", "diff"), default=d.motion,
                        help="MOG2 background subtraction or frame differencing (default mog2)")
    parser.add_argument("--motion-threshold", type=float, default=d.motion_threshold, metavar="FRACTION",
                        help=f"share of moving pixels that marks a frame as moving (default {d.motion_threshold})")
    parser.add_argument("--settle", type=int, default=d.settle, metavar="N",
                        help=f"also drop N frames before and after motion (default {d.settle})")
    parser.add_argument("--gap", type=int, default=d.gap, metavar="N",
                        help="frames between two kept stills (default: one per second)")
    parser.add_argument("--min-area", type=float, default=d.min_area, metavar="FRACTION")
    parser.add_argument("--max-area", type=float, default=d.max_area, metavar="FRACTION")
    parser.add_argument("--max-frames", type=int, default=d.max_frames, metavar="N", help="0 = whole video")
    parser.add_argument("--sam-checkpoint", metavar="FILE",
                        help="local Segment Anything checkpoint (sam_vit_b_01ec64.pth...); without it the "
                        "classical OpenCV segmentation is used")
    parser.add_argument("--sam-model-type", default="auto", help="vit_b, vit_l or vit_h (default: from file name)")
    parser.add_argument("--sam-points", type=int, default=16, metavar="N", help="SAM points per side (default 16)")
    parser.add_argument("--device", default="cpu", help="device for SAM (default cpu)")


def run_prepare(args: argparse.Namespace) -> Path:
    options = PrepareOptions(
        label=args.label, motion=args.motion, motion_threshold=args.motion_threshold, settle=args.settle,
        gap=args.gap, min_area=args.min_area, max_area=args.max_area, max_frames=args.max_frames)
    if not 0 <= options.min_area < options.max_area <= 1:
        raise ScrapvisionError(f"--min-area {options.min_area} / --max-area {options.max_area}: need 0 <= min < max <= 1")
    if not options.label or "/" in options.label or options.label.startswith("."):
        raise ScrapvisionError(f"--label {options.label!r}: must be a plain folder name")
    segmenter, name = None, "opencv"
    if getattr(args, "sam_checkpoint", None):
        segmenter = SamSegmenter(args.sam_checkpoint, args.sam_model_type, args.device, args.sam_points)
        name = "sam"
    report = prepare_video(args.video, args.out, options, segmenter, name)
    print(f"prepare: {report['frames']} frames, {report['moving']} moving, {report['dropped']} dropped "
          f"(moving or within {options.settle} of motion), {report['still']} still; kept "
          f"{len(report['kept_frames'])} frames; {len(report['crops'])} crops ({name}) in "
          f"{Path(args.out) / 'crops' / options.label}")
    return Path(args.out) / "prepare_report.json"
