"""The top-level properties/ folder is the one source of the yaml files, and a built wheel carries them: an installed
(non-editable) package finds its model, dataset and profile files without the checkout."""
import glob
import os
import shutil
import subprocess
import sys
import tomllib
import venv
import zipfile

import pytest
import setuptools

from recbole_genrec import paths

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROPERTIES = os.path.join(ROOT, "properties")


def property_files():
    """Every yaml file of properties/, relative to it."""
    found = glob.glob(os.path.join(PROPERTIES, "**", "*.yaml"), recursive=True)
    return sorted(os.path.relpath(path, PROPERTIES) for path in found)


def test_properties_live_at_the_top_level_only():
    assert {"overall.yaml", "quickstart.yaml", "beauty.yaml", "model/TIGER.yaml", "dataset/amazon-beauty.yaml"} \
        <= set(property_files())
    assert not os.path.exists(os.path.join(ROOT, "recbole_genrec", "properties"))  # no second copy
    assert paths.PROPERTIES_DIR == PROPERTIES  # the checkout (and an editable install) reads them in place
    assert paths.QUICKSTART_PROFILE == os.path.join(PROPERTIES, "quickstart.yaml")


def test_package_list_names_every_package():
    """pyproject.toml lists the packages (a mapped package cannot be discovered): a new subpackage must be added."""
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as handle:
        setuptools_table = tomllib.load(handle)["tool"]["setuptools"]
    discovered = setuptools.find_packages(ROOT, include=["recbole_genrec", "recbole_genrec.*"])
    assert sorted(setuptools_table["packages"]) == sorted(discovered + ["recbole_genrec.properties"])
    assert setuptools_table["package-dir"] == {"recbole_genrec.properties": "properties"}


def test_properties_paths_on_the_command_line_resolve_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no properties/ here: the package's file is used
    assert paths.resolve_properties_path("properties/beauty.yaml") == os.path.join(PROPERTIES, "beauty.yaml")
    assert paths.resolve_properties_path("other/beauty.yaml") == "other/beauty.yaml"
    (tmp_path / "properties").mkdir()
    (tmp_path / "properties" / "beauty.yaml").write_text("epochs: 1\n")
    assert paths.resolve_properties_path("properties/beauty.yaml") == "properties/beauty.yaml"  # the user's own


def test_wheel_ships_the_properties_and_an_installed_package_finds_them(tmp_path):
    """`pip wheel` (no dependencies, no build isolation: offline), then the wheel unpacked into a fresh virtual
    environment (not editable; the dependencies come from this environment's site-packages through a path file,
    whose own .pth files, the editable install's finder among them, are not run): the package imported from there
    reads its properties from its own folder."""
    source, wheel_dir = tmp_path / "source", tmp_path / "wheel"
    source.mkdir()  # a copy of what the build reads, so that no build/ folder is left in the checkout
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), source / name)
    for name in ("recbole_genrec", "properties"):
        shutil.copytree(os.path.join(ROOT, name), source / name, ignore=shutil.ignore_patterns("__pycache__"))
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "-w", str(wheel_dir), "--no-deps", "--no-build-isolation",
         "--no-index", "-q"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    if build.returncode != 0 and ("No module named pip" in build.stderr or "setuptools" in build.stderr):
        pytest.skip(f"cannot build a wheel offline here: {build.stderr.strip().splitlines()[-1]}")
    assert build.returncode == 0, build.stderr
    wheels = glob.glob(str(wheel_dir / "recbole_genrec-*.whl"))
    assert len(wheels) == 1
    with zipfile.ZipFile(wheels[0]) as wheel:
        names = set(wheel.namelist())
        shipped_yaml = sorted(name[len("recbole_genrec/properties/"):] for name in names
                              if name.startswith("recbole_genrec/properties/"))
        assert shipped_yaml == [name.replace(os.sep, "/") for name in property_files()]
        modules = sorted(os.path.relpath(path, ROOT).replace(os.sep, "/")
                         for path in glob.glob(os.path.join(ROOT, "recbole_genrec", "**", "*.py"), recursive=True))
        assert set(modules) <= names, sorted(set(modules) - names)
        site = tmp_path / "venv" / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
        venv.EnvBuilder(with_pip=False).create(tmp_path / "venv")
        wheel.extractall(site)
    dependencies = [path for path in sys.path if path.endswith("site-packages") and os.path.isdir(path)]
    (site / "dependencies.pth").write_text("\n".join(dependencies) + "\n")
    script = (
        "import json, recbole_genrec, recbole_genrec.config as c, recbole_genrec.cli as cli; "
        "print(json.dumps([recbole_genrec.__file__, c.PROPERTIES_DIR, cli.QUICKSTART_PROFILE, "
        "c.plugin_property_files('TIGER', 'amazon-beauty'), len(c.default_layers())]))"
    )
    run = subprocess.run([str(tmp_path / "venv" / "bin" / "python"), "-c", script], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ""})
    assert run.returncode == 0, run.stderr
    import json

    package_file, properties_dir, profile, files, n_keys = json.loads(run.stdout.strip().splitlines()[-1])
    installed = os.path.join(str(site), "recbole_genrec")
    assert package_file == os.path.join(installed, "__init__.py")  # the wheel's copy, not the checkout
    assert properties_dir == os.path.join(installed, "properties")
    assert profile == os.path.join(installed, "properties", "quickstart.yaml")
    assert [os.path.relpath(path, properties_dir) for path in files] == [
        "overall.yaml", os.path.join("dataset", "amazon-beauty.yaml"), os.path.join("model", "TIGER.yaml")]
    assert n_keys > 100
