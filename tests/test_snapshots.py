"""Snapshots of the synthetic images by iteration: taken, stored beside the set, re-created."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from iemlib.condense import CondenseSettings, CondenseTask, condense
from iemlib.experiment import Config, condense_stored, snapshots_of, synthetic_path
from iemlib.snapshots import Snapshots, compare, due, snapshot_path
from iemlib.synthetic import SyntheticSet, to_uint8

SETTINGS = CondenseSettings(ipc=1, iterations=5, real_batch=4, checkpoint_every=2)


@pytest.fixture
def task(tiny_protocol) -> CondenseTask:
    p = tiny_protocol
    return CondenseTask(p.train, p.num_classes, p.mean, p.std, seed=0, device=torch.device("cpu"),
                        progress=False)


def test_snapshots_at_zero_every_checkpoint_and_the_end(task):
    result = condense("dm", task, SETTINGS)
    snaps = result.snapshots
    assert snaps.iterations == [0, 2, 4, 5]
    assert snaps.seconds[0] == 0.0 and snaps.seconds == sorted(snaps.seconds)
    assert all(s.dtype == torch.uint8 and s.shape == (10, 3, 32, 32) for s in snaps.images)
    assert torch.equal(snaps.images[0], to_uint8(task.initial_set(1).images))
    assert torch.equal(snaps.images[-1], to_uint8(result.synthetic.images))
    assert not torch.equal(snaps.images[0], snaps.images[-1])
    assert torch.equal(snaps.labels, result.synthetic.labels)


def test_snapshots_are_due_at_checkpoints_at_most_twenty_times_and_at_the_end():
    def taken(iterations, every):
        return [done for done in range(1, iterations + 1) if due(done, iterations, every)]

    assert taken(200, 25) == list(range(25, 201, 25))          # the cpu profile: every checkpoint
    assert taken(5, 2) == [2, 4, 5]                            # the end, off the boundaries
    assert taken(20000, 500) == list(range(1000, 20001, 1000))  # paper DM/IEM: every 2nd
    assert taken(200000, 500) == list(range(10000, 200001, 10000))  # paper IDC: every 20th
    assert len(taken(10500, 500)) == 11 and taken(10500, 500)[-1] == 10500


def test_methods_without_iterations_have_no_snapshots(task):
    assert condense("random", task, SETTINGS).snapshots is None


def test_a_multi_formation_snapshot_decodes_like_the_set(task):
    settings = replace(SETTINGS, iterations=2, factor=2, network="fixed")
    result = condense("iem", task, settings)
    final = result.snapshots.synthetic()
    assert final.factor == 2
    expected = SyntheticSet.from_state(result.synthetic.state(torch.uint8))
    torch.testing.assert_close(final.decode()[0], expected.decode()[0])


def test_add_rejects_bad_input():
    snaps = Snapshots(torch.tensor([0, 1]), factor=1, image_size=4)
    snaps.add(0, 0.0, torch.rand(2, 3, 4, 4))
    with pytest.raises(ValueError, match="needs 2 images"):
        snaps.add(1, 1.0, torch.rand(3, 3, 4, 4))
    with pytest.raises(ValueError, match="must increase"):
        snaps.add(0, 1.0, torch.rand(2, 3, 4, 4))


def test_save_load_round_trip_and_corrupt_files(tmp_path):
    snaps = Snapshots(torch.tensor([0, 1]), factor=2, image_size=4)
    snaps.add(0, 0.0, torch.rand(2, 3, 4, 4))
    snaps.add(3, 1.5, torch.rand(2, 3, 4, 4))
    snaps.check = {"identical": 1.0, "max_difference": 0}
    path = snapshot_path(tmp_path / "dm-ipc1-s0-abc.pt")
    assert path.name == "dm-ipc1-s0-abc.snapshots.pt"
    snaps.save(path)
    back = Snapshots.load(path)
    assert (back.iterations, back.seconds, back.factor, back.check) == ([0, 3], [0.0, 1.5], 2,
                                                                       snaps.check)
    assert all(torch.equal(a, b) for a, b in zip(back.images, snaps.images))
    path.write_bytes(b"not snapshots")
    with pytest.raises(ValueError, match="not readable snapshots"):
        Snapshots.load(path)


def test_compare_counts_identical_pixels_and_the_largest_difference():
    stored = torch.tensor([[0, 10], [200, 255]], dtype=torch.uint8)
    rerun = torch.tensor([[0, 13], [200, 250]], dtype=torch.uint8)
    assert compare(stored, rerun) == {"identical": 0.5, "max_difference": 5}
    assert compare(stored, stored) == {"identical": 1.0, "max_difference": 0}
    with pytest.raises(ValueError, match="shapes differ"):
        compare(stored, rerun[:1])


def test_condense_stored_writes_the_snapshots_beside_the_set(task, tmp_path):
    config = Config(method="dm", ipc=1, profile="smoke", iterations=3, checkpoint_every=2).resolved()
    path = tmp_path / "set.pt"
    condense_stored(config, task, path)
    snaps = Snapshots.load(snapshot_path(path))
    assert snaps.iterations == [0, 2, 3]
    assert torch.equal(snaps.images[-1], torch.load(path, weights_only=True)["images"])
    # a set stored before snapshots existed is still reused as it is
    snapshot_path(path).unlink()
    reused = condense_stored(config, task, path)
    assert reused.info["reused"] == "set.pt" and reused.snapshots is None


def test_snapshots_of_recreates_missing_snapshots_by_re_running(tmp_path, data_root):
    config = Config(method="iem", ipc=1, profile="smoke", iterations=4, checkpoint_every=2)
    first = snapshots_of(config, tmp_path, progress=False)  # nothing stored: condense and store
    stored = synthetic_path(config.resolved(), tmp_path)
    assert stored.exists() and first.check is None and first.iterations == [0, 2, 4]
    snapshot_path(stored).unlink()  # as for a set condensed before snapshots existed
    assert snapshots_of(config, tmp_path, recondense=False) is None
    again = snapshots_of(config, tmp_path, progress=False)
    assert again.check == {"identical": 1.0, "max_difference": 0}  # seeded: the same set
    assert again.iterations == first.iterations
    assert all(torch.equal(a, b) for a, b in zip(again.images, first.images))
    assert Snapshots.load(snapshot_path(stored)).check == again.check
    assert not snapshot_path(stored).with_suffix(".ckpt.pt").exists()
    assert snapshots_of(Config(method="random", ipc=1, profile="smoke"), tmp_path) is None
