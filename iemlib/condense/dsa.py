"""DSA: dataset condensation with differentiable siamese augmentation (Zhao & Bilen, 2021).

Gradient matching (``condense.gradient_matching``) as in DC/DSA: the layer-wise distance
Σ_layers Σ_output channels (1 − cos) over every weight (DC's distance is 0 for biases and norm
affines, so they are left out); the real and the synthetic batch of a class under one siamese
DSA transform (all six groups); a fresh ConvNet every ``outer_loop`` image steps, trained between
two of them for ``inner_loop`` SGD steps (lr 0.01, momentum 0.5, batches of 256) on the synthetic
set under per-image DSA. No multi-formation.
"""

from __future__ import annotations

import math

from ..augment import STRONG
from .base import CondenseResult, CondenseSettings, CondenseTask
from .gradient_matching import Matching, NetworkTraining, gradient_matching

MATCHING = Matching(metric="cos", min_ndim=2, augment=(STRONG,))
TRAINING = NetworkTraining(on_real=False, lr=0.01, momentum=0.5, weight_decay=0.0,
                           batch_size=256, augment=(STRONG,))

# The reference's (outer loop, inner epochs) by images per class.
REFERENCE_LOOPS = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}


def reference_settings(ipc: int, num_classes: int = 10) -> dict:
    """The paper's settings: 1000 networks, loops by ipc, lr_img 0.1, real batch 256.

    An unlisted ipc takes the loops of the largest listed ipc below it (the reference defines no
    others). ``inner_loop`` counts SGD steps: the reference's epochs × the batches of 256 in an
    epoch of ipc·num_classes synthetic images (10 classes in the paper's data sets). lr_img 0.1
    acts on normalised images, the unit of ``optimise_images``.
    """
    outer, epochs = REFERENCE_LOOPS[max([k for k in REFERENCE_LOOPS if k <= ipc], default=1)]
    return {"iterations": 1000 * outer, "outer_loop": outer,
            "inner_loop": epochs * math.ceil(ipc * num_classes / TRAINING.batch_size),
            "real_batch": 256, "lr": 0.1}


def condense(task: CondenseTask, settings: CondenseSettings) -> CondenseResult:
    """DSA with the settings' loops, real batch and image step size."""
    if settings.factor != 1:
        raise ValueError(f"DSA has no multi-formation: factor must be 1, got {settings.factor}")
    return gradient_matching("dsa", task, settings, MATCHING, TRAINING)
