"""The ``fedseg`` command line: listings, site checks, demo sites, and user mistakes.

A user mistake must end with exit code 2 and exactly one line on stderr that starts with
``fedseg: error:`` -- never a traceback. Most commands run in-process through
``engine.cli.main``; the installed console script is run as a subprocess once for a
listing and once for an error (what a user really sees on stderr, warnings included).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np
import pytest

from engine.cli import main
from engine.fl import STRATEGIES

REPO = Path(__file__).resolve().parents[2]
TINY_NET = {"channels": [4, 8, 16], "strides": [2, 2]}


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse's own errors exit through SystemExit
        rc = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return rc, out, err


def assert_user_error(rc: int, out: str, err: str) -> str:
    assert rc == 2, (rc, out, err)
    assert "Traceback" not in err and "Traceback" not in out
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("fedseg: error:"), err
    return lines[0]


def console_script() -> Path:
    for candidate in (REPO / ".venv" / "bin" / "fedseg", Path(sys.executable).parent / "fedseg"):
        if candidate.is_file():
            return candidate
    pytest.skip("the fedseg console script is not installed (pip install -e .)")


# -- fixtures ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_sites(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, str, Path]:
    """``fedseg make-demo-sites OUT --sites 2 --seed 1``, run once: (rc, stdout, OUT)."""
    out = tmp_path_factory.mktemp("cli-demo") / "sites"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        rc = main(["make-demo-sites", str(out), "--sites", "2", "--seed", "1"])
    return rc, stdout.getvalue(), out


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained but complete model folder (model.json + safetensors)."""
    from engine.model.checkpoint import ModelCard, save_model
    from engine.model.networks import build_network, network_args

    folder = tmp_path_factory.mktemp("cli-model")
    card = ModelCard(
        network="unet",
        network_args=network_args("unet", TINY_NET),
        target_spacing=[4.0, 4.0, 6.0],
        hu_window=[-160.0, 240.0],
        patch_size=[32, 32, 16],
        lesion_label=1,
    )
    return save_model(folder, build_network("unet", TINY_NET).state_dict(), card)


@pytest.fixture
def truncated_nifti(tmp_path: Path) -> Path:
    path = tmp_path / "broken_ct.nii.gz"
    data = np.random.default_rng(0).normal(0, 100, (24, 24, 12)).astype(np.int16)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    return path


# -- listings and demo sites -------------------------------------------------------------
def test_algorithms_lists_one_line_per_strategy(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run_cli(["algorithms"], capsys)
    assert rc == 0 and err == ""
    lines = out.strip("\n").splitlines()
    names = STRATEGIES.names()
    assert len(lines) == len(names) >= 5
    for line, name in zip(lines, names):
        assert line.split()[0] == name
        assert STRATEGIES.summary(name) in line


def test_version_names_torch_its_cuda_and_flower(capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    line = capsys.readouterr().out.strip()
    cuda = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU only"
    assert line.startswith("fedseg 0.1.0 (") and f"torch {torch.__version__}, {cuda}" in line and "Flower 1.41.0" in line


def test_make_demo_sites_writes_k_folders(demo_sites: tuple[int, str, Path]) -> None:
    rc, stdout, out = demo_sites
    assert rc == 0
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert folders == ["site-1", "site-2"]
    assert stdout.strip().splitlines() == [str(out / "site-1"), str(out / "site-2")]
    for folder in folders:
        meta = json.loads((out / folder / "dataset.json").read_text())
        images = sorted((out / folder / "imagesTr").glob("*.nii.gz"))
        labels = sorted((out / folder / "labelsTr").glob("*.nii.gz"))
        assert len(images) == len(labels) == meta["numTraining"] == len(meta["training"]) > 0
        assert meta["phantom"]["seed"] == 1


# -- check-site --------------------------------------------------------------------------
def test_check_site_accepts_a_phantom_site(demo_sites: tuple[int, str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    site = demo_sites[2] / "site-2"
    rc, out, err = run_cli(["check-site", site], capsys)
    assert rc == 0, err
    assert err == ""
    assert out.strip().splitlines()[-1] == "usable"


def _truncate_image(site: Path) -> str:
    path = site / "imagesTr" / "site2_003.nii.gz"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 3])
    return path.name


def _misshape_label(site: Path) -> str:
    path = site / "labelsTr" / "site2_005.nii.gz"
    img = nib.load(str(path))
    small = np.asarray(img.dataobj)[:-4]
    nib.save(nib.Nifti1Image(small, img.affine), str(path))
    return path.name


@pytest.mark.parametrize("breakage", [_truncate_image, _misshape_label], ids=["truncated-image", "label-shape"])
def test_check_site_rejects_a_broken_site_naming_the_file(
    breakage: Callable[[Path], str], demo_sites: tuple[int, str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = tmp_path / "site-2"
    shutil.copytree(demo_sites[2] / "site-2", site)
    bad = breakage(site)
    rc, out, err = run_cli(["check-site", site], capsys)
    assert rc != 0
    assert "Traceback" not in err
    assert bad in err, err
    assert bad in out, out
    assert out.strip().splitlines()[-1].startswith("NOT usable")


# -- a whole (tiny) simulation through the command line --------------------------------
TINY_TOML = """
rounds = 1
seed = 0

[data]
target_spacing = [4.0, 4.0, 6.0]
patch_size = [32, 32, 16]

[model]
network = "unet"

[model.args]
channels = [4, 8, 16]
strides = [2, 2]

[train]
lr = 1e-3
local_steps = 2
device = "cpu"

[strategy]
name = "fedavg"
"""



def test_simulate_demo_with_flags_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Flags override the TOML: algorithm, its parameters, rounds, local steps, seed."""
    config = tmp_path / "tiny.toml"
    config.write_text(TINY_TOML)
    out = tmp_path / "run"
    argv = [
        "simulate", "--demo", "2", "--config", config, "--algorithm", "auto-fedavg", "--t0", "1",
        "--beta-steps", "1", "--param", "weights=softmax", "--rounds", "2", "--local-steps", "1",
        "--seed", "3", "--out", out,
    ]
    rc, stdout, stderr = run_cli(argv, capsys)
    assert rc == 0, stderr
    assert "Traceback" not in stderr
    assert f"fedseg simulate --resume {out}" in stdout
    assert sorted(p.name for p in (out / "demo-sites").iterdir()) == ["site-1", "site-2"]
    assert json.loads((out / "demo-sites" / "site-1" / "dataset.json").read_text())["phantom"]["seed"] == 3
    results = json.loads((out / "results.json").read_text())
    assert results["algorithm"] == "auto-fedavg"
    assert results["params"] == {"t0": 1, "beta_steps": 1, "weights": "softmax"}
    assert results["config"]["rounds"] == 2 and results["config"]["seed"] == 3
    assert results["config"]["train"]["local_steps"] == 1
    assert results["config"]["data"]["patch_size"] == [32, 32, 16]
    rounds = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    rounds = [e for e in rounds if e["type"] == "round_finished"]
    assert [e["round"] for e in rounds] == [1, 2]
    assert all(isinstance(e["beta"], list) and len(e["alpha"]) == 2 for e in rounds)
    steps = [e for e in (json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()) if e["type"] == "site_progress" and e["phase"] == "train"]
    assert {e["total"] for e in steps} == {1}
    assert (out / "global_model.safetensors").is_file() and (out / "model.json").is_file()


# -- user mistakes -------------------------------------------------------------------------
def test_simulate_missing_site_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["simulate", "--sites", tmp_path / "no-such-site", tmp_path / "other", "--out", tmp_path / "run"]
    line = assert_user_error(*run_cli(argv, capsys))
    assert "no-such-site" in line
    assert not (tmp_path / "run").exists()


def test_simulate_unknown_algorithm_suggests_a_name(demo_sites: tuple[int, str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sites = [demo_sites[2] / "site-1", demo_sites[2] / "site-2"]
    line = assert_user_error(*run_cli(["simulate", "--sites", *sites, "--algorithm", "fedavgg", "--out", tmp_path / "run"], capsys))
    assert "fedavgg" in line
    assert "did you mean 'fedavg'" in line


@pytest.mark.parametrize(
    "param, phrase",
    [("weights", "NAME=VALUE"), ("weights=dirichlett", "did you mean 'dirichlet'"), ("beta_step=3", "did you mean 'beta_steps'")],
    ids=["no-equals", "bad-value", "unknown-name"],
)
def test_simulate_bad_param(param: str, phrase: str, demo_sites: tuple[int, str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sites = [demo_sites[2] / "site-1", demo_sites[2] / "site-2"]
    argv = ["simulate", "--sites", *sites, "--algorithm", "auto-fedavg", "--param", param, "--out", tmp_path / "run"]
    line = assert_user_error(*run_cli(argv, capsys))
    assert phrase in line


def test_simulate_demo_needs_two_sites(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = assert_user_error(*run_cli(["simulate", "--demo", "1", "--out", tmp_path / "run"], capsys))
    assert "--demo" in line and "2" in line
    assert not (tmp_path / "run" / "demo-sites").exists()


def test_simulate_refuses_a_folder_that_holds_a_run(demo_sites: tuple[int, str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "events.jsonl").write_text('{"type": "run_started"}\n')
    sites = [demo_sites[2] / "site-1", demo_sites[2] / "site-2"]
    line = assert_user_error(*run_cli(["simulate", "--sites", *sites, "--out", out], capsys))
    assert "already holds a run" in line
    assert (out / "events.jsonl").read_text() == '{"type": "run_started"}\n', "the old run must be left alone"


def test_make_demo_sites_needs_a_site(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert_user_error(*run_cli(["make-demo-sites", tmp_path / "x", "--sites", "0"], capsys))


def test_predict_corrupt_nifti(model_dir: Path, truncated_nifti: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["predict", "--model", model_dir, "--image", truncated_nifti, "--out", tmp_path / "mask.nii.gz"]
    line = assert_user_error(*run_cli(argv, capsys))
    assert "broken_ct.nii.gz" in line
    assert not (tmp_path / "mask.nii.gz").exists()


def test_predict_missing_model_folder(truncated_nifti: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["predict", "--model", tmp_path / "no-model", "--image", truncated_nifti, "--out", tmp_path / "mask.nii.gz"]
    line = assert_user_error(*run_cli(argv, capsys))
    assert "no-model" in line


def test_predict_model_folder_without_weights(model_dir: Path, truncated_nifti: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "half-model"
    folder.mkdir()
    shutil.copy(model_dir / "model.json", folder / "model.json")
    argv = ["predict", "--model", folder, "--image", truncated_nifti, "--out", tmp_path / "mask.nii.gz"]
    line = assert_user_error(*run_cli(argv, capsys))
    assert "global_model.safetensors" in line


def test_simulate_duplicate_site_names(demo_sites: tuple[int, str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = demo_sites[2] / "site-2"
    line = assert_user_error(*run_cli(["simulate", "--sites", site, site, "--out", tmp_path / "run"], capsys))
    assert "site-2" in line and "unique" in line


@pytest.mark.parametrize(
    "toml, phrase",
    [(None, "not found"), ("rounds = [\n", "not valid TOML"), ("[train]\nlocal_step = 3\n", "did you mean 'local_steps'")],
    ids=["missing", "syntax", "unknown-key"],
)
def test_simulate_bad_config(toml: str | None, phrase: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "run.toml"
    if toml is not None:
        config.write_text(toml)
    line = assert_user_error(*run_cli(["simulate", "--demo", "2", "--config", config, "--out", tmp_path / "run"], capsys))
    assert phrase in line and "run.toml" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("command", ["simulate", "predict"])
def test_cuda_asked_for_without_a_gpu(command: str, model_dir: Path, demo_sites: tuple[int, str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if command == "simulate":
        argv = ["simulate", "--sites", demo_sites[2] / "site-1", demo_sites[2] / "site-2", "--device", "cuda", "--out", tmp_path / "run"]
    else:
        image = tmp_path / "ct.nii.gz"
        nib.save(nib.Nifti1Image(np.zeros((16, 16, 8), np.int16), np.eye(4)), str(image))
        argv = ["predict", "--model", model_dir, "--image", image, "--out", tmp_path / "mask.nii.gz", "--device", "cuda"]
    line = assert_user_error(*run_cli(argv, capsys))
    assert "cuda" in line


def test_check_site_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = assert_user_error(*run_cli(["check-site", tmp_path / "no-site"], capsys))
    assert "no-site" in line


def test_predict_unsupported_output_type(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 8), np.int16), np.eye(4)), str(image))
    line = assert_user_error(*run_cli(["predict", "--model", model_dir, "--image", image, "--out", tmp_path / "mask.png"], capsys))
    assert "mask.png" in line


@pytest.mark.parametrize("command", ["simulate-sites", "simulate-demo", "make-demo-sites"])
def test_output_path_that_is_a_file(command: str, demo_sites: tuple[int, str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "results.txt"
    target.write_text("not a folder\n")
    sites = [demo_sites[2] / "site-1", demo_sites[2] / "site-2"]
    argv = {
        "simulate-sites": ["simulate", "--sites", *sites, "--rounds", "1", "--local-steps", "1", "--out", target],
        "simulate-demo": ["simulate", "--demo", "2", "--out", target],
        "make-demo-sites": ["make-demo-sites", target, "--sites", "1"],
    }[command]
    line = assert_user_error(*run_cli(argv, capsys))
    assert "results.txt" in line
    assert target.read_text() == "not a folder\n"


# -- the installed console script ----------------------------------------------------------
def _subprocess(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(console_script()), *args], capture_output=True, text=True, timeout=120, env=env, cwd=REPO)


def test_console_script_lists_algorithms() -> None:
    proc = _subprocess(["algorithms"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert [line.split()[0] for line in proc.stdout.strip().splitlines()] == STRATEGIES.names()


def test_console_script_user_error_is_one_line(model_dir: Path, truncated_nifti: Path, tmp_path: Path) -> None:
    proc = _subprocess(["predict", "--model", str(model_dir), "--image", str(truncated_nifti), "--out", str(tmp_path / "m.nii.gz")])
    line = assert_user_error(proc.returncode, proc.stdout, proc.stderr)
    assert "broken_ct.nii.gz" in line


# -- --init-model ----------------------------------------------------------------------------
def test_simulate_init_model_is_checked_before_anything_runs(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    missing = ["simulate", "--demo", "2", "--init-model", tmp_path / "nope", "--out", out]
    line = assert_user_error(*run_cli(missing, capsys))
    assert line.startswith("fedseg: error: init_model:") and "nope" in line and "not found" in line
    # the default network (8-16-32-64) is not the 4-8-16 U-Net of model_dir
    line = assert_user_error(*run_cli(["simulate", "--demo", "2", "--init-model", model_dir, "--out", out], capsys))
    assert "init_model:" in line and "this run's model is 'unet'" in line
    # a config's init_model is relative to the config's folder
    config = tmp_path / "conf" / "run.toml"
    config.parent.mkdir()
    config.write_text('init_model = "elsewhere"\n' + TINY_TOML)
    line = assert_user_error(*run_cli(["simulate", "--demo", "2", "--config", config, "--out", out], capsys))
    assert str(tmp_path / "conf" / "elsewhere") in line
    assert not out.exists()


def test_simulate_deer_from_an_init_model(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "tiny.toml"
    config.write_text(TINY_TOML)
    out = tmp_path / "run"
    argv = [
        "simulate", "--demo", "2", "--config", config, "--algorithm", "deer", "--init-model", model_dir,
        "--param", "dp=False", "--rounds", "1", "--local-steps", "1", "--out", out,
    ]
    rc, _, stderr = run_cli(argv, capsys)
    assert rc == 0, stderr
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["init_model"] == str(model_dir.resolve())
    assert results["privacy"] == {"dp": False} and results["lora"]["rank"] == 8
    from engine.model.checkpoint import load_model

    network, card = load_model(out)  # the merged plain network
    assert card.algorithm == "deer" and sum(p.numel() for p in network.parameters()) > 0
