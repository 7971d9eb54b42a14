"""Fixed ±1 target codes, one a class, and the base of the losses that pull codes to them.

DPN and OrthoHash both assign every class a random binary code once, before training, and
never change it; the network's codes of a (DSA-augmented) image are then pulled towards the
code of its class. ``CodebookLoss`` holds the codebook (a buffer: it moves with ``.to`` and is
saved with the state) and the augmentation; a subclass says how codes are compared.
"""

from __future__ import annotations

import torch
from torch import nn

from ..augment import DSA, STRONG


def random_codebook(num_classes: int, bits: int, generator: torch.Generator | None = None,
                    tries: int = 1000) -> torch.Tensor:
    """A ``num_classes × bits`` matrix of ±1, each entry a fair coin, no two rows equal.

    DPN's "random assignment" and OrthoHash's Bernoulli codebook, redrawn while two classes
    share a code (which would make them indistinguishable by construction). Draws from the
    global RNG unless a ``generator`` is given.
    """
    if bits < 1 or num_classes < 1:
        raise ValueError(f"bits and num_classes must be >= 1, got {bits} and {num_classes}")
    if bits < 63 and 2 ** bits < num_classes:
        raise ValueError(f"{bits} bits give only {2 ** bits} distinct codes, fewer than the "
                         f"{num_classes} classes")
    for _ in range(tries):
        codes = torch.randint(0, 2, (num_classes, bits), generator=generator).float() * 2 - 1
        if len(torch.unique(codes, dim=0)) == num_classes:
            return codes
    raise ValueError(f"no {num_classes} distinct random codes of {bits} bits in {tries} draws; "
                     "use more bits")


class CodebookLoss(nn.Module):
    """A hashing objective with a fixed random ±1 code a class, on one DSA view of the batch.

    ``forward(model, images, labels, generator)`` (the ``fit`` objective) augments the images
    with DSA (``strategy``, by default all six groups, as condensed sets are evaluated), runs the
    model and hands its codes to ``code_loss``.
    """

    codebook: torch.Tensor

    def __init__(self, bits: int, num_classes: int, *, mean, std, strategy: str = STRONG):
        super().__init__()
        self.register_buffer("codebook", random_codebook(num_classes, bits))
        self.augment = DSA(strategy, mean=mean, std=std)

    def forward(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                generator: torch.Generator) -> torch.Tensor:
        return self.code_loss(model(self.augment.augment(images, generator)), labels)

    def code_loss(self, codes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The loss of continuous codes (N × bits) for class-index labels (N)."""
        raise NotImplementedError

    def check(self, codes: torch.Tensor, labels: torch.Tensor) -> None:
        """Codes N × bits and N labels in range, or a ValueError that names what is wrong."""
        num_classes, bits = self.codebook.shape
        if codes.ndim != 2 or codes.shape[1] != bits:
            raise ValueError(f"codes must be N × {bits}, got shape {tuple(codes.shape)}")
        if labels.ndim != 1 or labels.is_floating_point() or len(labels) != len(codes):
            raise ValueError(f"labels must be {len(codes)} class indices (1-D integers), got "
                             f"{labels.dtype} of shape {tuple(labels.shape)}")
        # on the CPU only: on a GPU the test would wait for the device every training step
        # (train_hashing checks the labels once before training)
        if labels.device.type == "cpu":
            check_label_range(labels, num_classes)


def check_label_range(labels: torch.Tensor, num_classes: int) -> None:
    """ValueError unless every class index in ``labels`` lies in [0, num_classes)."""
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got "
                         f"[{int(labels.min())}, {int(labels.max())}]")
