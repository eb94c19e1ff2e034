"""Where a segdec checkpoint's decision comes from: AUROC of each group of its decision-head inputs.

    python benchmarks/segdec_probe.py runs/segdec/<time>/last.pt [--set data.root=/data/x] [--split val]

The decision head's FC sees 66 numbers per image: the global max and mean of its 32 feature channels, and
the max and mean of the segmentation logit. On the test fold (or the validation split) this prints the
decision's AP / AUROC, the best single-input AUROC of each group, how much each group varies between images,
and the AUROC of each group's share of the decision logit. It tells a segmentation that does not find the
defects (low "seg max" AUROC) from a decision head that does not use a segmentation that does (high
"seg max" AUROC, lower decision AUROC). Used in benchmarks/results/segdec_transfer.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import average_precision_score, roc_auc_score
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scrapvision.api import load_trained  # noqa: E402


def _auroc(y: np.ndarray, values: np.ndarray) -> float:
    """AUROC of one input, whichever direction separates (the FC weight may have either sign)."""
    auc = roc_auc_score(y, values)
    return max(auc, 1 - auc)


def probe(checkpoint: Path, overrides: list[str], split: str) -> list[str]:
    task, model = load_trained("segdec", checkpoint, overrides)
    dataset = task.build_eval_dataset() if split == "test" else task.build_datasets()[1]
    inputs: list[torch.Tensor] = []
    hook = model.decision.fc.register_forward_hook(lambda m, i, o: inputs.append(i[0].detach()))
    labels, scores = [], []
    with torch.no_grad():
        for batch in DataLoader(dataset, batch_size=16):
            decision, _ = model(task.channels(batch["image"]))
            scores.append(torch.sigmoid(decision))
            labels.append(batch["label"] > 0.5)
    hook.remove()
    x, y, score = torch.cat(inputs).numpy(), torch.cat(labels).numpy(), torch.cat(scores).numpy()
    c = (x.shape[1] - 2) // 2
    weight = model.decision.fc.weight.detach().numpy()[0]
    groups = {"feature max": slice(0, c), "feature mean": slice(c, 2 * c), "seg max": slice(2 * c, 2 * c + 1),
              "seg mean": slice(2 * c + 1, 2 * c + 2)}
    lines = [f"{checkpoint} ({split}): {len(y)} images, {int(y.sum())} defective; decision AP "
             f"{100 * average_precision_score(y, score):.1f}, AUROC {100 * _auroc(y, score):.1f}"]
    for name, cols in groups.items():
        best = max(_auroc(y, x[:, j]) for j in range(cols.start, cols.stop))
        share = x[:, cols] @ weight[cols]
        lines.append(f"  {name:12s} best single AUROC {100 * best:5.1f}  between-image std {x[:, cols].std(0).mean():.4f}"
                     f"  its logit share: AUROC {100 * _auroc(y, share):5.1f}, std {share.std():.3f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--split", choices=("test", "val"), default="test")
    args = parser.parse_args()
    print("\n".join(probe(args.checkpoint, args.overrides, args.split)))


if __name__ == "__main__":
    main()
