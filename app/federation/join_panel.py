"""Join tab: take part in a federation with this hospital's data.

The data folder is checked first (``check_site`` in a worker) and its report shown; Join
stays disabled until the folder in the field has passed. Joining runs ``run_site`` in a
worker thread with a stop event; Leave sets it, and the site finishes the message in hand.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import QCheckBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit, QListWidget, QPushButton, QVBoxLayout, QWidget

from app.federation import jobs
from app.federation.fields import PathField
from app.federation.model import JOIN
from app.federation.run_tab import ErrorDialog, RunTab
from app.workers import CallWorker, RunWorker
from engine.errors import FedSegError

GOOD, BAD = "color:#006e28", "color:#b00000"


def _axes(values: Any, unit: str = "") -> str:
    return " × ".join(f"{v:g}" for v in values) + unit if values else "-"


class JoinPanel(RunTab):
    def __init__(self, show_error: ErrorDialog, parent: QWidget | None = None) -> None:
        super().__init__(show_error, parent)
        self.checker: CallWorker | None = None
        self.report: Any = None  # engine.data.check.SiteReport of the last folder checked
        self.report_folder = ""  # that folder, as typed
        self._attempted = ""  # the folder of the last check started
        self._locked = False

        self.superlink = QLineEdit()
        self.superlink.setPlaceholderText("coordinator.example.org:9092")
        self.superlink.setToolTip("The coordinator's address, HOST:PORT, given by whoever hosts the federation")
        self.ca = PathField("ca.pem from the coordinator", folder=False, file_filter="Certificates (*.pem);;All files (*)")
        self.ca.setToolTip("The federation's CA certificate: proves the coordinator is the right one")
        self.key = PathField("this site's private key (fedseg site-key)", folder=False)
        self.key.setToolTip("This site's private key; its .pub file must be registered by the coordinator")
        self.data = PathField("site folder: dataset.json, imagesTr/, labelsTr/", folder=True)
        self.data.setToolTip("This hospital's data (MSD layout). Images and masks never leave this computer")
        self.name = QLineEdit()
        self.name.setPlaceholderText("default: the data folder's name")
        self.name.setToolTip("How the other sites and the coordinator see this site")
        self.allow_sharing = QCheckBox("Allow other sites' models to be sent to this site")
        self.allow_sharing.setChecked(False)
        self.allow_sharing.setToolTip(
            "Auto-FedAvg sends each site the other sites' models once per weight-learning phase (cached on this disk). "
            "Off: this site refuses such runs"
        )

        self.check_button = QPushButton("Check data")
        self.check_button.setToolTip("Load every case of the data folder and report what would stop training")
        self.check_button.clicked.connect(lambda: self.check())
        self.status = QLabel("Choose the data folder: it is checked before you can join.")
        self.status.setWordWrap(True)
        self.cases = QLabel("-")
        self.spacing = QLabel("-")
        self.labels = QLabel("-")
        self.problems = QListWidget()
        self.problems.setToolTip("Problems that make the folder unusable, with the file concerned")
        self.problems.setMaximumHeight(110)
        report_box = QGroupBox("Data check")
        report_form = QFormLayout(report_box)
        report_form.addRow(self.status)
        report_form.addRow("Cases", self.cases)
        report_form.addRow("Spacing", self.spacing)
        report_form.addRow("Labels", self.labels)
        report_form.addRow("Problems", self.problems)

        self.join_button = QPushButton("Join")
        self.join_button.clicked.connect(self.join)
        self.leave_button = QPushButton("Leave")
        self.leave_button.setToolTip("Leave after the message in hand; rejoining later continues as the same site")
        self.leave_button.clicked.connect(self.leave)

        form = QFormLayout()
        form.addRow("Coordinator", self.superlink)
        form.addRow("CA certificate", self.ca)
        form.addRow("Site key", self.key)
        form.addRow("Data folder", self.data)
        form.addRow("Site name", self.name)
        form.addRow("", self.allow_sharing)
        buttons = QHBoxLayout()
        for button in (self.check_button, self.join_button, self.leave_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(report_box)
        layout.addLayout(buttons)
        layout.addStretch(1)
        self.data.changed.connect(self._data_changed)
        self.data.edit.editingFinished.connect(lambda: self.check(again=False))
        self.data.chosen.connect(lambda _folder: self.check(again=False))
        self._update_buttons()

    # -- check ---------------------------------------------------------------------------
    def check(self, *, again: bool = True) -> None:
        """Check the data folder in the field in the background (``again=False``: only if
        that folder was not checked yet; checking a real site loads every case)."""
        folder = self.data.text()
        if not folder or self.checker is not None or (not again and folder == self._attempted):
            return
        from engine.data.check import check_site

        self._attempted = folder
        self._show_report(None, f"Checking {folder} …")
        self.checker = CallWorker(check_site, folder)
        self.checker.done.connect(lambda report, folder=folder: self._checked(folder, report))
        self.checker.failed.connect(lambda text: self._show_report(None, f"Cannot check: {text}", BAD))
        self.checker.ended.connect(self._check_ended)
        self._update_buttons()
        self.checker.start()

    def _checked(self, folder: str, report: Any) -> None:
        if folder != self.data.text():
            return  # the field changed meanwhile; its own check follows
        self.report, self.report_folder = report, folder
        if report.usable:
            self._show_report(report, f"✓ {report.name}: usable, {report.n_cases} cases", GOOD)
        else:
            n = len(report.problems)
            self._show_report(report, f"✗ {report.name}: not usable, {n} problem{'s' if n != 1 else ''}; fix them and check again", BAD)

    def _check_ended(self) -> None:
        self.checker = None
        if self.data.text() != self._attempted:
            self.check(again=False)  # the folder changed while the previous one was checked
        self._update_buttons()

    def _data_changed(self) -> None:
        self.report = None
        self._show_report(None, "Not checked yet: press Check data.")
        self._update_buttons()

    def _show_report(self, report: Any, status: str, style: str = "") -> None:
        self.status.setText(status)
        self.status.setStyleSheet(style)
        self.problems.clear()
        if report is None:
            for label in (self.cases, self.spacing, self.labels):
                label.setText("-")
            return
        splits = "/".join(str(report.split_sizes.get(s, 0)) for s in ("train", "val", "test"))
        self.cases.setText(f"{report.n_cases} (train/val/test {splits})")
        low, high = report.spacing_min, report.spacing_max
        self.spacing.setText(_axes(low, " mm") if low == high else f"{_axes(low)} … {_axes(high, ' mm')}")
        names = report.label_names
        self.labels.setText(", ".join(f"{v} {names.get(v, '(unnamed)')}" for v in report.label_values) or "-")
        for file_name, problem in report.problems:
            self.problems.addItem(f"{file_name}: {problem}")

    # -- join / leave -----------------------------------------------------------------------
    def join(self) -> None:
        from engine.federation.site import SiteSettings

        try:
            settings = SiteSettings.make(
                self.superlink.text().strip(),
                self.data.text(),
                self.ca.text(),
                self.key.text(),
                name=self.name.text().strip() or None,
                allow_model_sharing=self.allow_sharing.isChecked(),
            )
        except FedSegError as exc:
            self.show_error(self, "Join", str(exc))
            return
        self.worker = RunWorker(jobs.join(settings))
        self.worker.ended.connect(self._left)
        self._update_buttons()
        self.started.emit(self.worker, JOIN, {settings.name: self.report.n_cases}, False)
        self.worker.start()

    def leave(self) -> None:
        self._cancel(self.leave_button, "leaving the federation after the message in hand")

    def _left(self) -> None:
        self.worker = None
        self._update_buttons()

    def set_locked(self, locked: bool) -> None:
        self._locked = locked
        self._update_buttons()

    def _update_buttons(self) -> None:
        joined = self.worker is not None
        usable = self.report is not None and self.report.usable and self.report_folder == self.data.text()
        self.join_button.setEnabled(usable and not joined and not self._locked)
        self.join_button.setToolTip(
            "Join the federation with this data" if usable else "Enabled once the data folder has been checked and is usable"
        )
        self.leave_button.setEnabled(joined and not self.worker.token.is_set())
        self.check_button.setEnabled(self.checker is None and not joined and bool(self.data.text()))
        for widget in (self.superlink, self.ca, self.key, self.data, self.name, self.allow_sharing):
            widget.setEnabled(not joined)
