"""Randomness keyed by example: Philox4x32-10 against known answers, per-example streams independent of the batch."""

from __future__ import annotations

import pytest
import torch

from advlab.rng import ExampleRNG, GeneratorRNG, as_rng, philox4x32

# (counter words c0..c3, key words k0, k1) -> output words. The first is Random123's published known answer
# (kat_vectors, philox4x32_10, zero counter and key); the others were computed with randomgen 2.5.1's Philox
# (number=4, width=32), an independent implementation, for the same words.
KNOWN_ANSWERS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    (
        (57701188, 320440878, 2242054355, 608135816),
        (698298832, 2752067618),
        (0x75DFA413, 0x1C1C639C, 0xA029BEB4, 0x6B2087F5),
    ),
    ((2**32 - 1,) * 4, (2**32 - 1, 2**32 - 1), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((3, 0, 7, 0), (12345, 0), (0xC6FB32CD, 0x7E910190, 0x6BACA7CC, 0x54E98822)),
]


@pytest.mark.parametrize("counter,key,expected", KNOWN_ANSWERS)
def test_philox_matches_known_answers(counter, key, expected):
    words = philox4x32([torch.tensor([c]) for c in counter], key)
    assert [int(w) for w in words] == list(expected)


def test_philox_is_vectorised_over_counters():
    c = [
        torch.tensor([0, 3, 2**32 - 1]),
        torch.tensor([0, 0, 2**32 - 1]),
        torch.tensor([0, 7, 2**32 - 1]),
        torch.zeros(3),
    ]
    batch = torch.stack(philox4x32(c, (12345, 0)), dim=1)
    for i in range(3):
        one = torch.stack(philox4x32([w[i : i + 1] for w in c], (12345, 0)), dim=1)
        assert torch.equal(batch[i : i + 1], one)


def test_an_examples_draws_do_not_depend_on_the_batch():
    big = ExampleRNG(7, ("eps", 0), torch.arange(100))
    small = ExampleRNG(7, ("eps", 0), torch.tensor([42, 5, 99]))
    for draw in (lambda r, n: r.rand((n, 3, 2)), lambda r, n: r.randn((n, 5)), lambda r, n: r.randint(0, 9, (n, 4))):
        a, b = draw(big, 100), draw(small, 3)
        assert torch.equal(a[[42, 5, 99]], b)
    # a subset view advances the same streams: the next call for example 5 is the same either way
    view = big.rows(torch.tensor([5]))
    assert torch.equal(view.rand((1, 2)), small.rows(torch.tensor([1])).rand((1, 2)))
    assert int(big.calls[5]) == 4 and int(big.calls[6]) == 3
    # another stage or seed gives other numbers
    assert not torch.equal(
        ExampleRNG(7, ("eps", 1), torch.arange(3)).rand((3, 4)), ExampleRNG(7, ("eps", 0), torch.arange(3)).rand((3, 4))
    )
    assert not torch.equal(
        ExampleRNG(8, ("eps", 0), torch.arange(3)).rand((3, 4)), ExampleRNG(7, ("eps", 0), torch.arange(3)).rand((3, 4))
    )


def test_draws_have_the_right_distributions():
    rng = ExampleRNG(0, "stats", torch.arange(200))
    u = rng.rand((200, 500), dtype=torch.float64)
    assert float(u.min()) >= 0.0 and float(u.max()) < 1.0
    assert abs(float(u.mean()) - 0.5) < 0.005 and abs(float(u.var()) - 1 / 12) < 0.002
    z = rng.randn((200, 500))
    assert abs(float(z.mean())) < 0.01 and abs(float(z.std()) - 1.0) < 0.01
    k = rng.randint(3, 8, (200, 500))
    counts = torch.bincount(k.flatten() - 3, minlength=5).double()
    assert int(k.min()) == 3 and int(k.max()) == 7
    assert float((counts / counts.sum() - 0.2).abs().max()) < 0.01
    with pytest.raises(ValueError, match="first dimension must be the 200 rows"):
        rng.rand((3, 4))


def test_generator_rng_draws_exactly_what_the_generator_draws():
    rng = as_rng(5)
    assert isinstance(rng, GeneratorRNG) and rng.rows(torch.tensor([1])) is rng
    reference = torch.Generator().manual_seed(5)
    assert torch.equal(rng.rand((3, 4)), torch.rand((3, 4), generator=reference))
    assert torch.equal(rng.randn((2,)), torch.randn((2,), generator=reference))
    assert torch.equal(rng.randint(0, 10, (6,)), torch.randint(0, 10, (6,), generator=reference))
    keyed = ExampleRNG(0, "x", torch.arange(2))
    assert as_rng(keyed) is keyed
    with pytest.raises(ValueError, match="generator: expected an int >= 0"):
        as_rng(-1)


def test_positions_and_seek_resume_a_stream_where_it_paused():
    a = ExampleRNG(3, "s", torch.arange(10, 20))
    a.rand((10, 2))
    a.rows(torch.tensor([2, 5])).rand((2, 1))
    view = a.rows(torch.tensor([5, 0]))
    assert view.positions().tolist() == [2, 1] and view.row_ids().tolist() == [15, 10]
    want = view.rand((2, 3))
    b = ExampleRNG(3, "s", torch.tensor([15, 10]))
    b.seek(torch.tensor([2, 1]))
    assert torch.equal(b.rand((2, 3)), want)
    with pytest.raises(ValueError, match="positions: expected one per row"):
        b.seek(torch.tensor([1, 2, 3]))
