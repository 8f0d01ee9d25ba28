"""Find the images of a cohort (a BIDS dataset, a plain folder or a file list) and name their derivatives.

BIDS file names are `key-value` entities joined by `_`, ending with a suffix that names the contrast
(`sub-01_ses-2_acq-MTon_MTS.nii.gz` -> subject 01, session 2, contrast MTS).
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Sequence

from .errors import InputError

IMAGE_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".nhdr")
# The cohort files a batch writes at the top of the derivatives folder (batch.py writes them, report.py too).
FAILURES_FILE = "softseg_failures.tsv"
INPUTS_FILE = "softseg_inputs.tsv"  # each image's size and time when its outputs were made
SUMMARY_FILE = "softseg_csa_summary.csv"
SPREAD_FILE = "softseg_contrast_spread.csv"
REPORT_FILE = "softseg_report.html"
# Folders of a BIDS dataset that never hold raw images to segment.
SKIPPED_FOLDERS = {"derivatives", "sourcedata", "code", ".git", ".heudiconv"}
# Names of masks and other derivatives that a plain folder may hold beside its images.
# masks and label maps: _seg, _gmseg, _csfseg, _lesionseg, _probseg, _dseg..., _mask, _label-X, _desc-X
DERIVATIVE_NAME = re.compile(r"(_[a-z]*seg([-_]|$)|_mask(_|$)|_label-|_desc-)", re.IGNORECASE)
ENTITY = re.compile(r"^([a-zA-Z0-9]+)-([a-zA-Z0-9.+]+)$")


@dataclass(frozen=True)
class SourceImage:
    """One image of the cohort and where its derivatives go (relative to the derivatives folder)."""

    path: str
    stem: str  # file name without its extension
    subject: str
    session: str  # "" when the dataset has no sessions
    contrast: str  # the BIDS suffix (T1w, T2w, T2star, MTS, dwi...), the whole stem of a non-BIDS name (t2_ms)
    entities: Dict[str, str]
    output_dir: str  # relative folder of its derivatives, e.g. "sub-01/ses-2/anat"

    def outputs(self, derivatives_dir) -> Dict[str, Path]:
        """Paths of the derivatives of this image."""
        folder = Path(derivatives_dir) / self.output_dir
        return {
            "probseg": folder / (self.stem + "_label-SC_probseg.nii.gz"),
            "mask": folder / (self.stem + "_label-SC_mask.nii.gz"),
            "csa": folder / (self.stem + "_csa.csv"),
            "qc": folder / (self.stem + "_qc.png"),
        }


def split_extension(name: str):
    """('sub-01_T1w', '.nii.gz') for 'sub-01_T1w.nii.gz'; extension '' when it is not an image."""
    lower = name.lower()
    for extension in IMAGE_EXTENSIONS:
        if lower.endswith(extension):
            return name[: -len(extension)], extension
    return name, ""


def parse_name(stem: str):
    """(entities, suffix) of a BIDS-style file stem; suffix is '' when the last part is an entity."""
    parts = stem.split("_")
    entities = {}
    for part in parts[:-1]:
        match = ENTITY.match(part)
        if match:
            entities[match.group(1)] = match.group(2)
    last = parts[-1]
    match = ENTITY.match(last)
    if match and len(parts) > 1:
        entities[match.group(1)] = match.group(2)
        return entities, ""
    return entities, ("" if match else last)


def describe(path, root=None) -> SourceImage:
    """The SourceImage of one image file; root (a folder above it) keeps a non-BIDS layout in the outputs."""
    path = Path(path)
    stem, _ = split_extension(path.name)
    entities, suffix = parse_name(stem)
    if not entities:  # not a BIDS name: its last part is no suffix (t2_ms is not an "ms" contrast)
        suffix = stem
    subject = entities.get("sub", "")
    session = entities.get("ses", "")
    if subject:
        datatype = path.parent.name if path.parent.name in ("anat", "dwi", "func", "perf", "fmap") else "anat"
        parts = ["sub-" + subject] + (["ses-" + session] if session else []) + [datatype]
        output_dir = "/".join(parts)
    else:
        # Not BIDS: mirror the folder layout under root, and let the file name stand for the subject.
        subject = stem
        relative = path.parent.relative_to(root) if root is not None else Path(".")
        output_dir = relative.as_posix()
    return SourceImage(str(path), stem, subject, session, suffix, entities, output_dir)


def _included(relative: str, patterns: Sequence[str]) -> bool:
    if not patterns:
        return True
    name = relative.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(relative, p) or fnmatch.fnmatch(name, p) for p in patterns)


def _walk_images(root: Path, excluded: Iterable[Path]) -> List[Path]:
    excluded = {os.path.realpath(p) for p in excluded}
    found = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(
            d for d in subfolders
            if d not in SKIPPED_FOLDERS and not d.startswith(".") and os.path.realpath(os.path.join(folder, d)) not in excluded
        )
        for name in sorted(files):
            if split_extension(name)[1] and not name.startswith("."):
                found.append(Path(folder) / name)
    return found


def is_bids_dataset(folder) -> bool:
    """A dataset description or sub-* folders: then only the images under sub-* are the dataset's. A plain
    folder whose files are named sub-* is not one (all its images are segmented)."""
    folder = Path(folder)
    return (folder / "dataset_description.json").is_file() or any(p.is_dir() for p in folder.glob("sub-*"))


def discover(input_path, include: Sequence[str] = (), exclude_dirs: Iterable = ()) -> List[SourceImage]:
    """The images to segment under a BIDS dataset or plain folder, or listed in a text file (one path a line).

    include: glob patterns matched against the path relative to the input (or the file name); all when empty.
    Masks and other derivatives (`*_seg*`, `*_mask*`, `*_label-*`...) are left out.
    """
    input_path = Path(input_path)
    if input_path.is_dir():
        bids = is_bids_dataset(input_path)
        images = []
        for path in _walk_images(input_path, exclude_dirs):
            relative = path.relative_to(input_path).as_posix()
            if DERIVATIVE_NAME.search(split_extension(path.name)[0]):
                continue  # a mask or another derivative (also ours, when --output is inside the input)
            if bids and not relative.startswith("sub-"):
                continue  # a BIDS dataset's images live under its sub-* folders
            if _included(relative, include):
                images.append(describe(path, input_path))
    elif input_path.is_file():
        listed = [p for p in read_file_list(input_path) if _included(p.as_posix(), include)]
        # the listed files' folders below their common one keep apart outputs of files with one name
        root = Path(os.path.commonpath([p.resolve().parent for p in listed])) if listed else None
        images = [describe(p.resolve(), root) for p in listed]
    else:
        raise InputError(f"{input_path}: no such dataset, folder or file list")
    _check_unique_outputs(images)
    if not images:
        raise InputError(f"{input_path}: no images found (NIfTI or NRRD{', matching ' + ' '.join(include) if include else ''})")
    return images


def read_file_list(list_path: Path) -> List[Path]:
    """Paths from a text file, one a line (blank lines and # comments ignored), relative to the list's folder."""
    if split_extension(list_path.name)[1]:
        raise InputError(f"{list_path}: batch takes a dataset folder or a text file listing images, not one image (use `softseg segment`)")
    try:
        lines = list_path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{list_path}: cannot read the file list ({error})") from None
    paths, first_lines = [], {}
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        path = Path(line) if os.path.isabs(line) else list_path.parent / line
        if not split_extension(path.name)[1]:
            raise InputError(f"{list_path}:{number}: {line} is not a NIfTI or NRRD file name")
        first = first_lines.setdefault(os.path.normpath(os.path.abspath(path)), number)
        if first != number:
            raise InputError(f"{list_path}:{number}: {line} is listed twice (also on line {first}): list each image once")
        paths.append(path)
    return paths


def _check_unique_outputs(images: Sequence[SourceImage]) -> None:
    seen: Dict[tuple, str] = {}
    for image in images:
        key = (image.output_dir, image.stem)
        if key in seen:
            raise InputError(f"{image.path} and {seen[key]} would write the same outputs: rename one or use --include")
        seen[key] = image.path


def default_output_dir(input_path) -> Path:
    """INPUT/derivatives/softseg for a folder; beside the list for a file list."""
    input_path = Path(input_path)
    base = input_path if input_path.is_dir() else input_path.parent
    return base / "derivatives" / "softseg"
