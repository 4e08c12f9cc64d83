"""The batch size the app suggests: what fits in half the free memory, measured on the model."""

from __future__ import annotations

import pytest
import torch

from dsmooth_core import IsotropicGaussian, certify
from dsmooth_core.batch_size import CPU_BATCH, MAX_BATCH, batch_that_fits, suggested_batch_size
from dsmooth_core.device import generator_for
from dsmooth_core.models import DEFAULT_MODEL, load_model


def test_batch_that_fits_uses_half_the_free_memory_and_rounds_down() -> None:
    assert batch_that_fits(free_bytes=10_000_000, bytes_per_sample=1_000) == 5_000
    assert batch_that_fits(free_bytes=10_000_000, bytes_per_sample=3_000) == 1_600  # 1,666 rounded to 100s
    assert batch_that_fits(free_bytes=100_000, bytes_per_sample=300) == 160  # 166 rounded to 10s
    assert batch_that_fits(free_bytes=1_000, bytes_per_sample=70) == 7
    assert batch_that_fits(free_bytes=100, bytes_per_sample=1_000) == 1  # never 0: certify halves on OOM anyway
    assert batch_that_fits(free_bytes=10**15, bytes_per_sample=1) == MAX_BATCH
    with pytest.raises(ValueError):
        batch_that_fits(1_000, 0)


def test_cpu_models_get_the_cpu_default() -> None:
    model = load_model(DEFAULT_MODEL, "cpu", pretrained=False)
    assert suggested_batch_size(model, (3, 32, 32)) == CPU_BATCH


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_suggested_gpu_batch_certifies_without_running_out_of_memory() -> None:
    model = load_model(DEFAULT_MODEL, "cuda", pretrained=False)
    batch = suggested_batch_size(model, (3, 32, 32))
    assert batch > CPU_BATCH  # a data-centre GPU holds far more than the CPU default
    x = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    cert = certify(model, x, IsotropicGaussian(0.25), 10, 2 * batch, 0.001, batch, generator_for(model, 0))
    assert sum(cert.counts_estimation) == 2 * batch
