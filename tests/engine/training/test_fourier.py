"""Amplitude normalisation (HarmoFL, ALGORITHMS.md 3.1 and 14): phase kept, the DC or the
low-frequency window replaced by the reference, the running mean by hand."""

from __future__ import annotations

import pytest
import torch

from engine.training.fourier import (
    AmplitudeNormalisation,
    RunningAmplitude,
    low_amplitude,
    normalise_amplitude,
    window,
)

SPATIAL = (-3, -2, -1)


def images(seed: int, shape=(2, 2, 8, 8, 6)) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).float()


def unit_phase(x: torch.Tensor) -> torch.Tensor:
    f = torch.fft.fftn(x.double(), dim=SPATIAL)
    return f / f.abs()


def test_window_is_centred_with_half_width_floor_min_side_times_r():
    assert window((1, 1, 32, 32, 16), 0.0) == (slice(16, 17), slice(16, 17), slice(8, 9))
    assert window((1, 1, 32, 32, 16), 0.1) == (slice(15, 18), slice(15, 18), slice(7, 10))  # b = floor(1.6) = 1
    assert window((7, 9, 8), 0.5) == (slice(0, 7), slice(1, 8), slice(1, 8))  # b = 3: centres 3, 4, 4


def test_r_zero_keeps_the_phase_and_sets_each_channels_mean_to_the_reference():
    x = images(0)
    voxels = 8 * 8 * 6
    ref_mean = torch.tensor([0.3, 0.7])
    reference = (ref_mean * voxels).reshape(2, 1, 1, 1)  # the DC amplitude of an image of mean m is N |m|
    out = normalise_amplitude(x, reference, r=0.0)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.allclose(out.mean(dim=SPATIAL), ref_mean.expand(2, 2), atol=1e-6)
    # every frequency keeps its phase; all but the DC keep their amplitude too
    assert torch.allclose(unit_phase(out), unit_phase(x), atol=1e-4)
    f_in, f_out = torch.fft.fftn(x.double(), dim=SPATIAL), torch.fft.fftn(out.double(), dim=SPATIAL)
    f_in[..., 0, 0, 0] = f_out[..., 0, 0, 0] = 0
    assert torch.allclose(f_out, f_in, atol=1e-3)
    # so the image minus its mean is unchanged
    assert torch.allclose(out - out.mean(dim=SPATIAL, keepdim=True), x - x.mean(dim=SPATIAL, keepdim=True), atol=1e-5)


def test_r_zero_up_to_sign():
    x = images(1) - 1.0  # negative means: the DC phase is pi
    reference = torch.full((2, 1, 1, 1), 0.5 * 8 * 8 * 6)
    out = normalise_amplitude(x, reference, r=0.0)
    assert torch.allclose(out.mean(dim=SPATIAL), torch.full((2, 2), -0.5), atol=1e-6)


def test_low_frequency_window_takes_the_reference_amplitude():
    x, other = images(2), images(3)
    r = 0.25  # min side 6 -> b = 1: a 3x3x3 window
    reference = low_amplitude(other, r).mean(dim=0)
    assert reference.shape == (2, 3, 3, 3)
    out = normalise_amplitude(x, reference, r)
    assert torch.allclose(low_amplitude(out, r), reference.expand(2, -1, -1, -1, -1), rtol=1e-4, atol=1e-3)
    # outside the window the amplitude is the image's own; the phase is kept everywhere
    inside = torch.zeros(8, 8, 6, dtype=torch.bool)
    inside[window(x.shape, r)] = True
    outside = torch.fft.ifftshift(~inside)
    amp_in, amp_out = torch.fft.fftn(x, dim=SPATIAL).abs(), torch.fft.fftn(out, dim=SPATIAL).abs()
    assert torch.allclose(amp_out[..., outside], amp_in[..., outside], rtol=1e-4, atol=1e-3)
    assert torch.allclose(unit_phase(out), unit_phase(x), atol=1e-3)
    assert not torch.allclose(out, x, atol=1e-3)


def test_reference_of_another_window_size_is_refused():
    with pytest.raises(ValueError, match="does not fit"):
        normalise_amplitude(images(0), torch.ones(2, 3, 3, 3), r=0.0)


def test_running_amplitude_first_batch_as_is_then_momentum():
    voxels = 8 * 8 * 6
    batches = [torch.full((2, 1, 8, 8, 6), v) for v in (1.0, 2.0, 4.0)]
    running = RunningAmplitude(r=0.0, momentum=0.1)
    assert running.update(batches[0]).flatten().tolist() == pytest.approx([1.0 * voxels])
    assert running.update(batches[1]).flatten().tolist() == pytest.approx([(0.9 * 1 + 0.1 * 2) * voxels])
    expected = 0.9 * (0.9 * 1 + 0.1 * 2) + 0.1 * 4
    assert running.update(batches[2]).flatten().tolist() == pytest.approx([expected * voxels])
    assert running.batches == 3
    assert running.value.shape == (1, 1, 1, 1)
    # as an input transform: a constant image's mean becomes the running mean
    out = AmplitudeNormalisation(running.value, 0.0)(batches[0])
    assert torch.allclose(out, torch.full_like(out, expected), atol=1e-5)
