"""One site's data set in the Medical Segmentation Decathlon (MSD) layout, and its splits.

A site folder holds::

    dataset.json          MSD keys: name, labels, training [{"image": ..., "label": ...}], ...
    imagesTr/<case>.nii.gz
    labelsTr/<case>.nii.gz

``dataset.json`` may carry a fixed patient-level split under ``splits``
(``{"train": [case ids], "val": [...], "test": [...]}``, as in the OpenKBP sites). Without
it, :meth:`SiteDataset.open` makes a seeded, deterministic patient-level split (see
:func:`seeded_split`).

Only the layout is checked here (files exist, JSON is valid, splits are consistent); the
voxel content is checked by :func:`engine.data.check.check_site`.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from engine.errors import ConfigError, SiteError

__all__ = ["SPLIT_NAMES", "Case", "SiteDataset", "case_id_from_path", "natural_key", "seeded_split"]

log = logging.getLogger(__name__)

#: The split names every :class:`SiteDataset` has, in this order.
SPLIT_NAMES: tuple[str, str, str] = ("train", "val", "test")

_KNOWN_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr", ".gz")
_MAX_LISTED = 5
_LAYOUT = "dataset.json, imagesTr/, labelsTr/"


@dataclass(frozen=True)
class Case:
    """One patient: an image and its label map.

    Attributes
    ----------
    case_id:
        The image file name without its suffix (``imagesTr/pt_1.nii.gz`` -> ``"pt_1"``).
    image:
        Absolute path of the image file.
    label:
        Absolute path of the label file.
    """

    case_id: str
    image: Path
    label: Path


def case_id_from_path(path: str | Path) -> str:
    """Return the case id of an image path: its file name without the image suffix.

    Parameters
    ----------
    path:
        An image path such as ``./imagesTr/pt_1.nii.gz``.

    Returns
    -------
    str
        ``"pt_1"`` for the example above; ``.nii.gz``, ``.nii``, ``.mha``, ``.nrrd`` ... are
        removed, and for any other name everything after the first dot.
    """
    name = Path(path).name
    lower = name.lower()
    for suffix in _KNOWN_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    stem = name.split(".", 1)[0]
    return stem or name


def natural_key(text: str) -> list[Any]:
    """Sort key that orders embedded numbers by value (``pt_2`` before ``pt_10``).

    Parameters
    ----------
    text:
        A case id.

    Returns
    -------
    list
        Alternating text and integer chunks, comparable between any two ids.
    """
    return [(1, int(tok), "") if tok.isdigit() else (0, 0, tok) for tok in re.split(r"(\d+)", text)]


def seeded_split(
    case_ids: Iterable[str],
    seed: int = 0,
    *,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
) -> dict[str, list[str]]:
    """Deterministic patient-level train/val/test split of case ids.

    The ids are sorted in natural order (``pt_2`` before ``pt_10``) and permuted with
    ``numpy.random.default_rng(seed).permutation``; the first ``round(test_fraction * n)``
    go to ``test``, the next ``round(val_fraction * n)`` to ``val`` and the rest to
    ``train``. With ``n >= 3`` each split gets at least one case (taken from ``train``).
    This reproduces the fixed OpenKBP splits (``seed=42``).

    Parameters
    ----------
    case_ids:
        The case ids (unique).
    seed:
        Seed of the permutation.
    val_fraction, test_fraction:
        Shares of the cases for validation and test; each in [0, 1), together below 1.

    Returns
    -------
    dict[str, list[str]]
        ``{"train": [...], "val": [...], "test": [...]}``, each in natural order.

    Raises
    ------
    ConfigError
        If a fraction is out of range.
    """
    for fname, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= float(value) < 1.0:
            raise ConfigError(f"{fname}: must be in [0, 1), got {value!r}")
    if val_fraction + test_fraction >= 1.0:
        raise ConfigError(
            f"val_fraction + test_fraction: must be below 1 so that train is not empty, "
            f"got {val_fraction} + {test_fraction}"
        )
    ids = sorted(case_ids, key=natural_key)
    n = len(ids)
    n_test = int(round(test_fraction * n))
    n_val = int(round(val_fraction * n))
    if n >= 3:
        n_test = max(n_test, 1)
        n_val = max(n_val, 1)
    # Train keeps at least one case: shrink val, then test.
    while n > 0 and n - n_val - n_test < 1:
        if n_val >= n_test and n_val > 0:
            n_val -= 1
        else:
            n_test -= 1
    order = [ids[i] for i in np.random.default_rng(seed).permutation(n)]
    test = order[:n_test]
    val = order[n_test : n_test + n_val]
    train = order[n_test + n_val :]
    return {
        "train": sorted(train, key=natural_key),
        "val": sorted(val, key=natural_key),
        "test": sorted(test, key=natural_key),
    }


@dataclass(eq=False)
class SiteDataset:
    """A site folder in MSD layout with its cases and train/val/test splits.

    Use :meth:`open` to make one; it checks the layout and raises :class:`SiteError`.

    Attributes
    ----------
    name:
        ``dataset.json`` ``"name"``, or the folder name.
    root:
        The site folder (absolute).
    cases:
        All cases listed under ``training``, in the order of ``dataset.json``.
    labels:
        Label value -> name, from ``dataset.json`` ``"labels"`` (empty if absent).
    splits:
        ``{"train": [...], "val": [...], "test": [...]}`` lists of :class:`Case`.
    split_source:
        ``"dataset.json"`` when the split was read from the file, else ``"seeded(<seed>)"``.
    metadata:
        The parsed ``dataset.json`` (read-only by convention).
    """

    name: str
    root: Path
    cases: list[Case]
    labels: dict[int, str]
    splits: dict[str, list[Case]]
    split_source: str
    metadata: dict[str, Any] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ construction
    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        split_seed: int = 0,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
    ) -> "SiteDataset":
        """Open and validate a site folder.

        Parameters
        ----------
        path:
            The site folder (holding ``dataset.json``).
        split_seed:
            Seed of the split made when ``dataset.json`` has no ``splits``.
        val_fraction, test_fraction:
            Shares of that seeded split (ignored when ``dataset.json`` has ``splits``).

        Returns
        -------
        SiteDataset

        Raises
        ------
        SiteError
            The folder is missing or not a folder; ``dataset.json`` is missing, not valid
            JSON or has no ``training`` entries; listed image/label files are missing; the
            ``splits`` name unknown cases, put a case in two splits, or leave ``train``
            empty. The message is one line starting with the offending path.
        ConfigError
            A split fraction is out of range.
        """
        root = Path(path).expanduser()
        if not root.exists():
            raise SiteError(f"{root}: site folder does not exist")
        if not root.is_dir():
            raise SiteError(f"{root}: not a folder (a site is a folder with {_LAYOUT})")
        root = root.resolve()
        json_path = root / "dataset.json"
        if not json_path.is_file():
            raise SiteError(f"{root}: no dataset.json (expected MSD layout: {_LAYOUT})")
        meta = _read_json(json_path)

        cases = _parse_training(json_path, root, meta)
        labels = _parse_labels(json_path, meta)
        name = meta.get("name")
        if not isinstance(name, str) or not name.strip():
            name = root.name

        by_id = {c.case_id: c for c in cases}
        if "splits" in meta and meta["splits"] is not None:
            id_splits = _parse_splits(json_path, meta["splits"], by_id)
            split_source = "dataset.json"
        else:
            id_splits = seeded_split(
                by_id, split_seed, val_fraction=val_fraction, test_fraction=test_fraction
            )
            split_source = f"seeded({split_seed})"
        splits = {s: [by_id[i] for i in id_splits[s]] for s in SPLIT_NAMES}
        if not splits["train"]:
            raise SiteError(f"{json_path}: the 'train' split is empty")
        site = cls(
            name=name,
            root=root,
            cases=cases,
            labels=labels,
            splits=splits,
            split_source=split_source,
            metadata=meta,
        )
        log.info(
            "opened site %s (%s): %d cases, train/val/test %d/%d/%d, split %s",
            site.name,
            root,
            len(cases),
            *(len(splits[s]) for s in SPLIT_NAMES),
            split_source,
        )
        return site

    # ------------------------------------------------------------------ access
    def split(self, name: str) -> list[Case]:
        """Return the cases of one split.

        Parameters
        ----------
        name:
            ``"train"``, ``"val"`` or ``"test"``.

        Returns
        -------
        list[Case]

        Raises
        ------
        ValueError
            For any other name, with a "did you mean" hint.
        """
        if name in self.splits:
            return list(self.splits[name])
        raise ValueError(_unknown(f"split {name!r}", name, SPLIT_NAMES))

    def case(self, case_id: str) -> Case:
        """Return the case with this id (``KeyError`` with a hint if there is none)."""
        for c in self.cases:
            if c.case_id == case_id:
                return c
        raise KeyError(_unknown(f"{self.root}: case {case_id!r}", case_id, [c.case_id for c in self.cases]))

    def split_of(self, case_id: str) -> str | None:
        """Return the split name that holds ``case_id``, or ``None`` if it is in none."""
        for s in SPLIT_NAMES:
            if any(c.case_id == case_id for c in self.splits[s]):
                return s
        return None

    def __len__(self) -> int:
        return len(self.cases)


# ---------------------------------------------------------------------- helpers
def _unknown(what: str, value: str, choices: Sequence[str]) -> str:
    low = str(value).lower()
    close = [c for c in choices if low and (low.startswith(c.lower()) or c.lower().startswith(low))][:1]
    close = close or difflib.get_close_matches(str(value), list(choices), n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    shown = ", ".join(repr(c) for c in list(choices)[:10])
    return f"{what} is unknown (choose from {shown}){hint}"


def _read_json(json_path: Path) -> dict[str, Any]:
    try:
        text = json_path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SiteError(f"{json_path}: not valid JSON (not UTF-8 text: {exc.reason})") from None
    except OSError as exc:
        raise SiteError(f"{json_path}: cannot be read ({exc.strerror or exc})") from None
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SiteError(
            f"{json_path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    if not isinstance(meta, dict):
        raise SiteError(
            f"{json_path}: not valid MSD dataset.json (top level is a {type(meta).__name__}, not an object)"
        )
    return meta


def _parse_training(json_path: Path, root: Path, meta: dict[str, Any]) -> list[Case]:
    entries = meta.get("training")
    if not isinstance(entries, list) or not entries:
        raise SiteError(
            f"{json_path}: no 'training' entries (expected a list of {{\"image\": ..., \"label\": ...}})"
        )
    cases: list[Case] = []
    missing: list[str] = []
    seen: dict[str, int] = {}
    for n, entry in enumerate(entries):
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("image"), str)
            and isinstance(entry.get("label"), str)
        ):
            raise SiteError(
                f"{json_path}: 'training' entry {n} is not {{\"image\": \"<path>\", \"label\": \"<path>\"}}: {entry!r:.80}"
            )
        image = (root / entry["image"]).resolve()
        label = (root / entry["label"]).resolve()
        case_id = case_id_from_path(entry["image"])
        if case_id in seen:
            raise SiteError(
                f"{json_path}: case id {case_id!r} is listed twice in 'training' "
                f"(entries {seen[case_id]} and {n})"
            )
        seen[case_id] = n
        for p, rel in ((image, entry["image"]), (label, entry["label"])):
            if not p.is_file():
                missing.append(_display(rel))
        cases.append(Case(case_id=case_id, image=image, label=label))
    if missing:
        shown = ", ".join(missing[:_MAX_LISTED])
        more = f" and {len(missing) - _MAX_LISTED} more" if len(missing) > _MAX_LISTED else ""
        raise SiteError(
            f"{root}: {len(missing)} file(s) listed in dataset.json are missing: {shown}{more}"
        )
    return cases


def _display(rel: str) -> str:
    return rel[2:] if rel.startswith("./") else rel


def _parse_labels(json_path: Path, meta: dict[str, Any]) -> dict[int, str]:
    raw = meta.get("labels")
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SiteError(
            f"{json_path}: 'labels' must be an object like {{\"0\": \"background\", \"1\": \"lesion\"}}"
        )
    labels: dict[int, str] = {}
    for key, value in raw.items():
        try:
            labels[int(key)] = str(value)
        except (TypeError, ValueError):
            raise SiteError(f"{json_path}: 'labels' key {key!r} is not an integer label value") from None
    return dict(sorted(labels.items()))


def _parse_splits(json_path: Path, raw: Any, by_id: dict[str, Case]) -> dict[str, list[str]]:
    if not isinstance(raw, dict):
        raise SiteError(
            f"{json_path}: 'splits' must be an object {{\"train\": [ids], \"val\": [ids], \"test\": [ids]}}"
        )
    for key in raw:
        if key not in SPLIT_NAMES:
            raise SiteError(f"{json_path}: {_unknown(f'split name {key!r} in splits', key, SPLIT_NAMES)}")
    out: dict[str, list[str]] = {}
    owner: dict[str, str] = {}
    for s in SPLIT_NAMES:
        ids = raw.get(s, [])
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise SiteError(f"{json_path}: splits['{s}'] must be a list of case ids (strings)")
        for cid in ids:
            if cid not in by_id:
                hint = difflib.get_close_matches(cid, list(by_id), n=1, cutoff=0.6)
                tail = f"; did you mean {hint[0]!r}?" if hint else ""
                raise SiteError(
                    f"{json_path}: split '{s}' lists {cid!r}, which is not a case in 'training'{tail}"
                )
            if cid in owner:
                if owner[cid] == s:
                    raise SiteError(f"{json_path}: case {cid!r} is listed twice in split '{s}'")
                raise SiteError(
                    f"{json_path}: case {cid!r} is in two splits, '{owner[cid]}' and '{s}' "
                    "(a case must be in one split only)"
                )
            owner[cid] = s
        out[s] = list(ids)
    unassigned = [cid for cid in by_id if cid not in owner]
    if unassigned:
        log.warning(
            "%s: %d case(s) are in no split and will not be used: %s",
            json_path,
            len(unassigned),
            ", ".join(unassigned[:_MAX_LISTED]),
        )
    return out
