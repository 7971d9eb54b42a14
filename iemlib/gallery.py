"""The retrieval gallery: each query beside its nearest database images, the wrong ones in red.

A retrieval record keeps, under ``metrics["gallery"]``, one query a class (indices into the
protocol's query set) and the database indices of its top-ranked codes. :func:`from_record`
turns those indices back into images and labels; :func:`canvas` frames every image (query grey,
a retrieved image of the query's class green, of another class red) and tiles them, one query a
row; :func:`show` draws it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .data import Protocol
from .report import image_canvas

# Frame colours (RGB in [0, 1]) and width in pixels.
QUERY_COLOUR = (0.55, 0.55, 0.55)
RIGHT_COLOUR = (0.10, 0.65, 0.20)
WRONG_COLOUR = (0.90, 0.05, 0.05)
BORDER = 2


@dataclass(frozen=True)
class Gallery:
    """Q queries (uint8 Q×C×H×W, labels Q) and the K images retrieved for each (Q×K×C×H×W, Q×K)."""

    queries: torch.Tensor
    query_labels: torch.Tensor
    retrieved: torch.Tensor
    retrieved_labels: torch.Tensor

    @property
    def wrong(self) -> torch.Tensor:
        """Q×K bool: True where a retrieved image belongs to another class than its query."""
        return self.retrieved_labels != self.query_labels[:, None]

    @property
    def precision(self) -> float:
        """The fraction of retrieved images that share their query's class."""
        return 1.0 - self.wrong.float().mean().item()


def from_record(record: dict, protocol: Protocol) -> Gallery:
    """The gallery a retrieval record holds, with images and labels from its ``protocol``."""
    entry = record.get("metrics", {}).get("gallery")
    if entry is None:
        raise KeyError("this record holds no gallery (records made before galleries existed)")
    queries = torch.as_tensor(entry["queries"], dtype=torch.int64)
    retrieved = torch.as_tensor(entry["retrieved"], dtype=torch.int64)
    if queries.ndim != 1 or retrieved.ndim != 2 or len(retrieved) != len(queries) or not len(queries):
        raise ValueError(f"a gallery needs Q query indices and a Q×K index matrix, got shapes "
                         f"{tuple(queries.shape)} and {tuple(retrieved.shape)}")
    _check_range(queries, len(protocol.query), "query")
    _check_range(retrieved, len(protocol.database), "database")
    return Gallery(protocol.query.images[queries], protocol.query.labels[queries],
                   protocol.database.images[retrieved], protocol.database.labels[retrieved])


def _check_range(indices: torch.Tensor, size: int, name: str) -> None:
    if indices.numel() and (indices.min() < 0 or indices.max() >= size):
        raise IndexError(f"gallery {name} indices must lie in [0, {size}) (this record was made "
                         f"with another protocol?), got {indices.min()}..{indices.max()}")


def framed(images: torch.Tensor, colours: torch.Tensor, border: int = BORDER) -> torch.Tensor:
    """N images (uint8 or float [0, 1], N×3×H×W) inside frames of the given N×3 colours."""
    images = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    n, c, h, w = images.shape
    out = colours.float().view(n, c, 1, 1).expand(n, c, h + 2 * border, w + 2 * border).clone()
    out[:, :, border:border + h, border:border + w] = images.clamp(0, 1)
    return out


def canvas(gallery: Gallery, border: int = BORDER) -> torch.Tensor:
    """One 3×H×W image: a row a query, the query then its K retrieved images, each framed."""
    q, k = gallery.wrong.shape
    colours = torch.tensor([RIGHT_COLOUR, WRONG_COLOUR])[gallery.wrong.long()]   # Q×K×3
    query_colours = torch.tensor(QUERY_COLOUR).expand(q, 1, 3)
    tiles = torch.cat([gallery.queries[:, None], gallery.retrieved], dim=1).flatten(0, 1)
    frames = torch.cat([query_colours, colours], dim=1).flatten(0, 1)
    return image_canvas(framed(tiles, frames, border), rows=q)


def show(gallery: Gallery, ax, class_names: tuple[str, ...] | None = None,
         title: str | None = None) -> None:
    """Draw :func:`canvas` on ``ax``, each row labelled with its query's class."""
    image = canvas(gallery)
    ax.imshow(image.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_xticks([])
    q = len(gallery.query_labels)
    row = image.shape[1] / q
    ax.set_yticks([row * (i + 0.5) for i in range(q)])
    labels = gallery.query_labels.tolist()
    ax.set_yticklabels([class_names[c] if class_names else str(c) for c in labels], fontsize=8)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    if title:
        ax.set_title(title, fontsize=9)
