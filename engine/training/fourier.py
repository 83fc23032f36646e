"""Amplitude normalisation in the 3D Fourier domain (HarmoFL's AmpNorm, ALGORITHMS.md 3.1).

An image's spectrum F = fftn(x) over its three spatial axes splits into an amplitude |F|
and a phase; the phase carries the anatomy, the low-frequency amplitude much of the
scanner's "imaging setting". Normalisation keeps the phase and replaces the amplitude
inside a centred low-frequency window (on the fftshifted spectrum, half-width
b = floor(min(X, Y, Z) * r) voxels) by a reference amplitude shared by every site.
With r = 0 the window is the DC coefficient alone: each channel's mean becomes the
reference mean (up to sign: the DC phase is 0 or pi).

The reference is a running mean of the batch-mean amplitude, updated with momentum m
(first batch as is, then ``(1 - m) * running + m * batch``), written out in PyTorch: the
released Cython helper declares the momentum an integer, so its 0.1 never took effect.
Only the window is ever kept or shared.
"""

from __future__ import annotations

import math

import torch

SPATIAL = (-3, -2, -1)


def window(shape: tuple[int, ...], r: float) -> tuple[slice, ...]:
    """Slices of the centred low-frequency window in the fftshifted spectrum of ``shape``
    (the last three sizes are the spatial ones)."""
    sizes = shape[-3:]
    b = math.floor(min(sizes) * r)
    return tuple(slice(max(n // 2 - b, 0), min(n // 2 + b + 1, n)) for n in sizes)


def low_amplitude(images: torch.Tensor, r: float) -> torch.Tensor:
    """The amplitude window of every image of a (B, C, X, Y, Z) batch: (B, C, w, w, w)."""
    amplitude = torch.fft.fftshift(torch.fft.fftn(images.float(), dim=SPATIAL).abs(), dim=SPATIAL)
    return amplitude[(..., *window(images.shape, r))]


class RunningAmplitude:
    """The running mean of the batch-mean amplitude window (HarmoFL's ``running_amp``)."""

    def __init__(self, r: float, momentum: float) -> None:
        self.r, self.momentum = r, momentum
        self.value: torch.Tensor | None = None
        self.batches = 0

    def update(self, images: torch.Tensor) -> torch.Tensor:
        batch = low_amplitude(images, self.r).mean(dim=0)
        self.value = batch if self.value is None else (1 - self.momentum) * self.value + self.momentum * batch
        self.batches += 1
        return self.value


def normalise_amplitude(images: torch.Tensor, reference: torch.Tensor, r: float) -> torch.Tensor:
    """Each image of a (B, C, X, Y, Z) batch with its window amplitude replaced by
    ``reference`` (C, w, w, w) and its phase kept; real part of the inverse transform."""
    spectrum = torch.fft.fftn(images.float(), dim=SPATIAL)
    amplitude = torch.fft.fftshift(spectrum.abs(), dim=SPATIAL)
    where = (..., *window(images.shape, r))
    if tuple(amplitude[where].shape[1:]) != tuple(reference.shape):
        fits = list(amplitude[where].shape[1:])
        raise ValueError(f"reference amplitude of shape {list(reference.shape)} does not fit the window {fits}")
    amplitude[where] = reference.to(amplitude.device, amplitude.dtype)
    amplitude = torch.fft.ifftshift(amplitude, dim=SPATIAL)
    out = torch.fft.ifftn(torch.polar(amplitude, spectrum.angle()), dim=SPATIAL).real
    return out.to(images.dtype)


class AmplitudeNormalisation:
    """An input transform: :func:`normalise_amplitude` with a fixed reference."""

    def __init__(self, reference: torch.Tensor, r: float) -> None:
        self.reference, self.r = reference, r

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return normalise_amplitude(images, self.reference, self.r)
