"""``encode``: hash codes (images a second), DeepHash-pytorch's ``compute_result`` against
``hashing.encode``, for ConvNet-3 and ResNetAP-10."""

from __future__ import annotations

import statistics

import torch
from torch import nn

from ..data import CIFAR10_MEAN, CIFAR10_STD
from ..hashing import encode
from ..models import HashNet, build_backbone
from ..seeding import generator, seeded
from ..training import as_float
from .sizes import Sizes
from .timing import interleaved, ratio

CODE_MISMATCH = 1e-3                       # signs of outputs within rounding of 0 may flip
REFERENCE_ENCODE_BATCH = 64
ENCODE_BITS = 32


def reference_encode(net: nn.Module, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """DeepHash-pytorch's compute_result: batches of 64, autograd on, ``.data.cpu()``, sign."""
    net.eval()
    outputs = [net(as_float(images[i:i + REFERENCE_ENCODE_BATCH]).to(device)).data.cpu()
               for i in range(0, len(images), REFERENCE_ENCODE_BATCH)]
    return torch.cat(outputs).sign()


def encode_benchmark(sizes: Sizes, device: torch.device) -> dict:
    result = {}
    for backbone, size in (("convnet", 32), ("resnetap", sizes.resnet_size)):
        with seeded(0, "bench", backbone):
            net = HashNet(build_backbone(backbone, channels=3, image_size=size, mean=CIFAR10_MEAN,
                                         std=CIFAR10_STD), ENCODE_BITS).to(device)
        g = generator(0, "bench", "encode", size)
        images = torch.randint(0, 256, (sizes.encode_images, 3, size, size), generator=g,
                               dtype=torch.uint8)
        runs = {"baseline": lambda: reference_encode(net, images, device),
                "ours": lambda: encode(net, images, device=device)}
        mismatch = float((runs["baseline"]() != runs["ours"]()).float().mean())
        seconds = interleaved(runs, sizes.repeats, device)
        result[f"{backbone}-{size}"] = {
            "images": sizes.encode_images,
            "images_per_s_baseline": sizes.encode_images / statistics.median(seconds["baseline"]),
            "images_per_s_ours": sizes.encode_images / statistics.median(seconds["ours"]),
            "speedup": ratio(seconds["baseline"], seconds["ours"]), "timings": seconds,
            "check": {"code_mismatch": mismatch, "limit": CODE_MISMATCH,
                      "ok": mismatch <= CODE_MISMATCH}}
    return result
