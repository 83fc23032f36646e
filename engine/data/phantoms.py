"""Deterministic synthetic CT phantom sites for demos and tests (no patient data).

Each site is a folder in MSD layout (see :mod:`engine.data.site`) with small trunk-like CT
volumes: air, an elliptic body of soft tissue with a fat rim, two lungs in the upper part,
a spine, and 1-3 ellipsoidal lesions (label 1) slightly brighter than the tissue around
them. Sites differ the way scanners and hospitals do (a *domain shift*):

* intensity calibration: ``HU' = scale * HU + offset`` (scale 0.9-1.1, offset -40..+40 HU);
* noise: Gaussian, sigma 8-35 HU;
* resolution: in-plane blur and slice thickness 2.5 / 3.0 / 5.0 mm (with a z blur that
  grows with it), so the number of slices differs per site;
* case mix: lesion sizes (large / small / mixed) and number of cases (16, 8, 6, 6, ...).

Everything is drawn from ``numpy.random.default_rng`` seeded by ``(seed, site index)`` and
``(seed, site index, case index)``, so the same seed always writes identical arrays, and a
site does not change when more sites are generated.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

from engine.data.site import seeded_split
from engine.errors import SiteError

__all__ = [
    "LESION_RADII_MM",
    "PhantomSite",
    "generate_phantom_case",
    "make_demo_sites",
    "phantom_site_params",
]

log = logging.getLogger(__name__)

#: Lesion radius ranges (mm) by size class.
LESION_RADII_MM: dict[str, tuple[float, float]] = {"large": (8.0, 14.0), "small": (3.0, 6.0)}
#: Share of large lesions in each size mix.
_LARGE_SHARE = {"large": 0.85, "small": 0.1, "mixed": 0.5}
_SIZE_MIX_CYCLE = ("large", "small", "mixed")
_THICKNESS_CYCLE = (2.5, 3.0, 5.0)
_CASE_COUNTS = (16, 8, 6)
_GOLDEN = 0.6180339887498949

IN_PLANE_VOXELS = 64
IN_PLANE_SPACING_MM = 2.0
Z_FOV_MM = 100.0
HU_AIR = -1000.0
HU_FAT = -100.0
HU_LUNG = -800.0
HU_BONE = 700.0
HU_MARROW = 250.0
HU_MIN, HU_MAX = -2048, 3071  # int16 CT range (air may fall below -1024 after calibration)


@dataclass(frozen=True)
class PhantomSite:
    """Generation parameters of one synthetic site (recorded in its ``dataset.json``).

    Attributes
    ----------
    seed, site_index:
        Where the parameters come from (``site_index`` is 0-based; folder ``site-<index+1>``).
    num_cases:
        Number of cases in the site.
    slice_thickness_mm, in_plane_spacing_mm:
        Voxel size; ``shape`` follows from a ~100 mm z field of view.
    shape:
        Array shape (x, y, z) of every case.
    hu_scale, hu_offset:
        Intensity calibration applied to the ideal HU image: ``scale * HU + offset``.
    noise_sigma_hu:
        Standard deviation of additive Gaussian noise (HU).
    blur_sigma_mm:
        Gaussian blur sigma (mm) along x, y, z; z grows with the slice thickness.
    lesion_size_mix:
        ``"large"``, ``"small"`` or ``"mixed"``.
    large_lesion_share:
        Probability that a lesion is drawn from the large radius range.
    lesion_radius_mm:
        Radius ranges of the ``"large"`` and ``"small"`` classes.
    lesion_contrast_hu:
        Range of the lesion's excess over the surrounding tissue (before calibration).
    """

    seed: int
    site_index: int
    num_cases: int
    slice_thickness_mm: float
    in_plane_spacing_mm: float
    shape: tuple[int, int, int]
    hu_scale: float
    hu_offset: float
    noise_sigma_hu: float
    blur_sigma_mm: tuple[float, float, float]
    lesion_size_mix: str
    large_lesion_share: float
    lesion_radius_mm: dict[str, tuple[float, float]]
    lesion_contrast_hu: tuple[float, float] = (40.0, 80.0)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size (x, y, z) in mm."""
        return (self.in_plane_spacing_mm, self.in_plane_spacing_mm, self.slice_thickness_mm)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of all parameters (tuples become lists)."""
        d = asdict(self)
        d["generator"] = "engine.data.phantoms"
        d["shape"] = list(self.shape)
        d["spacing_mm"] = list(self.spacing)
        d["blur_sigma_mm"] = list(self.blur_sigma_mm)
        d["lesion_radius_mm"] = {k: list(v) for k, v in self.lesion_radius_mm.items()}
        d["lesion_contrast_hu"] = list(self.lesion_contrast_hu)
        return d


def phantom_site_params(seed: int, site_index: int) -> PhantomSite:
    """Parameters of synthetic site ``site_index`` (0-based) for ``seed``.

    Offsets and noise levels follow a golden-ratio sequence (randomly shifted by ``seed``)
    so that any two of the first sites differ clearly; scale and blur are drawn from a
    generator seeded by ``(seed, site_index)``.

    Parameters
    ----------
    seed:
        Global seed of the demo data.
    site_index:
        0-based site number.

    Returns
    -------
    PhantomSite
    """
    if site_index < 0:
        raise ValueError(f"site_index: must be >= 0, got {site_index}")
    base = np.random.default_rng([int(seed), 7919])
    u_offset, u_noise = base.uniform(size=2)
    rng = np.random.default_rng([int(seed), int(site_index)])
    thickness = _THICKNESS_CYCLE[site_index % len(_THICKNESS_CYCLE)]
    nz = int(round(Z_FOV_MM / thickness))
    mix = _SIZE_MIX_CYCLE[site_index % len(_SIZE_MIX_CYCLE)]
    offset = -40.0 + 80.0 * ((u_offset + site_index * _GOLDEN) % 1.0)
    noise = 8.0 + 27.0 * ((u_noise + site_index * _GOLDEN * 2.0) % 1.0)
    in_plane_blur = float(rng.uniform(0.4, 1.2))
    # A slice's sensitivity profile is roughly as wide as the slice: FWHM ~ thickness.
    z_blur = thickness / 2.355 * float(rng.uniform(0.8, 1.2))
    return PhantomSite(
        seed=int(seed),
        site_index=int(site_index),
        num_cases=_CASE_COUNTS[site_index] if site_index < len(_CASE_COUNTS) else _CASE_COUNTS[-1],
        slice_thickness_mm=thickness,
        in_plane_spacing_mm=IN_PLANE_SPACING_MM,
        shape=(IN_PLANE_VOXELS, IN_PLANE_VOXELS, nz),
        hu_scale=round(float(rng.uniform(0.9, 1.1)), 4),
        hu_offset=round(float(offset), 2),
        noise_sigma_hu=round(float(noise), 2),
        blur_sigma_mm=(round(in_plane_blur, 3), round(in_plane_blur, 3), round(z_blur, 3)),
        lesion_size_mix=mix,
        large_lesion_share=_LARGE_SHARE[mix],
        lesion_radius_mm=dict(LESION_RADII_MM),
    )


def _affine(site: PhantomSite, rng: np.random.Generator) -> np.ndarray:
    """LPS-like voxel-to-RAS affine diag(-sx, -sy, sz) centred near the origin."""
    sx, sy, sz = site.spacing
    nx, ny, nz = site.shape
    aff = np.diag([-sx, -sy, sz, 1.0])
    shift = rng.uniform(-20.0, 20.0, size=3).round(1)
    aff[:3, 3] = [sx * (nx - 1) / 2.0, sy * (ny - 1) / 2.0, -sz * (nz - 1) / 2.0 - 150.0]
    aff[:3, 3] += shift
    return aff


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, ax: float, ay: float) -> np.ndarray:
    return ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 <= 1.0


def generate_phantom_case(
    rng: np.random.Generator, site_params: PhantomSite
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Make one synthetic CT case with its lesion label.

    Parameters
    ----------
    rng:
        Generator for everything that varies per case (body size, organ positions,
        lesions, noise).
    site_params:
        The site's :class:`PhantomSite` (shape, spacing and domain shift).

    Returns
    -------
    image_hu : np.ndarray
        ``int16`` HU image of ``site_params.shape`` (x, y, z voxel order of ``affine``),
        with the site's calibration, blur and noise applied; clipped to -2048..3071.
    label : np.ndarray
        ``uint8`` label map, 1 = lesion, 0 = background; never empty.
    affine : np.ndarray
        4x4 voxel-to-world (RAS, mm) matrix, LPS-like ``diag(-sx, -sy, sz)`` with an origin.
    """
    site = site_params
    nx, ny, nz = site.shape
    sx, sy, sz = site.spacing
    affine = _affine(site, rng)

    # Patient coordinates (mm) relative to the volume centre: X to the patient's left
    # (array axis 0 runs R->L with the LPS-like affine), Y posterior, Z superior.
    x = (np.arange(nx) - (nx - 1) / 2.0) * sx
    y = (np.arange(ny) - (ny - 1) / 2.0) * sy
    z = (np.arange(nz) - (nz - 1) / 2.0) * sz
    X, Y = np.meshgrid(x, y, indexing="ij")  # (nx, ny)

    body_a = rng.uniform(46.0, 58.0)  # left-right semi-axis
    body_b = rng.uniform(33.0, 42.0)  # antero-posterior semi-axis
    cx, cy = rng.uniform(-3.0, 3.0), rng.uniform(-3.0, 3.0)
    fat = rng.uniform(3.0, 7.0)
    tissue_hu = rng.uniform(30.0, 50.0)
    taper = rng.uniform(0.0, 0.08)  # the trunk narrows slightly towards the top
    lung_bottom = rng.uniform(-15.0, 15.0)  # lungs above this z (mm)
    lung_a, lung_b = rng.uniform(0.22, 0.3), rng.uniform(0.45, 0.6)
    spine_ax, spine_ay = rng.uniform(7.0, 10.0), rng.uniform(8.0, 11.0)

    ideal = np.full(site.shape, HU_AIR, dtype=np.float32)
    tissue = np.zeros(site.shape, dtype=bool)  # where lesions may lie
    for k, zk in enumerate(z):
        s = 1.0 - taper * (zk - z[0]) / (z[-1] - z[0] + 1e-9)
        a, b = body_a * s, body_b * s
        body = _ellipse(X, Y, cx, cy, a, b)
        inner = _ellipse(X, Y, cx, cy, a - fat, b - fat)
        sl = ideal[:, :, k]
        sl[body] = HU_FAT
        sl[inner] = tissue_hu
        soft = inner.copy()
        spine_cy = cy + 0.62 * b
        spine = _ellipse(X, Y, cx, spine_cy, spine_ax, spine_ay)
        marrow = _ellipse(X, Y, cx, spine_cy, spine_ax * 0.6, spine_ay * 0.6)
        sl[spine] = HU_BONE
        sl[marrow] = HU_MARROW
        soft &= ~spine
        if zk > lung_bottom:
            # Lung cross-section grows over the first ~20 mm above its base.
            grow = min(1.0, 0.35 + (zk - lung_bottom) / 20.0)
            for side in (-1.0, 1.0):
                lung = _ellipse(
                    X, Y, cx + side * 0.5 * a, cy - 0.05 * b, lung_a * a * grow, lung_b * b * grow
                )
                sl[lung] = HU_LUNG
                soft &= ~lung
        tissue[:, :, k] = soft

    label = np.zeros(site.shape, dtype=np.uint8)
    n_lesions = int(rng.integers(1, 4))
    zi = np.arange(nz)[None, None, :]
    xi = np.arange(nx)[:, None, None]
    yi = np.arange(ny)[None, :, None]
    for _ in range(n_lesions):
        large = rng.uniform() < site.large_lesion_share
        lo, hi = site.lesion_radius_mm["large" if large else "small"]
        r = rng.uniform(lo, hi)
        radii = np.array([r, r, r]) * rng.uniform(0.8, 1.2, size=3)
        free = tissue & (label == 0)
        if not free.any():
            break
        # Distance (mm) to the nearest non-tissue voxel; the lesion should fit inside.
        dist = ndimage.distance_transform_edt(free, sampling=site.spacing)
        fits = dist >= radii.max()
        if not fits.any():
            fits = dist >= 0.8 * dist.max()
            radii *= min(1.0, dist.max() / radii.max())
        candidates = np.flatnonzero(fits)
        ci, cj, ck = np.unravel_index(candidates[rng.integers(len(candidates))], site.shape)
        ell = (
            ((xi - ci) * sx / radii[0]) ** 2
            + ((yi - cj) * sy / radii[1]) ** 2
            + ((zi - ck) * sz / radii[2]) ** 2
        ) <= 1.0
        ell &= free
        ell[ci, cj, ck] = True  # a small lesion on thick slices still has its centre voxel
        contrast = rng.uniform(*site.lesion_contrast_hu)
        ideal[ell] += contrast
        label[ell] = 1

    # Scanner: resolution (blur), calibration, noise.
    sigma_vox = [s_mm / sp for s_mm, sp in zip(site.blur_sigma_mm, site.spacing)]
    img = ndimage.gaussian_filter(ideal, sigma=sigma_vox, mode="nearest")
    img = site.hu_scale * img + site.hu_offset
    img += rng.normal(0.0, site.noise_sigma_hu, size=img.shape).astype(np.float32)
    image_hu = np.clip(np.rint(img), HU_MIN, HU_MAX).astype(np.int16)
    return image_hu, label, affine


def _nifti(array: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    return img


def make_demo_sites(out: Path, *, sites: int = 3, seed: int = 0) -> list[Path]:
    """Write ``sites`` synthetic CT phantom sites ``out/site-1 ... out/site-K`` (MSD layout).

    Parameters
    ----------
    out:
        Parent folder (created if needed).
    sites:
        Number of sites K (>= 1). Site 1 is the large one (16 cases), then 8, 6, 6, ...
    seed:
        Global seed; the same seed writes identical arrays.

    Returns
    -------
    list[Path]
        The site folders, in order.

    Raises
    ------
    SiteError
        If a target site folder already holds a ``dataset.json`` that is not a phantom's
        (real data is never overwritten).
    ValueError
        If ``sites < 1``.
    """
    if int(sites) < 1:
        raise ValueError(f"sites: must be >= 1, got {sites}")
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file in the way, no permission, ...
        raise SiteError(f"{out}: cannot create the demo sites folder ({exc.strerror or exc})") from None
    folders: list[Path] = []
    for i in range(int(sites)):
        params = phantom_site_params(seed, i)
        folder = out / f"site-{i + 1}"
        _refuse_real_data(folder)
        (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
        (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
        training = []
        ids = []
        for j in range(params.num_cases):
            case_id = f"site{i + 1}_{j + 1:03d}"
            rng = np.random.default_rng([int(seed), i, j + 1])
            image, label, affine = generate_phantom_case(rng, params)
            nib.save(_nifti(image, affine), folder / "imagesTr" / f"{case_id}.nii.gz")
            nib.save(_nifti(label, affine), folder / "labelsTr" / f"{case_id}.nii.gz")
            training.append({"image": f"./imagesTr/{case_id}.nii.gz", "label": f"./labelsTr/{case_id}.nii.gz"})
            ids.append(case_id)
        meta = {
            "name": f"phantom-site-{i + 1}",
            "description": (
                "Synthetic phantom, no patient data: trunk-like CT with ellipsoid lesions "
                f"generated by engine.data.phantoms (seed {seed}, site {i + 1}); "
                f"{params.lesion_size_mix} lesions, {params.slice_thickness_mm} mm slices."
            ),
            "reference": "FedSeg Studio engine.data.phantoms",
            "licence": "CC0 (synthetic)",
            "release": "1.0",
            "tensorImageSize": "3D",
            "modality": {"0": "CT"},
            "labels": {"0": "background", "1": "lesion"},
            "numTraining": len(training),
            "numTest": 0,
            "training": training,
            "test": [],
            "splits": seeded_split(ids, seed + i, val_fraction=0.2, test_fraction=0.2),
            "phantom": params.to_dict(),
        }
        (folder / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        log.info(
            "wrote phantom site %s: %d cases, %s voxels at %s mm",
            folder,
            params.num_cases,
            "x".join(map(str, params.shape)),
            params.spacing,
        )
        folders.append(folder)
    return folders


def _refuse_real_data(folder: Path) -> None:
    js = folder / "dataset.json"
    if not js.is_file():
        return
    try:
        meta = json.loads(js.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        meta = None
    if not isinstance(meta, dict) or "phantom" not in meta:
        raise SiteError(f"{folder}: holds a dataset.json that is not a synthetic phantom; refusing to overwrite it")
