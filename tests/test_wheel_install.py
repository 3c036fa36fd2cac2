"""The package as users install it: sdist + wheel build, the wheel installed into a fresh venv, and the
CLI run from an unrelated folder (no source tree on the path).

The fresh venv reuses the test environment's already-installed dependencies (pinned torch included)
through a `.pth` line instead of downloading them again; `pip check` then proves that the wheel's
declared requirements are satisfied by exactly those pins.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

import gamma_mod
from gamma_mod.packaged import CONFIG_DIR, builtin_config_names, resolve_config

ROOT = Path(__file__).resolve().parents[1]
_CHECK_REQUIREMENTS = """
from importlib.metadata import requires, version
from packaging.requirements import Requirement
unmet = []
for line in requires("gamma-mod"):
    req = Requirement(line)
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue  # an optional extra's requirement
    try:
        found = version(req.name)
    except Exception:
        found = None
    if found is None or not req.specifier.contains(found, prereleases=True):
        unmet.append(f"{req} (found {found})")
assert not unmet, unmet
"""


def test_builtin_configs_resolve_by_name_and_path(tmp_path):
    assert resolve_config("model", "tiny") == CONFIG_DIR / "model" / "tiny.yaml"
    assert resolve_config("train", "stage1_tiny.yaml") == CONFIG_DIR / "train" / "stage1_tiny.yaml"
    own = tmp_path / "tiny.yaml"
    own.write_text("text: {}\n")
    assert resolve_config("model", own) == own  # a file of one's own wins over the built-in of that name
    with pytest.raises(FileNotFoundError, match=r"no built-in model config.*llava_hr_tiny"):
        resolve_config("model", "no_such_spec")
    with pytest.raises(FileNotFoundError, match="no such file"):
        resolve_config("train", tmp_path / "missing" / "stage1_tiny.yaml")  # a path is never a name
    assert "stage2_mod_tiny" in builtin_config_names("train")


def test_top_level_configs_is_the_packaged_folder_not_a_copy():
    assert (ROOT / "configs").resolve() == CONFIG_DIR.resolve()
    assert CONFIG_DIR.resolve().is_relative_to(Path(gamma_mod.__file__).resolve().parent)


def _build(tmp_path: Path) -> tuple[Path, Path]:
    src = tmp_path / "src"
    skip = shutil.ignore_patterns(".git", ".venv", "runs", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache")

    def ignore(folder, names):  # + downloaded benchmark data under playground/, however large
        return skip(folder, names) | ({"data"} if Path(folder) == ROOT / "playground" else set())

    shutil.copytree(ROOT, src, symlinks=True, ignore=ignore)
    dist = tmp_path / "dist"
    # --no-isolation: build with the setuptools already installed (CI may have no index for build deps);
    # the default sdist-then-wheel order builds the wheel FROM the sdist, so the sdist is checked too.
    subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(src)],
                   check=True, capture_output=True, text=True)
    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")
    return wheel, sdist


@pytest.mark.slow
def test_wheel_installs_and_runs_the_pipeline_from_any_folder(tmp_path):
    wheel, sdist = _build(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    for kind in ("model", "train"):
        for name in builtin_config_names(kind):
            assert f"gamma_mod/configs/{kind}/{name}.yaml" in names
    assert "gamma_mod/py.typed" in names
    assert any(n.endswith("LICENSE") for n in names)
    with tarfile.open(sdist) as tar:
        assert any(n.endswith("gamma_mod/configs/train/stage1_tiny.yaml") for n in tar.getnames())

    # Nothing of the source tree may leak in (a PYTHONPATH to a checkout would shadow the wheel).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          env=env, check=True, capture_output=True, text=True).stdout.strip()
    pip = [sys.executable, "-m", "pip", "--python", str(py)]
    # Install before linking the test environment in: pip would otherwise see its gamma-mod and skip.
    subprocess.run([*pip, "install", "-q", "--no-deps", "--no-index", str(wheel)], env=env, check=True)
    (Path(site) / "_reuse_test_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # Every core requirement the wheel declares is met by the pinned environment it runs in. (Not `pip
    # check`: the test extra installs lmms-eval without its torchvision-bound requirements, on purpose.)
    check = subprocess.run([str(py), "-c", _CHECK_REQUIREMENTS], env=env, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cli = str(venv / "bin" / "gamma-mod")

    def run(*args):
        return subprocess.run([cli, *args], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)

    version = run("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"gamma-mod {gamma_mod.__version__}"
    where = subprocess.run([str(py), "-c", "import gamma_mod; print(gamma_mod.__file__)"], cwd=elsewhere, env=env,
                           check=True, capture_output=True, text=True).stdout
    assert Path(where).resolve().is_relative_to(venv.resolve()), where  # the wheel, not the source tree

    result = run("pipeline", "--out", "run", "--max-steps", "2", "--captions", "16", "--vqa-train", "8",
                 "--vqa-test", "4", "--eval-samples", "12", "--arank-samples", "4")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (elsewhere / "run" / "report_gamma.md").exists()
    # The quickstart's pictures (issue 24): the ARank plot and the stages' curves, embedded in report.md.
    summary = (elsewhere / "run" / "report.md").read_text()
    for image in ("arank.png", "stage1/loss.png", "stage2_gamma/skip_fraction.png", "stage2_dense/loss.png"):
        assert (elsewhere / "run" / image).stat().st_size > 1000 and f"]({image})" in summary, image
    assert "| MoD (gamma) |" in result.stdout
