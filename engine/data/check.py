"""Validate a site folder before training and summarise what is in it.

:func:`check_site` opens a site (:class:`engine.data.site.SiteDataset`), loads every case
with the engine readers and reports, per file, everything that would stop training (a file
that does not load, a label that does not match its image, non-integer labels, a lesion
label that no training case contains), plus the numbers a user wants to see before
federating sites: spacing and shape ranges, HU percentiles of the body, label values and
lesion sizes. One bad case never stops the report; a broken layout gives a report too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.data.site import SPLIT_NAMES, SiteDataset
from engine.errors import SiteError, VolumeError
from engine.io.readers import load_label, load_volume

__all__ = ["BODY_HU_THRESHOLD", "CaseReport", "SiteReport", "check_site"]

log = logging.getLogger(__name__)

#: Voxels above this HU count as "body" for the HU percentiles.
BODY_HU_THRESHOLD = -500.0
#: Every n-th voxel is used for the HU percentiles (prime, to avoid aliasing with the grid).
_HU_STRIDE = 7
_MAX_LABEL_FOR_BINCOUNT = 1 << 16


@dataclass
class CaseReport:
    """What :func:`check_site` found in one case.

    Attributes
    ----------
    case_id, split:
        The case and the split it is in (``None`` if in none).
    image, label:
        File paths relative to the site folder.
    loaded:
        ``True`` when image and label both loaded and match.
    shape, spacing:
        Canonical (RAS) array shape and voxel size in mm; ``None`` if the image failed.
    label_values:
        Values present in the label map (empty if it failed).
    lesion_voxels, lesion_fraction, lesion_ml:
        Voxels equal to the lesion label, their share of all voxels, and their volume in
        millilitres (``None`` if the label failed).
    """

    case_id: str
    split: str | None
    image: str
    label: str
    loaded: bool = False
    shape: tuple[int, int, int] | None = None
    spacing: tuple[float, float, float] | None = None
    label_values: list[int] = field(default_factory=list)
    lesion_voxels: int | None = None
    lesion_fraction: float | None = None
    lesion_ml: float | None = None


@dataclass
class SiteReport:
    """Result of :func:`check_site`.

    Attributes
    ----------
    name, path:
        Site name (``dataset.json`` ``"name"`` or the folder name) and folder.
    lesion_label:
        The label value checked as the lesion.
    usable:
        ``False`` when the layout is broken, any case fails to load, or the lesion label is
        absent from every training case.
    problems:
        ``(file_name, problem)`` pairs that make the site unusable; file names are relative
        to the site folder.
    warnings:
        ``(file_name, warning)`` pairs that do not (an empty lesion in a case, a label value
        without a name, ...).
    n_cases, split_sizes, split_source:
        Case count, ``{"train": n, "val": n, "test": n}`` and where the split came from.
    spacing_min, spacing_max:
        Per-axis minimum / maximum voxel size (mm) over loaded cases.
    shape_min, shape_max:
        Per-axis minimum / maximum array shape over loaded cases.
    hu_p1, hu_p50, hu_p99:
        HU percentiles over body voxels (HU > -500), pooled over cases (subsampled).
    hu_min, hu_max:
        Smallest and largest HU over all loaded images.
    label_values:
        Union of label values present over loaded cases.
    label_names:
        Label value -> name from ``dataset.json``.
    cases:
        One :class:`CaseReport` per case listed in ``dataset.json``.
    """

    name: str
    path: str
    lesion_label: int = 1
    usable: bool = False
    problems: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    n_cases: int = 0
    split_sizes: dict[str, int] = field(default_factory=dict)
    split_source: str = ""
    spacing_min: tuple[float, float, float] | None = None
    spacing_max: tuple[float, float, float] | None = None
    shape_min: tuple[int, int, int] | None = None
    shape_max: tuple[int, int, int] | None = None
    hu_p1: float | None = None
    hu_p50: float | None = None
    hu_p99: float | None = None
    hu_min: float | None = None
    hu_max: float | None = None
    label_values: list[int] = field(default_factory=list)
    label_names: dict[int, str] = field(default_factory=dict)
    cases: list[CaseReport] = field(default_factory=list)

    # ------------------------------------------------------------------ output
    def to_dict(self) -> dict[str, Any]:
        """Return the report as plain JSON-able types (tuples -> lists, int keys -> str).

        Returns
        -------
        dict
            ``problems`` and ``warnings`` become lists of ``{"file": ..., "problem": ...}``
            / ``{"file": ..., "warning": ...}``.
        """
        return {
            "name": self.name,
            "path": self.path,
            "lesion_label": int(self.lesion_label),
            "usable": bool(self.usable),
            "problems": [{"file": f, "problem": p} for f, p in self.problems],
            "warnings": [{"file": f, "warning": w} for f, w in self.warnings],
            "n_cases": int(self.n_cases),
            "split_sizes": {k: int(v) for k, v in self.split_sizes.items()},
            "split_source": self.split_source,
            "spacing_min": _list(self.spacing_min),
            "spacing_max": _list(self.spacing_max),
            "shape_min": _list(self.shape_min),
            "shape_max": _list(self.shape_max),
            "hu_p1": self.hu_p1,
            "hu_p50": self.hu_p50,
            "hu_p99": self.hu_p99,
            "hu_min": self.hu_min,
            "hu_max": self.hu_max,
            "label_values": [int(v) for v in self.label_values],
            "label_names": {str(k): v for k, v in self.label_names.items()},
            "cases": [
                {
                    "case_id": c.case_id,
                    "split": c.split,
                    "image": c.image,
                    "label": c.label,
                    "loaded": c.loaded,
                    "shape": _list(c.shape),
                    "spacing": _list(c.spacing),
                    "label_values": [int(v) for v in c.label_values],
                    "lesion_voxels": c.lesion_voxels,
                    "lesion_fraction": c.lesion_fraction,
                    "lesion_ml": c.lesion_ml,
                }
                for c in self.cases
            ],
        }

    def format(self) -> str:
        """Return a readable multi-line text report (what ``fedseg check`` prints).

        Returns
        -------
        str
            Header, case and split counts, spacing / shape / HU summary, label values with
            their names, a per-case table, warnings, problems with file names, and a last
            line ``usable`` or ``NOT usable: N problems``.
        """
        lines = [f"Site {self.name}  ({self.path})"]
        if self.split_sizes:
            sizes = "/".join(str(self.split_sizes.get(s, 0)) for s in SPLIT_NAMES)
            lines.append(f"Cases: {self.n_cases}   train/val/test: {sizes}   split: {self.split_source}")
        else:
            lines.append(f"Cases: {self.n_cases}")
        if self.spacing_min is not None and self.spacing_max is not None:
            axes = ", ".join(
                f"{ax} {lo:.3f}" + ("" if abs(hi - lo) < 5e-4 else f"-{hi:.3f}")
                for ax, lo, hi in zip("xyz", self.spacing_min, self.spacing_max)
            )
            lines.append(f"Spacing (mm, RAS axes): {axes}")
        if self.shape_min is not None and self.shape_max is not None:
            lo, hi = _shape(self.shape_min), _shape(self.shape_max)
            lines.append(f"Shape (voxels): {lo}" + ("" if lo == hi else f" .. {hi}"))
        if self.hu_p50 is not None:
            lines.append(
                f"HU (body, HU > {BODY_HU_THRESHOLD:.0f}): p1 {self.hu_p1:.0f} / p50 {self.hu_p50:.0f} / "
                f"p99 {self.hu_p99:.0f}   range {self.hu_min:.0f} .. {self.hu_max:.0f}"
            )
        if self.label_values:
            named = ", ".join(f"{v} {self.label_names.get(v, '(unnamed)')}" for v in self.label_values)
            lines.append(f"Label values: {named}")
        loaded = [c for c in self.cases if c.lesion_voxels is not None]
        if loaded:
            with_lesion = sum(1 for c in loaded if c.lesion_voxels)
            lname = self.label_names.get(self.lesion_label, "unnamed")
            lines.append(
                f"Lesion label {self.lesion_label} ({lname}): present in {with_lesion}/{len(loaded)} loaded cases"
            )
        if self.cases:
            lines.append("")
            lines.extend(_table(self.cases))
        if self.warnings:
            lines.append("")
            lines.append(f"Warnings ({len(self.warnings)}):")
            lines.extend(f"  - {f}: {w}" for f, w in self.warnings)
        if self.problems:
            lines.append("")
            lines.append(f"Problems ({len(self.problems)}):")
            lines.extend(f"  - {f}: {p}" for f, p in self.problems)
        lines.append("")
        n = len(self.problems)
        lines.append("usable" if self.usable else f"NOT usable: {n} problem{'s' if n != 1 else ''}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


def _list(value: Any) -> Any:
    return None if value is None else [v for v in value]


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(int(n)) for n in shape)


def _table(cases: list[CaseReport]) -> list[str]:
    header = ["case_id", "split", "shape", "spacing (mm)", "lesion %", "lesion mL"]
    rows = []
    for c in cases:
        rows.append(
            [
                c.case_id,
                c.split or "-",
                _shape(c.shape) if c.shape else "-",
                "x".join(f"{s:.2f}" for s in c.spacing) if c.spacing else "-",
                f"{100.0 * c.lesion_fraction:.3f}" if c.lesion_fraction is not None else "-",
                _ml(c.lesion_ml),
            ]
        )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    right = {4, 5}

    def fmt(r: list[str]) -> str:
        cells = (v.rjust(w) if i in right else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths)))
        return " | ".join(cells).rstrip()

    out = [fmt(header), "-+-".join("-" * w for w in widths)]
    out.extend(fmt(r) for r in rows)
    if any(not c.loaded for c in cases):
        out.append("(- = not loaded, see problems)")
    return out


def _ml(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _label_counts(array: np.ndarray) -> dict[int, int]:
    """Voxel count of each value of an integer label map."""
    flat = array.ravel()
    if flat.size == 0:
        return {}
    if not np.issubdtype(flat.dtype, np.integer):
        flat = flat.astype(np.int64)
    lo, hi = int(flat.min()), int(flat.max())
    if lo >= 0 and hi < _MAX_LABEL_FOR_BINCOUNT:
        counts = np.bincount(flat, minlength=hi + 1)
        return {int(v): int(n) for v, n in enumerate(counts) if n}
    values, counts = np.unique(flat, return_counts=True)
    return {int(v): int(n) for v, n in zip(values, counts)}


def _split_site_error(exc: SiteError, path: Path) -> tuple[str, str]:
    msg = str(exc)
    head, sep, tail = msg.partition(": ")
    if sep and head and (head == str(path) or "/" in head or "\\" in head):
        return Path(head).name or head, tail
    return path.name or str(path), msg


def check_site(path: str | Path, *, lesion_label: int = 1, split_seed: int = 0) -> SiteReport:
    """Open a site, load every case and report its statistics and problems.

    Parameters
    ----------
    path:
        The site folder (MSD layout).
    lesion_label:
        Label value of the lesion (1 = PTV70 in the OpenKBP sites).
    split_seed:
        Seed of the split used when ``dataset.json`` has no ``splits``.

    Returns
    -------
    SiteReport
        Never raises for bad data: a broken layout, a file that does not load or a label
        that does not match its image is recorded in ``problems`` (with the file name) and
        makes ``usable`` false.
    """
    root = Path(path)
    try:
        site = SiteDataset.open(root, split_seed=split_seed)
    except SiteError as exc:
        log.warning("%s", exc)
        report = SiteReport(name=root.name or str(root), path=str(root), lesion_label=int(lesion_label))
        report.problems.append(_split_site_error(exc, root))
        report.usable = False
        return report

    report = SiteReport(
        name=site.name,
        path=str(site.root),
        lesion_label=int(lesion_label),
        n_cases=len(site.cases),
        split_sizes={s: len(site.splits[s]) for s in SPLIT_NAMES},
        split_source=site.split_source,
        label_names=dict(site.labels),
    )
    if site.labels and lesion_label not in site.labels:
        report.warnings.append(
            ("dataset.json", f"lesion label {lesion_label} is not one of its 'labels' ({sorted(site.labels)})")
        )
    split_of = {c.case_id: s for s in SPLIT_NAMES for c in site.splits[s]}
    unassigned = [c.case_id for c in site.cases if c.case_id not in split_of]
    if unassigned:
        report.warnings.append(
            ("dataset.json", f"{len(unassigned)} case(s) are in no split: {', '.join(unassigned[:5])}")
        )

    spacings: list[tuple[float, float, float]] = []
    shapes: list[tuple[int, int, int]] = []
    hu_samples: list[np.ndarray] = []
    hu_lo, hu_hi = np.inf, -np.inf
    values_union: set[int] = set()

    for case in site.cases:
        cr = CaseReport(
            case_id=case.case_id,
            split=split_of.get(case.case_id),
            image=_rel(case.image, site.root),
            label=_rel(case.label, site.root),
        )
        report.cases.append(cr)
        image = None
        try:
            image = load_volume(case.image)
        except VolumeError as exc:
            report.problems.append((cr.image, exc.problem))
        label = None
        try:
            if image is not None:
                label = load_label(case.label, image)
            else:  # still check the label file on its own
                load_volume(case.label, label=True)
        except VolumeError as exc:
            report.problems.append((cr.label, exc.problem))

        if image is not None:
            arr = image.array
            cr.shape = image.shape
            cr.spacing = tuple(round(s, 6) for s in image.spacing)  # type: ignore[assignment]
            shapes.append(cr.shape)
            spacings.append(cr.spacing)  # type: ignore[arg-type]
            amin, amax = float(arr.min()), float(arr.max())
            hu_lo, hu_hi = min(hu_lo, amin), max(hu_hi, amax)
            sample = arr.ravel()[::_HU_STRIDE]
            hu_samples.append(sample[sample > BODY_HU_THRESHOLD].astype(np.float32, copy=False))
            if amin >= 0.0:
                report.warnings.append(
                    (cr.image, f"lowest value is {amin:.0f} (no air near -1000): is this CT in HU?")
                )
        if image is not None and label is not None:
            counts = _label_counts(label.array)
            cr.loaded = True
            cr.label_values = sorted(counts)
            values_union.update(counts)
            n_lesion = counts.get(int(lesion_label), 0)
            cr.lesion_voxels = n_lesion
            cr.lesion_fraction = n_lesion / float(label.array.size)
            cr.lesion_ml = n_lesion * image.voxel_volume_ml
            if n_lesion == 0:
                report.warnings.append((cr.label, f"lesion label {lesion_label} is empty in this case"))
            if site.labels:
                unnamed = [v for v in cr.label_values if v not in site.labels]
                if unnamed:
                    report.warnings.append(
                        (cr.label, f"label value(s) {unnamed} are not named in dataset.json 'labels'")
                    )
        log.debug("checked %s: loaded=%s", case.case_id, cr.loaded)

    if spacings:
        sp = np.asarray(spacings)
        report.spacing_min = tuple(float(v) for v in sp.min(axis=0))  # type: ignore[assignment]
        report.spacing_max = tuple(float(v) for v in sp.max(axis=0))  # type: ignore[assignment]
        sh = np.asarray(shapes)
        report.shape_min = tuple(int(v) for v in sh.min(axis=0))  # type: ignore[assignment]
        report.shape_max = tuple(int(v) for v in sh.max(axis=0))  # type: ignore[assignment]
        report.hu_min, report.hu_max = hu_lo, hu_hi
    pooled = np.concatenate(hu_samples) if hu_samples else np.empty(0, np.float32)
    if pooled.size:
        p1, p50, p99 = np.percentile(pooled, [1, 50, 99])
        report.hu_p1, report.hu_p50, report.hu_p99 = float(p1), float(p50), float(p99)
    elif spacings:
        report.warnings.append(("imagesTr", f"no voxel above {BODY_HU_THRESHOLD:.0f} HU in any image"))
    report.label_values = sorted(values_union)

    train_loaded = [c for c in report.cases if c.split == "train" and c.loaded]
    if train_loaded and not any(c.lesion_voxels for c in train_loaded):
        lname = site.labels.get(int(lesion_label))
        named = f" ({lname})" if lname else ""
        report.problems.append(
            (
                "dataset.json",
                f"lesion label {lesion_label}{named} is absent from every training case "
                f"(label values present: {report.label_values})",
            )
        )
    elif not train_loaded and not report.problems:
        report.problems.append(("dataset.json", "no training case could be loaded"))

    report.usable = not report.problems
    log.info(
        "checked site %s: %d cases, %d problems, %d warnings -> %s",
        report.name,
        report.n_cases,
        len(report.problems),
        len(report.warnings),
        "usable" if report.usable else "NOT usable",
    )
    return report
