"""Print how long the head-and-neck CT U-Nets take over a whole scan as loaded and as ``segment`` runs them.

Usage: python Testing/benchmarks/fast_inference.py [--model unet-headneck-ct] [--shape 88 104 176]
    [--repeats 5] [--threads 1]

For the model and each U-Net its card's ``ensemble`` names (what ``segment`` runs over a whole CT), one forward
pass over a random image of ``--shape`` (D, H, W; the default is one of the two windows of
../shared/data/openkbp-ct's widest scan grid, openkbp_116's) as loaded and as
:func:`~imagetomesh.nn.fast_inference.fast_inference_copy` makes it (batch norms folded, convolutions on oneDNN,
channels-last), the two interleaved, best of ``--repeats``
(this machine's load varies), and the largest logit difference between the two.
"""

from __future__ import annotations

import argparse
import time

import torch


def seconds(net, image: torch.Tensor) -> float:
    """Wall seconds of one ``net(image)`` without gradients."""
    start = time.perf_counter()
    with torch.no_grad():
        net(image)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="unet-headneck-ct")
    parser.add_argument("--shape", type=int, nargs=3, default=[88, 104, 176])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from imagetomesh.nn.fast_inference import fast_inference_copy
    from imagetomesh.zoo import ensemble_unet, load_model

    model = load_model(args.model, "cpu")
    nets = {args.model: model.module.unet.eval()}
    for name in model.card.get("ensemble", []):
        nets[name] = ensemble_unet(name, args.model, model.card["organs"], model.card["grid"], "cpu", "")
    image = torch.randn(1, 1, *args.shape, generator=torch.Generator().manual_seed(0))
    print(f"input {' x '.join(map(str, args.shape))}, {args.threads} thread(s), best of {args.repeats}")
    print(f"{'U-Net':<28} {'as loaded s':>12} {'fast s':>10} {'faster':>8} {'max |logit diff|':>17}")
    for name, net in nets.items():
        fast = fast_inference_copy(net)
        with torch.no_grad():
            difference = (net(image)[0] - fast(image)[0]).abs().max().item()  # also warms both up
        loaded = fast_time = float("inf")
        for _ in range(args.repeats):
            loaded = min(loaded, seconds(net, image))
            fast_time = min(fast_time, seconds(fast, image))
        print(f"{name:<28} {loaded:>12.2f} {fast_time:>10.2f} {1 - fast_time / loaded:>7.0%} {difference:>17.1e}")


if __name__ == "__main__":
    main()
