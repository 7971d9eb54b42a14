"""An image browser that works without a kernel, for the synthetic images of the book.

Every frame is a PNG rendered beforehand into an ``ipywidgets.Image`` inside a ``Stack``; the
controls drive the stacks through ``jslink``, which runs in the browser, so the static HTML of
the book switches frames with no kernel (plain ``observe`` callbacks would need one). A method
dropdown picks a page; a class dropdown and an iteration slider pick a frame within it.
"""

from __future__ import annotations

import html
import io
from dataclasses import dataclass
from typing import Mapping, Sequence

import ipywidgets as widgets
from ipywidgets.widgets.widget_link import Link
import numpy as np
import torch
from PIL import Image

from .report import image_canvas
from .snapshots import Snapshots
from .synthetic import SyntheticSet, to_uint8

# frames[method][class] = [(label, png bytes), ...] in iteration order
Frames = Mapping[str, Mapping[str, Sequence[tuple[str, bytes]]]]
CSS_CLASS = "iem-image-browser"
PER_ROW = 10


def png(image: torch.Tensor) -> bytes:
    """One C×H×W image (float in [0, 1] or uint8; C = 1 or 3) as PNG bytes."""
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"expected a 1- or 3-channel C×H×W image, got {tuple(image.shape)}")
    pixels = image if image.dtype == torch.uint8 else to_uint8(image.float())
    array = pixels.permute(1, 2, 0).squeeze(-1).cpu().numpy()
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG")
    return buffer.getvalue()


def stages_of(source: Snapshots | SyntheticSet,
              most: int | None = None) -> list[tuple[str, torch.Tensor]]:
    """(label, uint8 images) of the snapshots, or of the final set alone.

    ``most`` keeps that many snapshots, evenly spread, the first and the last always.
    """
    if isinstance(source, SyntheticSet):
        return [("final set", to_uint8(source.images))]
    if most is not None and most < 2:
        raise ValueError(f"most must be at least 2 (the first and the last), got {most}")
    keep = range(len(source))
    if most is not None and most < len(source):
        keep = torch.linspace(0, len(source) - 1, most).round().long().unique().tolist()
    return [(f"{source.iterations[k]} ({source.seconds[k]:.0f} s)", source.images[k])
            for k in keep]


def class_frames(stages: Sequence[tuple[str, torch.Tensor]], labels: torch.Tensor,
                 class_names: Sequence[str]) -> dict[str, list[tuple[str, bytes]]]:
    """For each class, one PNG a stage: the class's images in as few rows of at most ten as
    fit them, balanced (12 images: two rows of six)."""
    frames = {}
    for c, name in enumerate(class_names):
        mask = labels == c
        count = int(mask.sum())
        if count == 0:
            raise ValueError(f"class {c} ({name}) has no images")
        rows = -(-count // PER_ROW)
        frames[name] = [(label, png(image_canvas(images[mask], rows))) for label, images in stages]
    return frames


@dataclass
class ImageBrowser:
    """The browser's outer box (display it), the links that drive its stacks, and a one-line
    description (the text stand-in of the widget, instead of the repr of every PNG)."""

    box: widgets.VBox
    links: list[Link]
    text: str

    def _repr_mimebundle_(self, **kwargs):
        bundle = self.box._repr_mimebundle_(**kwargs)
        return {**bundle, "text/plain": self.text} if bundle else bundle


def image_browser(frames: Frames, notes: Mapping[str, str] | None = None,
                  scale: int = 2) -> ImageBrowser:
    """Browse ``frames`` by method (dropdown), class (dropdown) and iteration (slider).

    Every method needs the same classes, and all classes of a method the same frame labels. A
    method with one frame shows its label instead of a slider; ``notes[method]`` is shown under
    its frames. The first method with more than one frame is selected at first. The outer box
    has the CSS class ``iem-image-browser``; images are drawn ``scale`` times their size.
    """
    methods = list(frames)
    if not methods:
        raise ValueError("no frames to browse")
    classes = list(frames[methods[0]])
    for method in methods:
        if list(frames[method]) != classes:
            raise ValueError(f"method {method!r} has classes {list(frames[method])}, "
                             f"expected {classes}")
    method_pick = widgets.Dropdown(options=methods, description="method")
    class_pick = widgets.Dropdown(options=classes, description="class")
    links: list[Link] = []
    pages = []
    for method in methods:
        page, page_links = method_page(frames[method], class_pick, (notes or {}).get(method), scale)
        pages.append(page)
        links += page_links
    first = next((i for i, m in enumerate(methods) if len(frames[m][classes[0]]) > 1), 0)
    method_pick.index = first
    method_stack = widgets.Stack(pages, selected_index=first)
    links.append(widgets.jslink((method_pick, "index"), (method_stack, "selected_index")))
    style = widgets.HTML(f"<style>.{CSS_CLASS} img {{image-rendering: pixelated;}}</style>")
    box = widgets.VBox([style, widgets.HBox([method_pick, class_pick]), method_stack])
    box.add_class(CSS_CLASS)
    count = sum(len(sequence) for by_class in frames.values() for sequence in by_class.values())
    text = f"image browser: {', '.join(methods)} × {len(classes)} classes, {count} frames"
    return ImageBrowser(box, links, text)


def method_page(frames: Mapping[str, Sequence[tuple[str, bytes]]], class_pick: widgets.Dropdown,
                note: str | None, scale: int) -> tuple[widgets.VBox, list[Link]]:
    """One method: an iteration slider (if it has several frames) over a stack of classes."""
    labels = [label for label, _ in next(iter(frames.values()))]
    if not labels:
        raise ValueError("a method needs at least one frame a class")
    by_class = []
    for name, sequence in frames.items():
        if [label for label, _ in sequence] != labels:
            raise ValueError(f"class {name!r} has other frames than the first class")
        by_class.append(widgets.Stack([image_widget(data, scale) for _, data in sequence],
                                      selected_index=0))
    class_stack = widgets.Stack(by_class, selected_index=0)
    links = [widgets.jslink((class_pick, "index"), (class_stack, "selected_index"))]
    if len(labels) > 1:
        control = widgets.SelectionSlider(options=labels, description="iteration",
                                          continuous_update=True,
                                          style={"description_width": "initial"},
                                          layout=widgets.Layout(width="520px"))
        links += [widgets.jslink((control, "index"), (stack, "selected_index"))
                  for stack in by_class]
    else:
        control = widgets.Label(f"iteration: {labels[0]} (no snapshots)")
    children = [control, class_stack]
    if note:
        children.append(widgets.HTML(f"<small>{html.escape(note)}</small>"))
    return widgets.VBox(children), links


def image_widget(data: bytes, scale: int) -> widgets.Image:
    """A PNG shown ``scale`` times its width."""
    width = Image.open(io.BytesIO(data)).width
    layout = widgets.Layout(width=f"{width * scale}px")
    return widgets.Image(value=data, format="png", layout=layout)
