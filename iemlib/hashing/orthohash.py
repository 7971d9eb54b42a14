"""OrthoHash (Hoe et al., NeurIPS 2021) as a training objective.

One loss: cross-entropy over the classes of s·(cos(v, c_j) − m·[j = y]), with a fixed random
±1 codebook c (one code a class; the paper's Bernoulli codebook), scale s = 8 and an additive
cosine margin m = 0.2 on the true class (CosFace). Maximising the cosine to the class code
maximises the agreement of the code's signs with it, so no quantisation term is needed (the
authors' default weight for theirs is 0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .codebook import CodebookLoss


def margin_cosine_cross_entropy(codes: torch.Tensor, codebook: torch.Tensor, labels: torch.Tensor,
                                scale: float, margin: float) -> torch.Tensor:
    """Mean cross-entropy of scale·(cos(codes, codebook) − margin on the true class)."""
    cosine = F.normalize(codes, dim=-1) @ F.normalize(codebook, dim=-1).T
    logits = scale * (cosine - margin * F.one_hot(labels, len(codebook)).to(cosine.dtype))
    return F.cross_entropy(logits, labels)


class OrthoHashLoss(CodebookLoss):
    """OrthoHash objective: s 8, m 0.2, fixed random ±1 codebook."""

    def __init__(self, bits: int, num_classes: int, *, mean, std, scale: float = 8.0,
                 margin: float = 0.2, **kwargs):
        super().__init__(bits, num_classes, mean=mean, std=std, **kwargs)
        self.scale, self.margin = scale, margin

    def code_loss(self, codes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        self.check(codes, labels)
        return margin_cosine_cross_entropy(codes, self.codebook, labels, self.scale, self.margin)
