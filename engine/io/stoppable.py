"""Reading a large volume so that the caller can stop it part way (the GUI's Cancel).

Nothing here knows of Qt: the caller passes plain callables, ``should_stop() -> bool``
(polled) and ``progress(done, total)`` (slabs read so far), and a stopped read raises
:class:`~engine.errors.Interrupted`.

* **NIfTI** (``.nii``, ``.nii.gz``) is read slab by slab along its last spatial axis through
  nibabel's array proxy, ``should_stop`` checked before every slab. That axis is the slowest
  in the file (NIfTI is Fortran-ordered), so every slab is one contiguous byte range, and
  the proxy keeps its file open (``keep_file_open=True``), so a gzip stream is inflated once,
  front to back, not again from the start for every slab. A slab holds about
  :data:`SLAB_BYTES` of stored voxels: well under a second to inflate and scale, a dozen or
  so slabs for a 512 x 512 x 300 CT.
* **MHA/NRRD and DICOM** go through ITK, which streams a region only from uncompressed
  MetaImage files and otherwise reads the whole file for any region. These reads run
  whole in a helper thread (SimpleITK releases the interpreter lock while it reads) while
  the caller's thread polls ``should_stop`` every :data:`POLL_S`; once it says stop, the
  caller is told at once and the helper's read is abandoned: it finishes in the
  background and its image is dropped ([I]: the CPU and memory of that one read are the
  price of a one-second cancel on every format ITK reads).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from engine.errors import Interrupted

#: Polled before each slab (NIfTI) or every :data:`POLL_S` (ITK); True stops the read.
StopCheck = Callable[[], bool]
#: ``progress(done, total)``: slabs read so far, of ``total`` (0: unknown, an ITK read).
Progress = Callable[[int, int], None]

#: Stored bytes per slab: 8 MiB is 16 slices of a 512 x 512 int16 CT.
SLAB_BYTES = 8 * 2**20
#: How often an ITK read's waiting thread looks at ``should_stop``.
POLL_S = 0.05

T = TypeVar("T")


def stopped(path: Path) -> Interrupted:
    return Interrupted(f"{path}: reading stopped")


def slab_bounds(shape: tuple[int, ...], itemsize: int) -> list[tuple[int, int]]:
    """(first, end) slices along axis 2 per slab, about :data:`SLAB_BYTES` each."""
    per_slice = int(np.prod(shape[:2])) * itemsize
    step = max(1, SLAB_BYTES // max(per_slice, 1))
    return [(k, min(k + step, shape[2])) for k in range(0, shape[2], step)]


def read_proxy_in_slabs(
    path: Path, proxy: Any, should_stop: StopCheck | None, progress: Progress | None
) -> np.ndarray:
    """``np.asanyarray(proxy)`` read slab by slab along axis 2 (scaled as nibabel scales a
    slice: the same values as a whole read); raises Interrupted when ``should_stop()``."""
    shape = tuple(int(n) for n in proxy.shape)
    if len(shape) < 3:  # a 2D image: one read, which the caller then refuses
        return np.asanyarray(proxy)
    bounds = slab_bounds(shape, proxy.dtype.itemsize)
    head = (slice(None), slice(None))
    out: np.ndarray | None = None
    for done, (first, end) in enumerate(bounds):
        if should_stop is not None and should_stop():
            raise stopped(path)
        slab = np.asanyarray(proxy[(*head, slice(first, end))])
        if out is None:  # scaling decides the dtype, and it is the same for every slab
            out = np.empty(shape, slab.dtype)
        out[:, :, first:end] = slab
        if progress is not None:
            progress(done + 1, len(bounds))
    assert out is not None  # shape[2] > 0: nibabel refuses a file without voxels
    return out


def run_stoppable(path: Path, read: Callable[[], T], should_stop: StopCheck | None) -> T:
    """``read()``, given up on (see the module doc) as soon as ``should_stop()`` is true."""
    if should_stop is None:
        return read()
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = read()
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread
            outcome["error"] = err

    # daemon: quitting the app does not wait for an abandoned read
    if should_stop():
        raise stopped(path)
    thread = threading.Thread(target=target, name=f"read {path.name}", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(POLL_S)
        if thread.is_alive() and should_stop():  # a read that just ended is kept
            raise stopped(path)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
