"""Derived seeds: the same parts give the same draws, a block leaves the global generator as it
found it, and generators follow their parts."""

import torch

from iemlib.seeding import derive_seed, generator, seeded


def test_a_seeded_block_repeats_its_draws_and_restores_the_global_generator():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    with seeded(0, "net"):
        first = torch.rand(4)
    assert torch.equal(torch.get_rng_state(), before)
    with seeded(0, "net"):
        assert torch.equal(torch.rand(4), first)
    with seeded(0, "other"):
        assert not torch.equal(torch.rand(4), first)
    assert torch.equal(torch.get_rng_state(), before)


def test_generators_and_seeds_follow_their_parts():
    assert derive_seed(0, "a", 1) == derive_seed(0, "a", 1) != derive_seed(0, "a", 2)
    assert 0 <= derive_seed("x") < 2 ** 63
    assert torch.equal(torch.rand(5, generator=generator(1, "g")),
                       torch.rand(5, generator=generator(1, "g")))
