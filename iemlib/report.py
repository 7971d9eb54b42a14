"""Helpers the chapters share: where results live, labels of provenance, image grids."""

from __future__ import annotations

import json
import os
from pathlib import Path
import torch

from .experiment import Config, record_path
from .paper import table1_rows


def project_root(start: str | os.PathLike | None = None) -> Path:
    """The nearest folder at or above ``start`` (the working directory) holding ``_toc.yml``."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "_toc.yml").exists():
            return folder
    return here


def results_path(results_dir: str | os.PathLike) -> Path:
    """``results_dir`` as given when absolute, else relative to the project root."""
    path = Path(results_dir)
    return path if path.is_absolute() else project_root() / path


def provenance(record: dict) -> str:
    """"profile cpu · AMD EPYC (2 cores, cpu) · torch 2.14.1": who made a number."""
    env = record["env"]
    return (f"profile {record['config']['profile']} · {env['device_name']} "
            f"({env['cpu_count']} cores, {env['device']}) · torch {env['torch']}")


def image_grid(images: torch.Tensor, rows: int, ax, title: str | None = None) -> None:
    """Show N images (float [0, 1] or uint8, N×C×H×W) as a grid with ``rows`` rows on ``ax``."""
    images = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    n, c, h, w = images.shape
    cols = -(-n // rows)
    canvas = torch.ones(c, rows * (h + 1) - 1, cols * (w + 1) - 1)
    for i, image in enumerate(images.clamp(0, 1)):
        r, k = divmod(i, cols)
        canvas[:, r * (h + 1): r * (h + 1) + h, k * (w + 1): k * (w + 1) + w] = image
    ax.imshow(canvas.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)


def recorded(config: Config, results_dir: str | os.PathLike = "results") -> dict | None:
    """The cached record of ``config`` (resolved here), or None when it has not run."""
    path = record_path(config.resolved(), results_path(results_dir))
    return json.loads(path.read_text()) if path.exists() else None


def table1_comparison(profile: str, dataset: str = "cifar10", seed: int = 0,
                      results_dir: str | os.PathLike = "results", hash: str = "dhd") -> list[dict]:
    """Table I, ours beside the paper's: one row a (ipc, bits, method) cell of the paper.

    ``ours`` is mAP@1000 in % (DESIGN: the paper's likely metric) and ``ours_all`` mAP@all, both
    None where that configuration has not run; ``record`` is the record itself.
    """
    rows = []
    for cell in table1_rows():
        if cell["dataset"] != dataset:
            continue
        config = Config(dataset=dataset, method=cell["method"], ipc=cell["ipc"], bits=cell["bits"],
                        hash=hash, profile=profile, seed=seed)
        record = recorded(config, results_dir)
        metrics = record["metrics"] if record else {}
        rows.append({**cell, "paper": cell.pop("map"), "record": record,
                     "ours": 100 * metrics["map_at_1000"] if record else None,
                     "ours_all": 100 * metrics["map"] if record else None})
    return rows
