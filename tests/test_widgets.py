"""The kernel-free image browser: frames, PNG bytes, and the jslinks that switch them."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

pytest.importorskip("ipywidgets")
import ipywidgets as widgets  # noqa: E402
from PIL import Image  # noqa: E402

from iemlib.snapshots import Snapshots  # noqa: E402
from iemlib.synthetic import SyntheticSet  # noqa: E402
from iemlib.widgets import class_frames, image_browser, png, stages_of  # noqa: E402


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_png_decodes_to_the_same_pixels():
    image = torch.randint(0, 256, (3, 5, 7), dtype=torch.uint8)
    assert np.array_equal(decode(png(image)), image.permute(1, 2, 0).numpy())
    grey = torch.rand(1, 4, 4)
    assert decode(png(grey)).shape == (4, 4)
    with pytest.raises(ValueError, match="C×H×W"):
        png(torch.rand(2, 4, 4))


def test_class_frames_tile_each_class_in_balanced_rows_of_at_most_ten():
    labels = torch.tensor([0] * 12 + [1] * 3)
    images = torch.randint(0, 256, (15, 3, 4, 4), dtype=torch.uint8)
    stages = [("0", images), ("5", 255 - images)]
    frames = class_frames(stages, labels, ["cat", "dog"])
    assert list(frames) == ["cat", "dog"] and [label for label, _ in frames["cat"]] == ["0", "5"]
    cat = decode(frames["cat"][0][1])
    assert cat.shape == (2 * 5 - 1, 6 * 5 - 1, 3)  # 12 images: two rows of six, 1-pixel gaps
    assert np.array_equal(cat[:4, :4], images[0].permute(1, 2, 0).numpy())
    assert np.array_equal(cat[5:9, 25:29], images[11].permute(1, 2, 0).numpy())  # row 2, col 6
    assert decode(frames["dog"][1][1]).shape == (4, 3 * 5 - 1, 3)
    with pytest.raises(ValueError, match="no images"):
        class_frames(stages, labels, ["cat", "dog", "bird"])


def test_stages_of_snapshots_and_of_a_final_set():
    snaps = Snapshots(torch.tensor([0, 1]), factor=1, image_size=2)
    for i in range(9):
        snaps.add(i * 25, i * 10.0, torch.full((2, 3, 2, 2), i / 8))
    stages = stages_of(snaps, most=3)
    assert [label for label, _ in stages] == ["0 (0 s)", "100 (40 s)", "200 (80 s)"]
    assert torch.equal(stages[1][1], snaps.images[4])
    assert len(stages_of(snaps)) == 9 and len(stages_of(snaps, most=20)) == 9
    with pytest.raises(ValueError, match="at least 2"):
        stages_of(snaps, most=1)
    final = stages_of(SyntheticSet(torch.ones(2, 3, 2, 2), torch.tensor([0, 1])))
    assert [label for label, _ in final] == ["final set"] and final[0][1].dtype == torch.uint8


def frames_for(counts: dict[str, int], classes=("cat", "dog")) -> dict:
    """Distinct tiny PNGs: method -> class -> [(iteration label, png)]."""
    frames = {}
    for m, (method, count) in enumerate(counts.items()):
        frames[method] = {name: [(str(k), png(torch.full((3, 2, 2), 10 * m + 3 * c + k,
                                                         dtype=torch.uint8)))
                                 for k in range(count)] for c, name in enumerate(classes)}
    return frames


def linked(browser, source, target) -> bool:
    return any(link.source == source and link.target == target for link in browser.links)


def test_browser_links_the_controls_to_the_right_stacks():
    frames = frames_for({"random": 1, "iem": 3, "dm": 2})
    browser = image_browser(frames, notes={"random": "real images"})
    box = browser.box
    assert "iem-image-browser" in box._dom_classes
    _, controls, method_stack = box.children
    method_pick, class_pick = controls.children
    assert list(method_pick.options) == ["random", "iem", "dm"]
    assert method_pick.index == method_stack.selected_index == 1  # the first with iterations
    assert linked(browser, (method_pick, "index"), (method_stack, "selected_index"))
    for page, method in zip(method_stack.children, frames):
        control, class_stack = page.children[:2]
        assert linked(browser, (class_pick, "index"), (class_stack, "selected_index"))
        assert len(class_stack.children) == 2
        for name, iteration_stack in zip(frames[method], class_stack.children):
            shown = [image.value for image in iteration_stack.children]
            assert shown == [data for _, data in frames[method][name]]
            if len(shown) > 1:
                assert isinstance(control, widgets.SelectionSlider)
                assert list(control.options) == [str(k) for k in range(len(shown))]
                assert linked(browser, (control, "index"), (iteration_stack, "selected_index"))
            else:
                assert isinstance(control, widgets.Label)
    assert "real images" in method_stack.children[0].children[2].value
    assert browser._repr_mimebundle_()["text/plain"] == ("image browser: random, iem, dm × 2 "
                                                         "classes, 12 frames")
    # 1 method link + 3 class links + one iteration link per class of the two sliding methods
    assert len(browser.links) == 1 + 3 + 2 * 2


def test_browser_frames_decode_and_bad_input_is_refused():
    browser = image_browser(frames_for({"dm": 2}), scale=3)
    image = browser.box.children[2].children[0].children[1].children[0].children[0]
    assert decode(image.value).shape == (2, 2, 3) and image.layout.width == "6px"
    with pytest.raises(ValueError, match="no frames"):
        image_browser({})
    with pytest.raises(ValueError, match="at least one frame"):
        image_browser(frames_for({"dm": 0}))
    uneven = frames_for({"dm": 2, "iem": 2})
    uneven["iem"] = {"dog": uneven["iem"]["dog"], "cat": uneven["iem"]["cat"]}
    with pytest.raises(ValueError, match="classes"):
        image_browser(uneven)
    ragged = frames_for({"dm": 2})
    ragged["dm"]["dog"] = ragged["dm"]["dog"][:1]
    with pytest.raises(ValueError, match="other frames"):
        image_browser(ragged)
