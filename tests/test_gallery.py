"""The retrieval gallery: which images a record points at, which are marked wrong, the frames."""

from __future__ import annotations

import matplotlib
import pytest
import torch

from iemlib import gallery
from iemlib.data import Protocol, Split

matplotlib.use("Agg")

H = W = 4


def split(labels: list[int], offset: int) -> Split:
    """Images filled with a value that names them: offset + 10 × their index."""
    values = torch.tensor([offset + 10 * i for i in range(len(labels))], dtype=torch.uint8)
    images = values.view(-1, 1, 1, 1).expand(-1, 3, H, W).clone()
    return Split(images, torch.tensor(labels), torch.arange(len(labels)))


@pytest.fixture
def protocol() -> Protocol:
    query = split([0, 1, 2], offset=5)
    database = split([0, 0, 1, 1, 2, 2], offset=100)
    return Protocol("toy", 0, database, query, database, ("a", "b", "c"), (0.5,) * 3, (0.5,) * 3)


# queries 0 (class a) and 2 (class c); database labels are 0 0 1 1 2 2
RECORD = {"metrics": {"gallery": {"queries": [0, 2], "retrieved": [[0, 2, 1], [5, 4, 0]]}}}


def test_from_record_picks_the_indexed_images(protocol):
    g = gallery.from_record(RECORD, protocol)
    assert g.queries[:, 0, 0, 0].tolist() == [5, 25]
    assert g.query_labels.tolist() == [0, 2]
    assert g.retrieved[:, :, 0, 0, 0].tolist() == [[100, 120, 110], [150, 140, 100]]
    assert g.retrieved_labels.tolist() == [[0, 1, 0], [2, 2, 0]]


def test_wrong_marks_the_other_classes(protocol):
    g = gallery.from_record(RECORD, protocol)
    assert g.wrong.tolist() == [[False, True, False], [False, False, True]]
    assert g.precision == pytest.approx(4 / 6)


def test_canvas_frames_each_tile_by_its_verdict(protocol):
    g = gallery.from_record(RECORD, protocol)
    image = gallery.canvas(g)
    b = gallery.BORDER
    tile = H + 2 * b                       # framed tile; image_canvas leaves 1-pixel gaps
    assert image.shape == (3, 2 * tile + 1, 4 * tile + 3)
    expected = [["query", "right", "wrong", "right"], ["query", "right", "right", "wrong"]]
    colours = {"query": gallery.QUERY_COLOUR, "right": gallery.RIGHT_COLOUR,
               "wrong": gallery.WRONG_COLOUR}
    for r, row in enumerate(expected):
        for c, verdict in enumerate(row):
            top, left = r * (tile + 1), c * (tile + 1)
            corner = image[:, top, left]
            assert torch.allclose(corner, torch.tensor(colours[verdict])), (r, c)
            inside = image[:, top + b, left + b]   # the image's own first pixel
            source = g.queries[r] if c == 0 else g.retrieved[r, c - 1]
            assert torch.allclose(inside, source[:, 0, 0].float() / 255)


def test_show_labels_rows_with_the_query_classes(protocol):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    gallery.show(gallery.from_record(RECORD, protocol), ax, class_names=("a", "b", "c"), title="t")
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "c"]
    plt.close(fig)


def test_a_record_without_gallery_is_refused(protocol):
    with pytest.raises(KeyError, match="no gallery"):
        gallery.from_record({"metrics": {"map": 0.5}}, protocol)


@pytest.mark.parametrize("entry, error", [
    ({"queries": [0, 3], "retrieved": [[0], [1]]}, IndexError),      # query 3 of 3
    ({"queries": [0], "retrieved": [[6]]}, IndexError),               # database item 6 of 6
    ({"queries": [0], "retrieved": [[-1]]}, IndexError),
    ({"queries": [0, 1], "retrieved": [[0, 1]]}, ValueError),         # one row for two queries
    ({"queries": [], "retrieved": []}, ValueError),
])
def test_bad_indices_are_refused(protocol, entry, error):
    with pytest.raises(error):
        gallery.from_record({"metrics": {"gallery": entry}}, protocol)
