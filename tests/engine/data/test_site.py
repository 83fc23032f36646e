"""SiteDataset: MSD layout, dataset.json splits, seeded splits, and layout errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.data.site import Case, SiteDataset, case_id_from_path, seeded_split
from engine.errors import ConfigError, SiteError


# --------------------------------------------------------------------------- OpenKBP
def test_openkbp_site_a_uses_dataset_json_splits(openkbp: Path) -> None:
    site = SiteDataset.open(openkbp / "site-a")
    assert site.name == "OpenKBP-HN-site-a"
    assert site.root == (openkbp / "site-a").resolve()
    assert site.split_source == "dataset.json"
    assert len(site.cases) == 36
    assert [len(site.split(s)) for s in ("train", "val", "test")] == [22, 7, 7]
    meta = json.loads((openkbp / "site-a" / "dataset.json").read_text())
    assert [c.case_id for c in site.split("val")] == meta["splits"]["val"]
    assert site.labels[1] == "PTV70" and site.labels[0] == "background"
    root = (openkbp / "site-a").resolve()
    assert site.cases[0] == Case("pt_1", root / "imagesTr" / "pt_1.nii.gz", root / "labelsTr" / "pt_1.nii.gz")


def test_seeded_split_reproduces_openkbp_split(openkbp: Path, tmp_path: Path) -> None:
    """The documented OpenKBP recipe (seed 42, natural id order) is our seeded split."""
    meta = json.loads((openkbp / "site-c" / "dataset.json").read_text())
    src = openkbp / "site-c"
    training = [
        {"image": str(src / t["image"]), "label": str(src / t["label"])} for t in meta["training"]
    ]  # absolute paths: the shared data is referenced, never copied
    root = tmp_path / "site-c-nosplits"
    root.mkdir()
    (root / "dataset.json").write_text(json.dumps({"name": "c", "training": training}))
    site = SiteDataset.open(root, split_seed=42)
    assert site.split_source == "seeded(42)"
    for s in ("train", "val", "test"):
        assert [c.case_id for c in site.split(s)] == meta["splits"][s]


# --------------------------------------------------------------------------- seeded split
def _ids(site: SiteDataset, split: str) -> list[str]:
    return [c.case_id for c in site.split(split)]


def test_seeded_split_is_deterministic_disjoint_and_complete(write_site) -> None:
    root = write_site(n=10)
    a = SiteDataset.open(root, split_seed=3)
    b = SiteDataset.open(root, split_seed=3)
    assert a.split_source == "seeded(3)"
    assert {s: _ids(a, s) for s in a.splits} == {s: _ids(b, s) for s in b.splits}
    train, val, test = (set(_ids(a, s)) for s in ("train", "val", "test"))
    assert not (train & val or train & test or val & test)
    assert train | val | test == {c.case_id for c in a.cases}
    assert (len(train), len(val), len(test)) == (6, 2, 2)
    others = [SiteDataset.open(root, split_seed=s) for s in range(4, 10)]
    assert any(_ids(o, "test") != _ids(a, "test") for o in others)


def test_seeded_split_honours_fractions() -> None:
    ids = [f"p{i}" for i in range(20)]
    s = seeded_split(ids, 1, val_fraction=0.1, test_fraction=0.3)
    assert (len(s["train"]), len(s["val"]), len(s["test"])) == (12, 2, 6)
    assert seeded_split(ids, 1, val_fraction=0.1, test_fraction=0.3) == s
    # at least one case per split from n = 3
    assert [len(v) for v in seeded_split(["a", "b", "c"], 0).values()] == [1, 1, 1]
    assert [len(v) for v in seeded_split(["a"], 0).values()] == [1, 0, 0]
    # the order of the input does not matter, only the ids
    assert seeded_split(list(reversed(ids)), 5) == seeded_split(ids, 5)


@pytest.mark.parametrize("val,test", [(-0.1, 0.2), (0.2, 1.0), (0.5, 0.5)])
def test_seeded_split_rejects_bad_fractions(val: float, test: float) -> None:
    with pytest.raises(ConfigError, match="fraction"):
        seeded_split(["a", "b", "c"], 0, val_fraction=val, test_fraction=test)


def test_unknown_split_name_suggests(write_site) -> None:
    site = SiteDataset.open(write_site(n=4))
    with pytest.raises(ValueError, match="did you mean 'val'"):
        site.split("valid")
    assert site.split_of(site.split("test")[0].case_id) == "test"


def test_case_id_from_path() -> None:
    assert case_id_from_path("./imagesTr/pt_1.nii.gz") == "pt_1"
    assert case_id_from_path("imagesTr/ab.c.nii") == "ab.c"
    assert case_id_from_path("x/scan_7.mha") == "scan_7"
    assert case_id_from_path("x/scan.v2.foo") == "scan"


def test_dataset_json_splits_are_used(write_site) -> None:
    splits = {"train": ["case_3", "case_0", "case_1"], "val": ["case_2"], "test": ["case_4"]}
    site = SiteDataset.open(write_site(n=5, splits=splits), split_seed=99)
    assert site.split_source == "dataset.json"
    assert _ids(site, "train") == ["case_3", "case_0", "case_1"]
    assert _ids(site, "test") == ["case_4"]
    assert site.name == "tiny-site"


# --------------------------------------------------------------------------- layout errors
def test_missing_folder(tmp_path: Path) -> None:
    path = tmp_path / "nope"
    with pytest.raises(SiteError, match="does not exist") as err:
        SiteDataset.open(path)
    assert str(err.value).startswith(str(path))


def test_not_a_folder(tmp_path: Path) -> None:
    path = tmp_path / "file.txt"
    path.write_text("x")
    with pytest.raises(SiteError, match="not a folder") as err:
        SiteDataset.open(path)
    assert str(path) in str(err.value)


def test_no_dataset_json(tmp_path: Path) -> None:
    (tmp_path / "imagesTr").mkdir()
    with pytest.raises(SiteError, match="no dataset.json") as err:
        SiteDataset.open(tmp_path)
    assert str(err.value).startswith(str(tmp_path))


def test_invalid_json_names_line_and_column(tmp_path: Path) -> None:
    (tmp_path / "dataset.json").write_text('{\n  "name": "x",\n  "training": [,]\n}')
    with pytest.raises(SiteError, match=r"not valid JSON \(line 3, column \d+") as err:
        SiteDataset.open(tmp_path)
    assert str(err.value).startswith(str(tmp_path / "dataset.json"))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("meta", [{"name": "x"}, {"training": []}, {"training": "imagesTr"}])
def test_no_training_entries(tmp_path: Path, meta: dict) -> None:
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(SiteError, match="no 'training' entries") as err:
        SiteDataset.open(tmp_path)
    assert str(tmp_path / "dataset.json") in str(err.value)


def test_missing_files_are_listed_with_count(write_site) -> None:
    root = write_site(n=8)
    for i in range(7):
        (root / "imagesTr" / f"case_{i}.nii.gz").unlink()
    (root / "labelsTr" / "case_7.nii.gz").unlink()
    with pytest.raises(SiteError, match="8 file") as err:
        SiteDataset.open(root)
    msg = str(err.value)
    assert msg.startswith(str(root))
    assert "imagesTr/case_0.nii.gz" in msg and "imagesTr/case_4.nii.gz" in msg
    assert "imagesTr/case_5.nii.gz" not in msg  # only the first 5 are named
    assert "3 more" in msg


def test_split_id_that_is_not_a_case(write_site) -> None:
    splits = {"train": ["case_0", "case_1"], "val": ["case_9"], "test": ["case_3"]}
    root = write_site(n=4, splits=splits)
    with pytest.raises(SiteError, match="'case_9', which is not a case") as err:
        SiteDataset.open(root)
    assert str(root / "dataset.json") in str(err.value)


def test_case_in_two_splits(write_site) -> None:
    splits = {"train": ["case_0", "case_1"], "val": ["case_1"], "test": ["case_2"]}
    root = write_site(n=3, splits=splits)
    with pytest.raises(SiteError, match="'case_1' is in two splits, 'train' and 'val'") as err:
        SiteDataset.open(root)
    assert str(root / "dataset.json") in str(err.value)


def test_empty_train_split(write_site) -> None:
    splits = {"train": [], "val": ["case_0"], "test": ["case_1"]}
    root = write_site(n=2, splits=splits)
    with pytest.raises(SiteError, match="'train' split is empty") as err:
        SiteDataset.open(root)
    assert str(root / "dataset.json") in str(err.value)


def test_unknown_split_key_in_dataset_json(write_site) -> None:
    root = write_site(n=3, splits={"train": ["case_0"], "validation": ["case_1"]})
    with pytest.raises(SiteError, match="did you mean 'val'"):
        SiteDataset.open(root)


def test_malformed_training_entry_and_duplicate_case(write_site) -> None:
    root = write_site(n=2)
    meta = json.loads((root / "dataset.json").read_text())
    meta["training"].append("./imagesTr/case_0.nii.gz")
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(SiteError, match="'training' entry 2 is not"):
        SiteDataset.open(root)
    meta["training"][2] = dict(meta["training"][0])
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(SiteError, match="'case_0' is listed twice"):
        SiteDataset.open(root)
