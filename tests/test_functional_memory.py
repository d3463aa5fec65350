"""The functional bound's noise statistics in bounded memory: the chunk size, the draws (the same bit for bit as
drawing the chunks by hand) and, as a slow test, the peak RSS of a fresh process building a table."""

from __future__ import annotations

import pytest
import torch

from manifoldcert import noises
from manifoldcert.bench import functional_table_memory
from manifoldcert.certifiers.functional_bound import (
    CHUNK_ELEMENTS,
    SHIFTS,
    FunctionalBoundTable,
    chunk_rows,
    worst_case_shift,
)

#: One member of each family the functional bound supports, with a k that is valid at d = 7.
NOISES = (
    noises.get("zhang-l2", sigma=0.5, k=3.0),
    noises.get("zhang-l1", sigma=0.5, k=2.0),
    noises.get("zhang-mixed", sigma=0.5, k=2.0),
    noises.get("zhang-linf", sigma=0.5, k=2.0),
    noises.Gaussian(0.5),
    noises.Laplace(0.5),
)


@pytest.mark.parametrize("dim", [1, 7, 784, 3072, CHUNK_ELEMENTS, 3 * CHUNK_ELEMENTS])
def test_chunk_work_arrays_stay_within_the_budget(dim: int) -> None:
    rows = chunk_rows(dim)
    assert rows >= 1
    if dim <= CHUNK_ELEMENTS:
        # one float64 (rows, d) work array of the sampling loop: at most 32 MiB
        assert rows * dim * 8 <= 8 * CHUNK_ELEMENTS == 32 * 2**20
        assert (rows + 1) * dim > CHUNK_ELEMENTS  # and the chunk is as large as the budget allows
    else:
        assert rows == 1


def test_every_family_declares_its_statistics_count() -> None:
    z = torch.randn(4, 7, dtype=torch.float64)
    for shift in SHIFTS.values():
        assert shift(2.0, 0.5, 7).statistics(z).shape == (4, shift.n_statistics)


@pytest.mark.parametrize("noise", NOISES, ids=lambda noise: noise.name)
def test_statistics_are_those_of_the_chunks_drawn_by_hand(noise) -> None:
    """Same seed, same chunks → the same statistics bit for bit, the last chunk partial; one float64 tensor."""
    dim, n_samples, chunk_elements = 7, 1000, 7 * 64  # 64 rows per chunk: 15 full chunks and one of 40
    table = FunctionalBoundTable(
        noise,
        dim,
        n_samples=n_samples,
        grid_size=16,
        generator=torch.Generator().manual_seed(11),
        chunk_elements=chunk_elements,
    )
    shift = worst_case_shift(noise, dim)
    generator = torch.Generator().manual_seed(11)
    reference = torch.cat(
        [
            shift.statistics(
                noise.sample(min(64, n_samples - start), (dim,), generator=generator, dtype=torch.float32)
            )
            for start in range(0, n_samples, 64)
        ]
    )
    assert table.statistics.dtype == torch.float64
    assert table.statistics.shape == (n_samples, shift.n_statistics)
    assert table.statistics.is_contiguous()
    assert torch.equal(table.statistics, reference)


@pytest.mark.slow
def test_peak_memory_of_a_table_does_not_grow_with_the_samples() -> None:
    """A fresh process drawing 4·10⁵ ``zhang-mixed`` samples at d = 784 (about 20–50 s on one core).

    The statistics built from a list of per-chunk pieces fragmented glibc's heap: 1.9 GB peak RSS here, of
    which 0.57 GB the imports. Written into one preallocated tensor, the table adds about 0.5 GB over the
    imports (the chunk's work arrays), whatever the sample count.
    """
    memory = functional_table_memory("zhang-mixed", 784, k=8.0, mc_samples=400_000, timeout=600)
    assert memory.peak_bytes - memory.baseline_bytes < 800 * 2**20
