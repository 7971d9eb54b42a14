"""Deep Polarized Network (DPN, Fan et al., IJCAI 2020) as a training objective.

Every class gets a random ±1 target code t (fixed: the paper's "random assignment", which it
finds enough for state-of-the-art results), and each bit of an image's code v is pushed past
the margin m on its target's side by the *polarization loss* Σ_k max(0, m − v_k·t_k), summed
over the bits as in the paper (DeepHash-pytorch averages them instead: a constant factor 1/K)
and averaged over the batch. No other term: the paper's adaptive target updating and ternary
assignment are variants, and the official code's optional penalty on the hash layer's output
is a tuning trick for unbounded outputs. Here codes come out of tanh in (−1, 1), so with
m = 1 no bit ever leaves the hinge: each is pulled towards its target's sign until tanh
saturates.
"""

from __future__ import annotations

import torch

from .codebook import CodebookLoss


def polarization_loss(codes: torch.Tensor, targets: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean over images of Σ_k max(0, margin − codes_k · targets_k); targets ±1, same shape."""
    return torch.relu(margin - codes * targets).sum(dim=1).mean()


class DPNLoss(CodebookLoss):
    """DPN objective: polarization loss to a fixed random code a class, margin 1."""

    def __init__(self, bits: int, num_classes: int, *, mean, std, margin: float = 1.0, **kwargs):
        super().__init__(bits, num_classes, mean=mean, std=std, **kwargs)
        self.margin = margin

    def code_loss(self, codes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        self.check(codes, labels)
        return polarization_loss(codes, self.codebook[labels], self.margin)
