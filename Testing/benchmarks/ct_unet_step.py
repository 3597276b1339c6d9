"""Print where a head-and-neck CT U-Net training step's time goes: the U-Net's forward and backward with a plain
cross-entropy (what session 24's probe timed: 44 ms on an H200, where the run averaged 81-103 ms), the same with
the partial-label loss the runs train with, and that loss alone (forward and backward on fixed logits).

Usage: python Testing/benchmarks/ct_unet_step.py [--config headneck-ct-gpu-wide] [--device cpu|cuda] [--batch B]
    [--patch D H W] [--steps 10] [--threads 1]

Random crops and labels (seven organs, one case with an organ not contoured and slices beyond another's
contour), the config's model, AdamW, and its bf16 autocast and channels-last where the device has them; the first
two steps are warm-up, the rest timed, with the GPU synchronised around them. Numbers, not a pass/fail: shared
machines are noisy.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "ImageToMeshLib"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="headneck-ct-gpu-wide")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--batch", type=int, default=None, help="crops per step (default: the config's)")
    parser.add_argument("--patch", type=int, nargs=3, default=None, help="crop size (default: the config's)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch
    import torch.nn.functional as F

    from imagetomesh.models.registry import build_model
    from imagetomesh.nn.precision import bf16_autocast, to_channels_last
    from imagetomesh.training.configs import image_configs
    from imagetomesh.training.data import mark_uncontoured_slices
    from imagetomesh.training.losses import partial_label_loss

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    config = image_configs()["unet"][args.config]
    batch, patch = args.batch or config.batch_size, args.patch or config.patch
    model = build_model("unet", config.model).to(device)
    if config.channels_last:
        to_channels_last(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 1, *patch, generator=g).to(device)
    labels = torch.randint(0, 8, (batch, *patch), generator=g, dtype=torch.uint8)
    labels[0][labels[0] == 5] = 0
    labels[0, patch[0] // 2, 0, 0] = 5  # the oesophagus contoured on one slice: the others lie beyond its contour
    labels[0] = mark_uncontoured_slices(labels[0], [5], axis=0)
    present = torch.ones(batch, 8, dtype=torch.bool)
    present[-1, 6] = False
    labels, present = labels.to(device), present.to(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def network_step(loss_of) -> None:
        optimizer.zero_grad(set_to_none=True)
        with bf16_autocast(config.bf16_autocast, device):
            logits, _ = model(images)
        loss_of(logits).backward()
        optimizer.step()

    fixed = torch.randn(batch, 8, *patch, generator=g).to(device)

    def loss_alone() -> None:
        logits = fixed.clone().requires_grad_()
        partial_label_loss(logits, labels, present).backward()

    settings = {
        "U-Net + cross-entropy": lambda: network_step(
            lambda lo: F.cross_entropy(lo.float(), labels.long().clamp(max=7))
        ),
        "U-Net + partial-label loss": lambda: network_step(lambda lo: partial_label_loss(lo, labels, present)),
        "partial-label loss alone": loss_alone,
    }
    print(f"{args.config} on {device.type}: batch {batch}, crops {'x'.join(map(str, patch))}, {args.threads} thread(s)")
    for name, step in settings.items():
        for _ in range(2):
            step()
        sync()
        started = time.perf_counter()
        for _ in range(args.steps):
            step()
        sync()
        print(f"  {name}: {(time.perf_counter() - started) / args.steps * 1000:.0f} ms a step")


if __name__ == "__main__":
    main()
