"""Host tab: settings generated from the strategy, validated by the engine, site keys."""

from __future__ import annotations

import dataclasses

import pytest
from PySide6.QtWidgets import QFormLayout

from app.federation.host_panel import HostPanel
from engine.federation.pki import make_site_key
from engine.fl import STRATEGIES


@pytest.fixture
def panel(qtbot, errors) -> HostPanel:
    panel = HostPanel(errors)
    qtbot.addWidget(panel)
    return panel


def items(combo) -> list[str]:
    return [combo.itemText(i) for i in range(combo.count())]


def test_auto_fedavg_settings_show_with_their_defaults(qtbot, panel) -> None:
    assert panel.algorithm.currentText() == "auto-fedavg"
    editors = panel.params.editors
    assert items(editors["weights"]) == ["dirichlet", "softmax"] and editors["weights"].currentText() == "dirichlet"
    assert items(editors["aggregation"]) == ["network", "layer"] and editors["aggregation"].currentText() == "network"
    assert (editors["t0"].value(), editors["beta_steps"].value(), editors["beta_lr"].text()) == (1, 10, "0.05")
    assert "default 1" in editors["t0"].toolTip()
    assert panel.error.isHidden() and panel.start_button.isEnabled()


def test_the_form_builds_the_run_config(qtbot, panel, tmp_path) -> None:
    editors = panel.params.editors
    editors["weights"].setCurrentText("softmax")
    editors["aggregation"].setCurrentText("layer")
    editors["t0"].setValue(2)
    editors["beta_steps"].setValue(3)
    editors["beta_lr"].setText("0.1")
    panel.rounds.setValue(7)
    panel.local_steps.setValue(4)
    panel.sites.setValue(4)
    panel.min_sites.setValue(3)
    panel.reply_timeout.setText("120")
    panel.certificates.setText(str(tmp_path / "pki"))
    config = panel.config()
    params = dict(config.strategy.params)
    assert (config.strategy.name, params["weights"], params["aggregation"]) == ("auto-fedavg", "softmax", "layer")
    assert (params["t0"], params["beta_steps"], params["beta_lr"]) == (2, 3, 0.1)
    assert (config.rounds, config.train.local_steps) == (7, 4)
    fed = config.federation
    assert (fed.sites, fed.min_sites, fed.reply_timeout_s, fed.certificates) == (4, 3, 120.0, str(tmp_path / "pki"))


def test_a_bad_value_shows_the_engine_message_and_blocks_start(qtbot, panel) -> None:
    panel.params.editors["t0"].setValue(-1)
    assert panel.error.text() == "strategy.params.t0: must be >= 1, got -1"
    assert not panel.error.isHidden()
    assert not panel.start_button.isEnabled() and not panel.resume_button.isEnabled()
    panel.params.editors["t0"].setValue(5)
    panel.params.editors["beta_lr"].setText("fast")
    assert panel.error.text() == "strategy.params.beta_lr: expected a number, got 'fast'"
    panel.params.editors["beta_lr"].setText("0.01")
    panel.min_sites.setValue(9)  # more than the 3 sites
    assert panel.error.text().startswith("federation.min_sites: must be in 1..federation.sites (3)")
    panel.min_sites.setValue(2)
    assert panel.error.isHidden() and panel.start_button.isEnabled()


def test_another_algorithm_brings_its_own_settings(qtbot, panel) -> None:
    panel.algorithm.setCurrentText("fedprox")
    assert list(panel.params.editors) == ["mu"] and panel.params.editors["mu"].text() == "0.001"
    assert dict(panel.config().strategy.params) == {"mu": 0.001}
    panel.algorithm.setCurrentText("fedavg")
    assert panel.params.editors == {} and dict(panel.config().strategy.params) == {}


@pytest.mark.parametrize("algorithm", STRATEGIES.names())
def test_every_algorithm_offers_its_settings_with_labels_and_a_valid_default_config(qtbot, panel, algorithm) -> None:
    panel.algorithm.setCurrentText(algorithm)
    params_cls = STRATEGIES.get(algorithm).Params
    names = [f.name for f in dataclasses.fields(params_cls)]
    assert list(panel.params.editors) == names
    layout = panel.params.layout_
    labels = [layout.itemAt(row, QFormLayout.ItemRole.LabelRole).widget().text() for row in range(layout.rowCount())] if names else []
    unlabelled = [name for name, label in zip(names, labels) if label == name and len(name) > 2]
    assert not unlabelled, f"{algorithm}: settings shown by their code names: {unlabelled}"
    assert panel.error.isHidden() and panel.start_button.isEnabled()
    assert panel.config().strategy.name == algorithm


def test_add_key_registers_a_site_key(qtbot, panel, tmp_path) -> None:
    _, public = make_site_key(tmp_path / "site-a.key")
    keys = tmp_path / "site-keys"
    assert not panel.add_key_button.isEnabled()  # no keys folder yet
    panel.site_keys.setText(str(keys))
    assert [panel.keys_list.item(i).text() for i in range(panel.keys_list.count())] == ["No site keys yet: add each site's .pub file"]
    panel.choose_key_file = lambda parent: str(public)
    panel.add_key_button.click()
    assert [panel.keys_list.item(i).text() for i in range(panel.keys_list.count())] == ["site-a.key.pub"]
    assert (keys / "site-a.key.pub").read_bytes() == public.read_bytes()


def test_start_and_resume_refuse_the_wrong_folder_before_starting_anything(qtbot, panel, errors, tmp_path) -> None:
    panel.start_button.click()
    assert errors.shown[-1] == ("Start", "Output folder: choose where the run is written")
    panel.out.setText(str(tmp_path / "new"))
    panel.resume_button.click()
    assert errors.shown[-1][0] == "Resume" and "holds no run to resume" in errors.shown[-1][1]
    old = tmp_path / "old"
    old.mkdir()
    (old / "events.jsonl").write_text('{"type": "round_started", "round": 1, "rounds": 5}\n')
    panel.out.setText(str(old))
    panel.start_button.click()
    assert "holds a run already; press Resume" in errors.shown[-1][1]
    assert panel.worker is None
