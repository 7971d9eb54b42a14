"""Helpers the chapters share: where results live, labels of provenance, image grids."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import torch
from tqdm.auto import tqdm

from .experiment import Config, record_path, run_cached
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


def image_canvas(images: torch.Tensor, rows: int) -> torch.Tensor:
    """N images (float [0, 1] or uint8, N×C×H×W) tiled row-major in ``rows`` rows, 1-pixel
    white gaps: one C×H×W float image in [0, 1]."""
    images = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    n, c, h, w = images.shape
    cols = -(-n // rows)
    canvas = torch.ones(c, rows * (h + 1) - 1, cols * (w + 1) - 1)
    for i, image in enumerate(images.clamp(0, 1)):
        r, k = divmod(i, cols)
        canvas[:, r * (h + 1): r * (h + 1) + h, k * (w + 1): k * (w + 1) + w] = image
    return canvas


def image_grid(images: torch.Tensor, rows: int, ax, title: str | None = None) -> None:
    """Show N images (float [0, 1] or uint8, N×C×H×W) as a grid with ``rows`` rows on ``ax``."""
    canvas = image_canvas(images, rows)
    ax.imshow(canvas.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)


def recorded(config: Config, results_dir: str | os.PathLike = "results") -> dict | None:
    """The cached record of ``config`` (resolved here), or None when it has not run."""
    path = record_path(config.resolved(), results_path(results_dir))
    return json.loads(path.read_text()) if path.exists() else None


def ensure_records(configs: Sequence[Config], results_dir: str | os.PathLike = "results",
                   device: str = "auto", desc: str = "runs") -> list[dict]:
    """The record of each config: from the cache when recorded, else run now and cached.

    A progress bar (a widget in a notebook) counts the configurations that had to run; configs
    that resolve to the same record run once.
    """
    results = results_path(results_dir)
    records = [recorded(c, results) for c in configs]
    missing = list({record_path(c.resolved(), results): c
                    for c, record in zip(configs, records) if record is None}.values())
    if missing:
        for config in tqdm(missing, desc=f"{desc}: {len(missing)} to run"):
            run_cached(config, results, device=device, progress=False)
    return [record or recorded(c, results) for c, record in zip(configs, records)]


def table1_comparison(profile: str, dataset: str = "cifar10", seed: int = 0,
                      results_dir: str | os.PathLike = "results", hash: str = "dhd",
                      stand_in: str | None = None) -> list[dict]:
    """Table I, ours beside the paper's: one row a (ipc, bits, method) cell of the paper.

    ``ours`` is mAP@1000 in % (DESIGN: the paper's likely metric) and ``ours_all`` mAP@all, both
    None where that configuration has not run or does not fit the profile (smoke: 50 images a
    class); ``record`` is the record itself. ``stand_in`` reads the records of another data set
    beside ``dataset``'s cells (e.g. an ImageFolder standing in for imagenet10).
    """
    rows = []
    for cell in table1_rows():
        if cell["dataset"] != dataset:
            continue
        config = Config(dataset=stand_in or dataset, method=cell["method"], ipc=cell["ipc"],
                        bits=cell["bits"], hash=hash, profile=profile, seed=seed)
        try:
            record = recorded(config, results_dir)
        except ValueError:  # not a valid run here: too few images a class, data set missing
            record = None
        metrics = record["metrics"] if record else {}
        rows.append({**cell, "paper": cell.pop("map"), "record": record,
                     "ours": 100 * metrics["map_at_1000"] if record else None,
                     "ours_all": 100 * metrics["map"] if record else None})
    return rows


def show_table(header: Sequence[str], rows: Sequence[Sequence[object]],
               caption: str | None = None) -> None:
    """Display a table: HTML in the book, aligned plain text for nbval and terminals."""
    from html import escape

    from IPython.display import display

    from .sweep import aligned

    cells = lambda row, tag: "".join(f"<{tag}>{escape(str(x))}</{tag}>" for x in row)  # noqa: E731
    html = ('<table class="iem-table">'
            + (f"<caption>{escape(caption)}</caption>" if caption else "")
            + f"<thead><tr>{cells(header, 'th')}</tr></thead><tbody>"
            + "".join(f"<tr>{cells(row, 'td')}</tr>" for row in rows) + "</tbody></table>")
    text = aligned([list(header), *map(list, rows)])
    display({"text/plain": f"{caption}\n{text}" if caption else text, "text/html": html}, raw=True)


def method_order(scores: dict[str, float | None]) -> list[str]:
    """The methods that have a score, best first (ties keep the order given)."""
    return sorted((m for m, s in scores.items() if s is not None), key=lambda m: -scores[m])


def concordant_pairs(ours: dict[str, float | None],
                     theirs: dict[str, float | None]) -> tuple[int, int]:
    """(pairs of methods both orderings rank alike, pairs scored by both); a tie counts as unlike."""
    shared = [m for m in ours if ours[m] is not None and theirs.get(m) is not None]
    pairs = [(a, b) for i, a in enumerate(shared) for b in shared[i + 1:]]
    alike = sum((ours[a] - ours[b]) * (theirs[a] - theirs[b]) > 0 for a, b in pairs)
    return alike, len(pairs)
