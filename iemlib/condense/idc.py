"""IDC: efficient dataset condensation by multi-formation (Kim et al., 2022).

Gradient matching (``condense.gradient_matching``) with IDC's choices (its CIFAR-10 settings):
multi-formation, each stored image holding factor×factor tiles decoded to factor² training
images, at most 128 decoded images a class per step; the squared-L2 ("mse") distance on the conv
filters only (no biases, no classifier); the real and the synthetic batch of a class under one
siamese transform of color, then crop, then cutout (IDC applies all three to every batch, where
DSA picks one group). The network learns from real data, not from the synthetic set: between
two image steps, ``inner_loop`` SGD steps (lr 0.01, momentum 0.9, weight decay 5e-4, batches of
64) under per-image color and crop, and CutMix with probability 0.5; a fresh network every
``outer_loop`` image steps. Not done: IDC's ImageNet variant (l1 distance, networks pretrained
for 10 epochs).
"""

from __future__ import annotations

from .base import CondenseResult, CondenseSettings, CondenseTask
from .gradient_matching import Matching, NetworkTraining, gradient_matching

MATCHING = Matching(metric="mse", min_ndim=4, augment=("color", "crop", "cutout"), syn_max=128)
TRAINING = NetworkTraining(on_real=True, lr=0.01, momentum=0.9, weight_decay=5e-4,
                           batch_size=64, augment=("color", "crop"), cutmix=0.5)

# IDC's image step is 5e-3 · ipc / 10 on [0, 1] pixels with the mse distance; in the normalised
# units of optimise_images that is ÷ std², ÷ ~0.063 for CIFAR-10 (std 0.247, 0.243, 0.261).
LR_PER_IPC = 0.008


def reference_settings(ipc: int) -> dict:
    """IDC's CIFAR-10 settings: 2000 networks × 100 image steps, each network trained on 2000
    real images (32 batches of 64) between two image steps; real batch 64 a class."""
    return {"iterations": 2000 * 100, "outer_loop": 100, "inner_loop": 32, "real_batch": 64,
            "lr": round(LR_PER_IPC * ipc, 6)}


def condense(task: CondenseTask, settings: CondenseSettings) -> CondenseResult:
    """IDC with the settings' factor, loops, real batch and image step size."""
    return gradient_matching("idc", task, settings, MATCHING, TRAINING)
