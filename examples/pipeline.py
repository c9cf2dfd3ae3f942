"""Restoration as a preprocessing step: a folder of images through a torch DataLoader, batch by batch.

    python examples/pipeline.py INPUT_FOLDER OUTPUT_FOLDER [--task denoise] [--weights W] [--batch-size 4]

The DataLoader's workers decode files in parallel while the main process restores; images of the same
size in a batch go to the `Restorer` as one N×3×H×W tensor (on a GPU their tiles share batches). The
restored batch is where a downstream model would take over; here it is written out as PNG files.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

import lir

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


class ImageFolder(Dataset):
    """Every image under a folder, as (float32 3×H×W tensor in [0, 1], path relative to the folder)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files = sorted(p for p in root.rglob("*") if p.suffix.lower() in EXTENSIONS)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        with Image.open(self.files[i]) as img:
            arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255
        return torch.from_numpy(arr).permute(2, 0, 1).contiguous(), str(self.files[i].relative_to(self.root))


def keep_as_list(batch):
    """Collate without stacking: images in a folder rarely share one size."""
    return batch


def restore_batch(restorer: lir.Restorer, batch: list[tuple[torch.Tensor, str]]) -> list[tuple[torch.Tensor, str]]:
    """Restore a DataLoader batch; same-sized images go through together as one N×3×H×W tensor."""
    by_size: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, (tensor, _) in enumerate(batch):
        by_size[tuple(tensor.shape[-2:])].append(i)
    restored: list = [None] * len(batch)
    for indices in by_size.values():
        stacked = torch.stack([batch[i][0] for i in indices])
        out = restorer(stacked, progress=False)  # same kind out: an N×3×H×W float tensor
        for k, i in enumerate(indices):
            restored[i] = (out[k], batch[i][1])
    return restored


def main() -> None:
    """Restore every image of INPUT_FOLDER into OUTPUT_FOLDER."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--task", default="denoise")
    parser.add_argument("--weights")
    parser.add_argument("--device")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    restorer = lir.load_model(args.task, weights=args.weights, device=args.device)
    dataset = ImageFolder(args.input)
    loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers, collate_fn=keep_as_list)
    done = 0
    for batch in loader:
        for tensor, rel in restore_batch(restorer, batch):
            # A downstream model would consume `tensor` here; we save it.
            target = (args.output / rel).with_suffix(".png")
            target.parent.mkdir(parents=True, exist_ok=True)
            arr = (tensor.permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)
            Image.fromarray(arr).save(target)
            done += 1
        print(f"{done}/{len(dataset)} restored", flush=True)


if __name__ == "__main__":
    main()
