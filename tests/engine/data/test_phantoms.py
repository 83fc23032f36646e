"""Synthetic phantom sites: valid MSD sites, per-site domain shift, determinism."""

from __future__ import annotations

import json
import time
from itertools import combinations
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from engine.data.check import check_site
from engine.data.phantoms import generate_phantom_case, make_demo_sites, phantom_site_params
from engine.data.site import SiteDataset
from engine.errors import SiteError


def _arrays(site: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    meta = json.loads((site / "dataset.json").read_text())
    return [
        (np.asarray(nib.load(site / t["image"]).dataobj), np.asarray(nib.load(site / t["label"]).dataobj))
        for t in meta["training"]
    ]


@pytest.fixture(scope="module")
def reports(demo_sites: list[Path]):
    return [check_site(s) for s in demo_sites]


def test_demo_sites_are_usable_msd_sites(demo_sites: list[Path], reports) -> None:
    assert [p.name for p in demo_sites] == ["site-1", "site-2", "site-3"]
    for report in reports:
        assert report.usable, report.format()
        assert report.problems == [] and report.warnings == []
    assert [r.n_cases for r in reports] == [16, 8, 6]
    for site, report in zip(demo_sites, reports):
        ds = SiteDataset.open(site)
        assert ds.split_source == "dataset.json"
        sizes = report.split_sizes
        assert sizes["val"] >= 1 and sizes["test"] >= 1 and sizes["train"] >= sizes["val"] + sizes["test"]
        assert report.label_values == [0, 1] and report.label_names == {0: "background", 1: "lesion"}
        assert all(c.lesion_voxels and c.lesion_voxels > 0 for c in report.cases)


def test_dataset_json_records_phantom_parameters(demo_sites: list[Path]) -> None:
    for i, site in enumerate(demo_sites):
        meta = json.loads((site / "dataset.json").read_text())
        assert "synthetic phantom, no patient data" in meta["description"].lower()
        assert meta["modality"] == {"0": "CT"}
        assert meta["tensorImageSize"] == "3D"
        assert meta["numTraining"] == len(meta["training"])
        p = meta["phantom"]
        assert p["seed"] == 0 and p["site_index"] == i
        assert p == phantom_site_params(0, i).to_dict()
        for key in ("hu_scale", "hu_offset", "noise_sigma_hu", "blur_sigma_mm", "slice_thickness_mm", "lesion_size_mix", "num_cases"):
            assert key in p
        assert 0.9 <= p["hu_scale"] <= 1.1 and -40 <= p["hu_offset"] <= 40 and 8 <= p["noise_sigma_hu"] <= 35
    assert [json.loads((s / "dataset.json").read_text())["phantom"]["lesion_size_mix"] for s in demo_sites] == [
        "large",
        "small",
        "mixed",
    ]


def test_files_are_int16_hu_and_uint8_labels_with_lps_like_affine(demo_sites: list[Path]) -> None:
    site = demo_sites[0]
    img = nib.load(site / "imagesTr" / "site1_001.nii.gz")
    lab = nib.load(site / "labelsTr" / "site1_001.nii.gz")
    assert img.get_data_dtype() == np.int16 and lab.get_data_dtype() == np.uint8
    assert img.shape == (64, 64, 40)
    assert np.allclose(img.affine, lab.affine)
    assert np.allclose(np.diag(img.affine)[:3], [-2.0, -2.0, 2.5])
    assert not np.allclose(img.affine[:3, 3], 0)
    hu = np.asarray(img.dataobj)
    assert hu.min() < -900 and hu.max() > 500  # air and bone
    assert nib.aff2axcodes(img.affine) == ("L", "P", "S")


def test_slice_thickness_differs_across_sites(reports) -> None:
    z = [r.spacing_max[2] for r in reports]
    assert z == pytest.approx([2.5, 3.0, 5.0])
    assert [r.shape_max[2] for r in reports] == [40, 33, 20]
    for r in reports:
        assert r.spacing_min[:2] == pytest.approx((2.0, 2.0))


def test_mean_body_hu_differs_across_sites(demo_sites: list[Path]) -> None:
    means = []
    for site in demo_sites:
        hu = np.concatenate([img.ravel() for img, _ in _arrays(site)]).astype(np.float64)
        means.append(hu[hu > -500].mean())
    for a, b in combinations(means, 2):
        assert abs(a - b) > 10.0, means
    offsets = [phantom_site_params(0, i).hu_offset for i in range(3)]
    assert np.argsort(means).tolist() == np.argsort(offsets).tolist()


def test_noise_level_follows_site_parameters(demo_sites: list[Path]) -> None:
    # Air far from the body is flat before noise: its spread is the site's noise sigma.
    for i, site in enumerate(demo_sites):
        img, _ = _arrays(site)[0]
        air = img[:4, :4, :].astype(np.float64)
        sigma = phantom_site_params(0, i).noise_sigma_hu
        assert air.std() == pytest.approx(sigma, rel=0.25)


def test_lesion_size_mix_differs(reports) -> None:
    mean_ml = [np.mean([c.lesion_ml for c in r.cases]) for r in reports]
    assert mean_ml[0] > 2.0 * mean_ml[1], mean_ml


def test_same_seed_same_arrays_other_seed_differs(demo_sites: list[Path], tmp_path: Path) -> None:
    start = time.perf_counter()
    again = make_demo_sites(tmp_path / "again", sites=3, seed=0)
    assert time.perf_counter() - start < 15.0  # a few seconds on a 2-core CPU
    for a, b in zip(demo_sites, again):
        assert json.loads((a / "dataset.json").read_text()) == json.loads((b / "dataset.json").read_text())
        for (ia, la), (ib, lb) in zip(_arrays(a), _arrays(b)):
            assert np.array_equal(ia, ib) and np.array_equal(la, lb)
    other = make_demo_sites(tmp_path / "other", sites=1, seed=1)[0]
    (i0, l0), (i1, l1) = _arrays(demo_sites[0])[0], _arrays(other)[0]
    assert i0.shape == i1.shape and not np.array_equal(i0, i1) and not np.array_equal(l0, l1)
    assert phantom_site_params(1, 0) != phantom_site_params(0, 0)


def test_generate_phantom_case_is_reproducible() -> None:
    params = phantom_site_params(3, 1)
    a = generate_phantom_case(np.random.default_rng(5), params)
    b = generate_phantom_case(np.random.default_rng(5), params)
    c = generate_phantom_case(np.random.default_rng(6), params)
    for x, y in zip(a, b):
        assert np.array_equal(x, y)
    assert not np.array_equal(a[0], c[0])
    image, label, affine = a
    assert image.dtype == np.int16 and label.dtype == np.uint8 and affine.shape == (4, 4)
    assert image.shape == label.shape == params.shape
    assert set(np.unique(label).tolist()) == {0, 1}
    # lesions are brighter than the tissue right around them
    from scipy import ndimage

    ring = ndimage.binary_dilation(label == 1, iterations=2) & (label == 0) & (image > -50)
    assert image[label == 1].mean() > image[ring].mean() + 15


def test_more_sites_cycle_parameters(tmp_path: Path) -> None:
    p = [phantom_site_params(0, i) for i in range(5)]
    assert [q.slice_thickness_mm for q in p] == [2.5, 3.0, 5.0, 2.5, 3.0]
    assert [q.num_cases for q in p] == [16, 8, 6, 6, 6]
    assert [q.lesion_size_mix for q in p] == ["large", "small", "mixed", "large", "small"]
    # a site's parameters do not depend on how many sites are made
    assert phantom_site_params(0, 1) == p[1]


def test_refuses_to_overwrite_real_data(write_site, tmp_path: Path) -> None:
    write_site("site-1", n=2)
    with pytest.raises(SiteError, match="not a synthetic phantom"):
        make_demo_sites(tmp_path, sites=1)
    with pytest.raises(ValueError, match="sites"):
        make_demo_sites(tmp_path / "x", sites=0)
