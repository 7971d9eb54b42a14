"""Deep Hash Distillation (DHD, Jang et al. 2021) as a training objective.

Loss = proxy cross-entropy (cosine to learnable class proxies / τ) on a weak and a strong view
+ λ_sd · self-distillation (1 − cos between the strong view and the detached weak view)
+ λ_q · Gaussian-BCE quantisation (each code pulled to the nearer of ±1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..augment import DSA, STRONG, WEAK


def proxy_cross_entropy(codes: torch.Tensor, proxies: torch.Tensor, labels: torch.Tensor,
                        temperature: float) -> torch.Tensor:
    """Cross-entropy over cosine similarities to class proxies; labels are indices or multi-hot."""
    logits = F.normalize(codes, dim=-1) @ F.normalize(proxies, dim=-1).T / temperature
    target = F.one_hot(labels, len(proxies)).float() if labels.ndim == 1 else labels.float()
    target = target / target.sum(dim=1, keepdim=True).clamp_min(1)
    return -(target * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()


def gaussian_bce_quantization(codes: torch.Tensor, sigma: float) -> torch.Tensor:
    """BCE between Gaussian memberships of ±1 and the codes' signs (DHD's quantisation loss)."""
    near_plus = torch.exp(-0.5 * ((codes - 1) / sigma) ** 2).clamp(1e-6, 1 - 1e-6)
    near_minus = torch.exp(-0.5 * ((codes + 1) / sigma) ** 2).clamp(1e-6, 1 - 1e-6)
    positive = (codes.detach() >= 0).float()
    return F.binary_cross_entropy(near_plus, positive) + F.binary_cross_entropy(near_minus, 1 - positive)


class DHDLoss(nn.Module):
    """DHD objective: τ 0.2, self-distillation 0.1, quantisation 0.1 (σ 0.5)."""

    def __init__(self, bits: int, num_classes: int, *, mean, std, temperature: float = 0.2,
                 distill: float = 0.1, quantization: float = 0.1, sigma: float = 0.5):
        super().__init__()
        self.proxies = nn.Parameter(torch.randn(num_classes, bits))
        self.weak = DSA(WEAK, mean=mean, std=std)
        self.strong = DSA(STRONG, mean=mean, std=std)
        self.temperature, self.distill = temperature, distill
        self.quantization, self.sigma = quantization, sigma

    def forward(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                generator: torch.Generator) -> torch.Tensor:
        views = torch.cat([self.weak.augment(images, generator), self.strong.augment(images, generator)])
        weak, strong = model(views).chunk(2)
        ce = sum(proxy_cross_entropy(v, self.proxies, labels, self.temperature) for v in (weak, strong)) / 2
        distill = (1 - F.cosine_similarity(strong, weak.detach(), dim=-1)).mean()
        quant = sum(gaussian_bce_quantization(v, self.sigma) for v in (weak, strong)) / 2
        return ce + self.distill * distill + self.quantization * quant
