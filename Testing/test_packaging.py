"""Extension packaging: CMake files name existing files, the ExtensionsIndex JSON agrees with CMake."""

from __future__ import annotations

import ast
import glob
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULE_DIR = ROOT / "SoftSpinalCordSeg"
EXTENSION_FIELDS = ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS", "DEPENDS")


def cmake_sets(text: str) -> dict:
    """name -> list of words of every set(NAME ...) in a CMake file (quoted strings kept whole)."""
    text = re.sub(r"(^|\s)#[^\n]*", r"\1", text)  # comments (a # inside a URL stays)
    values = {}
    for name, body in re.findall(r'set\(\s*(\w+)\s+((?:"[^"]*"|[^)"])*)\)', text):
        values[name] = [quoted or bare for quoted, bare in re.findall(r'"([^"]*)"|(\S+)', body)]
    return values


def expand(word: str, variables: dict) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda match: " ".join(variables[match.group(1)]), word)


def module_files() -> tuple:
    """(explicit files, glob patterns) of the module's CMakeLists, relative to the module folder."""
    text = (MODULE_DIR / "CMakeLists.txt").read_text()
    variables = cmake_sets(text)
    globs = dict(re.findall(r"file\(GLOB\s+(\w+)\s+RELATIVE\s+\S+\s+(\S+)\)", text))
    explicit = []
    for listing in ("MODULE_PYTHON_SCRIPTS", "MODULE_PYTHON_RESOURCES"):
        for word in variables[listing]:
            if word.strip("${}") in globs:
                continue
            explicit.append(expand(word, variables))
    return explicit, {name: expand(pattern, variables) for name, pattern in globs.items()}


def extension_settings() -> dict:
    variables = cmake_sets((ROOT / "CMakeLists.txt").read_text())
    return {field: " ".join(variables.get(f"EXTENSION_{field}", [])) for field in EXTENSION_FIELDS}


def test_every_file_named_in_the_module_cmakelists_exists():
    explicit, globs = module_files()
    assert "SoftSpinalCordSeg.py" in explicit and "Resources/UI/SoftSpinalCordSeg.ui" in explicit
    for relative in explicit:
        assert (MODULE_DIR / relative).is_file(), f"{relative} is named in SoftSpinalCordSeg/CMakeLists.txt but missing"
    library = {Path(path).name for path in glob.glob(str(MODULE_DIR / globs["MODULE_LIBRARY_SCRIPTS"]))}
    assert {"__init__.py", "mrml.py", "worker.py", "inference.py", "morphometry.py"} <= library
    assert globs["MODULE_MODEL_RESOURCES"] == "Resources/Models/*"


def test_module_cmakelists_builds_the_scripted_module():
    text = (MODULE_DIR / "CMakeLists.txt").read_text()
    assert re.search(r"slicerMacroBuildScriptedModule\(\s*NAME \$\{MODULE_NAME\}", text)
    assert cmake_sets(text)["MODULE_NAME"] == ["SoftSpinalCordSeg"]
    assert "add_subdirectory(SoftSpinalCordSeg)" in (ROOT / "CMakeLists.txt").read_text()


def test_extension_metadata_is_complete_and_points_at_repository_files():
    settings = extension_settings()
    for field, value in settings.items():
        assert value, f"EXTENSION_{field} is empty"
    assert settings["DEPENDS"] == "PyTorch"
    urls = [settings["ICONURL"]] + settings["SCREENSHOTURLS"].split()
    assert len(urls) >= 2
    for url in urls:
        relative = url.split("/main/", 1)[1]
        assert (ROOT / relative).is_file(), f"{url} points at {relative}, which is not in the repository"


def test_extensions_index_json_matches_cmake():
    description = json.loads((ROOT / "SoftSpinalCordSeg.json").read_text())
    for key in ("scm_url", "scm_revision", "build_dependencies", "category", "build_subdirectory", "tier"):
        assert key in description, key
    settings = extension_settings()
    assert sorted(description["build_dependencies"]) == sorted(settings["DEPENDS"].split())
    assert description["category"] == settings["CATEGORY"]
    assert description["scm_url"].endswith(".git") and description["scm_url"].startswith("https://github.com/")
    repository = description["scm_url"][: -len(".git")]
    assert settings["HOMEPAGE"].startswith(repository)
    assert description["tier"] in (1, 3, 5)


# The ExtensionsIndex's catalog-entry schema (v1.0.1) allows only these keys (additionalProperties: false).
CATALOG_KEYS = {"$schema", "category", "scm_url", "scm_revision", "scm_type", "build_dependencies",
                "build_subdirectory", "enabled", "tier"}


def index_formatted(text: str) -> str:
    """The file as the ExtensionsIndex's pre-commit writes it: prettier 3.5 on JSON with
    prettier-plugin-multiline-arrays at multilineArraysWrapThreshold 0 (every non-empty array one item per
    line), objectWrap "preserve" (a multi-line object stays multi-line), 2 spaces, no tabs, final newline."""
    return json.dumps(json.loads(text), indent=2, ensure_ascii=False) + "\n"


def test_extensions_index_json_is_formatted_as_the_index_requires():
    text = (ROOT / "SoftSpinalCordSeg.json").read_text()
    assert text == index_formatted(text), "run prettier with the ExtensionsIndex's .prettierrc.js on it"
    one_line_array = text.replace('[\n    "PyTorch"\n  ]', '["PyTorch"]')
    assert one_line_array != text and index_formatted(one_line_array) != one_line_array  # what the index rejects
    description = json.loads(text)
    assert set(description) <= CATALOG_KEYS and {"$schema", "category", "scm_url"} <= set(description)


def test_supported_slicer_range_is_stated_where_users_and_builders_read_it():
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    import slicer_api

    oldest = ".".join(slicer_api.VERSIONS[0].split(".")[:2])  # the oldest release the API test checks
    cmake = (ROOT / "CMakeLists.txt").read_text()
    assert cmake_sets(cmake)["EXTENSION_MINIMUM_SLICER_VERSION"] == [oldest]
    assert re.search(r'VERSION_LESS "\$\{EXTENSION_MINIMUM_SLICER_VERSION\}"\)\s*message\(FATAL_ERROR', cmake)
    assert f"Requires 3D Slicer {oldest} or later" in extension_settings()["DESCRIPTION"]
    assert f"**Supported**: 3D Slicer {oldest} and later" in (ROOT / "README.md").read_text()


def test_module_metadata_follows_the_slicer_template():
    source = (MODULE_DIR / "SoftSpinalCordSeg.py").read_text()
    # the category is translated in the context Slicer's own categories use, so it joins them in any language
    assert 'self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]' in source
    contributors = ast.literal_eval(re.search(r"self\.parent\.contributors = (\[.*?\])", source).group(1))
    assert contributors and all(re.fullmatch(r"[^()]+ \([^()]+\)", name) for name in contributors)
    assert extension_settings()["CONTRIBUTORS"] == ", ".join(contributors)


def test_module_code_runs_on_python_3_9():
    """Slicer's Python may be older than ours: the module and its Slicer-side library files parse as 3.9."""
    for path in (MODULE_DIR / "SoftSpinalCordSeg.py", MODULE_DIR / "SoftSpinalCordSegLib" / "mrml.py",
                 *(MODULE_DIR / "SoftSpinalCordSegLib" / f"{name}.py" for name in ("worker", "dependencies", "selftest"))):
        tree = ast.parse(path.read_text(), feature_version=(3, 9))
        unions = [node for node in ast.walk(tree) if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr)
                  and isinstance(node.left, ast.Name) and node.left.id in ("str", "int", "float", "None")]
        assert not unions, f"{path.name}: X | Y type unions need Python 3.10"


def test_slicer_requirements_are_the_package_dependencies_and_are_checked_by_version():
    import importlib.metadata
    import tomllib

    from SoftSpinalCordSegLib.dependencies import SLICER_REQUIREMENTS, requirement_met, unmet_requirements

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert set(SLICER_REQUIREMENTS) <= set(declared)  # Slicer gets the ranges pip gets
    numpy = importlib.metadata.version("numpy")
    major = int(numpy.split(".")[0])
    assert requirement_met(f"numpy>={major}.0,<{major + 1}")
    assert not requirement_met(f"numpy>={major + 1}.0")  # installed but too old: pip must upgrade it
    assert not requirement_met(f"numpy<{major}")
    assert not requirement_met("no-such-package-softseg>=1.0")
    assert unmet_requirements(["numpy>=1.0", "numpy>=999"]) == ["numpy>=999"]
