"""Where the plugin's yaml files are: the top-level `properties/` folder of the checkout, shipped inside the package.

`properties/` (beside `dataset/`, `hyper/` and `tests/`) is the one source of the model, dataset and profile yaml
files. A source checkout or an editable install reads it where it is; a wheel (or any non-editable install) carries
it as `recbole_genrec/properties/` (pyproject.toml maps the package `recbole_genrec.properties` onto the top-level
folder), so an installed package finds the same files without the checkout. Standard library only: the command
line imports this before RecBole."""
import os

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(PACKAGE_DIR)
INSTALLED_PROPERTIES_DIR = os.path.join(PACKAGE_DIR, "properties")  # the wheel's layout
SOURCE_PROPERTIES_DIR = os.path.join(REPO_DIR, "properties")  # the checkout's layout (source, editable install)


def find_properties_dir(candidates=(INSTALLED_PROPERTIES_DIR, SOURCE_PROPERTIES_DIR)):
    """The first candidate folder that holds `overall.yaml`: the installed package's copy, else the checkout's."""
    for folder in candidates:
        if os.path.isfile(os.path.join(folder, "overall.yaml")):
            return folder
    raise FileNotFoundError(f"recbole_genrec's properties (overall.yaml, model/, dataset/) are in none of "
                            f"{', '.join(candidates)}: reinstall the package (pip install .) or run from a checkout.")


PROPERTIES_DIR = find_properties_dir()
QUICKSTART_PROFILE = os.path.join(PROPERTIES_DIR, "quickstart.yaml")


def resolve_properties_path(path):
    """A `properties/...` path given on the command line (`--config_files=properties/beauty.yaml`) that does not
    exist relative to the working directory -> the same file in the package's properties folder, so the README's
    commands also work from another directory or with an installed package. Any other path is returned as given."""
    if os.path.exists(path):
        return path
    parts = os.path.normpath(path).split(os.sep)
    if len(parts) > 1 and parts[0] == "properties":
        shipped = os.path.join(PROPERTIES_DIR, *parts[1:])
        if os.path.exists(shipped):
            return shipped
    return path
