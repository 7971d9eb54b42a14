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

    reads = []  # each read of a tensor's value, which on a GPU waits for the device
    item, to_float = torch.Tensor.item, torch.Tensor.__float__
    monkeypatch.setattr(torch.Tensor, "item", lambda t: reads.append(t) or item(t))
    monkeypatch.setattr(torch.Tensor, "__float__", lambda t: reads.append(t) or to_float(t))
    steps = 3 * training.LOSS_EVERY + 1
    losses = fit(model, images, labels, objective, steps=steps, batch_size=8, generator=g,
                 optimizer=torch.optim.SGD(model.parameters(), lr=0.5), progress=True)
    assert len(reads) == 3  # for the progress bar
    monkeypatch.undo()
    assert losses == [float(loss) for loss in seen] and losses[-1] < losses[0]
    assert all(isinstance(loss, float) for loss in losses)
