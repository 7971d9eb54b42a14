"""The one training loop: every step's loss comes back, read from the device only now and then."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from iemlib import training
from iemlib.training import fit


def test_fit_returns_every_loss_but_reads_one_back_only_every_few_steps(monkeypatch):
    g = torch.Generator().manual_seed(0)
    images, labels = torch.rand(40, 3, 4, 4, generator=g), torch.arange(40) % 2
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 2))
    seen: list[torch.Tensor] = []

    def objective(model, x, y, generator):
        loss = F.cross_entropy(model(x), y)
        seen.append(loss.detach().clone())
        return loss

    reads = count_reads(monkeypatch)
    steps = 3 * training.LOSS_EVERY + 1
    losses = fit(model, images, labels, objective, steps=steps, batch_size=8, generator=g,
                 optimizer=torch.optim.SGD(model.parameters(), lr=0.5), progress=True)
    assert len(reads) == 3  # for the progress bar
    monkeypatch.undo()
    assert losses.tolist() == [float(loss) for loss in seen] and losses[-1] < losses[0]


def test_fit_without_a_progress_bar_reads_nothing_back(monkeypatch):
    """Gradient matching trains its network between image steps this way: on a GPU the host
    queues the next image step while the device still trains."""
    g = torch.Generator().manual_seed(1)
    images, labels = torch.rand(24, 3, 4, 4, generator=g), torch.arange(24) % 3
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.5)
    reads = count_reads(monkeypatch)
    losses = fit(model, images, labels, lambda m, x, y, _: F.cross_entropy(m(x), y), steps=30,
                 batch_size=8, generator=g, optimizer=optimizer, progress=False)
    assert reads == []
    monkeypatch.undo()
    assert losses.shape == (30,) and bool(losses.isfinite().all())


def count_reads(monkeypatch) -> list[torch.Tensor]:
    """Record each read of a tensor's value (on a GPU a wait for the device) from now on."""
    reads: list[torch.Tensor] = []
    for name in ("item", "__float__", "tolist"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name,
                            lambda t, original=original: reads.append(t) or original(t))
    return reads
