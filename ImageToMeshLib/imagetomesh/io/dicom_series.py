"""Which DICOM series a folder gives, read where its slices lie.

A folder of one series gives it; a folder of several (a study exported at once: scout, reconstructions) gives
its largest, and a warning names it and the others; a folder that holds none itself but one below it that does
(an export with a folder per patient, study and series) gives that one's (:func:`series_folders`), and with
several below it each is listed; a zip archive of any of these is read as the folder (:func:`read_series_zip`).
What ITK stacked is then put where its slices say they lie (:mod:`imagetomesh.io.dicom_geometry`) by
:meth:`SeriesRead.placed`, outside the block that keeps ITK's console output quiet, so its warnings are seen.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk

from imagetomesh.errors import InputError
from imagetomesh.io.dicom_geometry import SeriesSlices, regular_series
from imagetomesh.io.inputs import IMAGE_HINT
from imagetomesh.io.native import short_itk_message

#: Folders looked at below a folder that holds no DICOM series itself (:func:`series_folders`).
MAX_SUBFOLDERS = 2000
#: Folders named in a message that lists them.
LISTED_FOLDERS = 5
#: A zip archive is not unpacked beyond this many bytes (a whole-body CT series is about 1 GB).
MAX_ZIP_BYTES = 16 * 10**9


@dataclass(frozen=True)
class SeriesRead:
    """The series read from a folder: ``image`` as ITK stacked it, ``slices`` where they say they lie (None when
    they do not say), and ``notes`` for the user about the choice of series (each a warning of :meth:`placed`)."""

    image: sitk.Image
    slices: SeriesSlices | None
    notes: tuple[str, ...] = ()

    def placed(self, name: str, labels: bool = False) -> sitk.Image:
        """The series with its slices where they lie (:func:`regular_series`), after a warning for each note."""
        for note in self.notes:
            warnings.warn(note, stacklevel=3)
        if self.slices is None:
            return self.image
        return regular_series(self.image, self.slices, name, labels)


def read_series_folder(folder: Path, shown: str | None = None) -> SeriesRead:
    """The largest series in ``folder`` (or, when it holds none itself, in the one folder below it that holds
    series: :func:`series_folders`) as ITK stacks it, where its slices say they lie, and what the user should be
    told about the choice. ``shown``: how messages name ``folder`` (default ``folder <path>``).

    Raises:
        InputError: no series in or below the folder, several folders below it with series, or a series ITK
            cannot read."""
    shown = shown or f"folder {folder}"
    notes: list[str] = []
    series = _folder_series(folder, shown)
    if not series:
        below = series_folders(folder)
        if not below:
            raise InputError(f"{shown} holds no DICOM series; {IMAGE_HINT}")
        if len(below) > 1:
            listed = ", ".join(
                f"{p.relative_to(folder)} ({max(map(len, found))} slices)" for p, found in below[:LISTED_FOLDERS]
            )
            more = f" and {len(below) - LISTED_FOLDERS} more" if len(below) > LISTED_FOLDERS else ""
            raise InputError(
                f"{shown} holds no DICOM series itself, and {len(below)} folders below it do: {listed}{more}; "
                "give the folder of the series to read"
            )
        notes.append(f"{shown} holds no DICOM series itself: read the one in {below[0][0].relative_to(folder)}")
        shown = f"{shown}, {below[0][0].relative_to(folder)},"
        series = below[0][1]
    best = max(series, key=len)  # the first of the largest
    if len(series) > 1:
        others = ", ".join(series_description(files[0], len(files)) for files in series if files is not best)
        notes.append(
            f"{shown} holds {len(series)} DICOM series; read the largest, {series_description(best[0], len(best))}; "
            f"not read: {others} (give the folder of one series to choose it)"
        )
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(best)
    reader.MetaDataDictionaryArrayUpdateOn()  # each slice's own position and orientation
    try:
        image = reader.Execute()
    except RuntimeError as err:
        raise InputError(f"could not read the DICOM series in {shown}: {short_itk_message(err)}") from None
    return SeriesRead(image, SeriesSlices.of_reader(reader, len(best)), tuple(notes))


def read_series_zip(path: Path) -> SeriesRead:
    """:func:`read_series_folder` of a zip archive (a DICOM export as it is often sent), unpacked into a
    temporary folder that is removed before returning (the series is in memory by then).

    Raises:
        InputError: not a zip archive, one that unpacks to more than :data:`MAX_ZIP_BYTES`, or what
            :func:`read_series_folder` raises."""
    import tempfile
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            size = sum(member.file_size for member in archive.infolist())
            if size > MAX_ZIP_BYTES:
                raise InputError(
                    f"archive {path} unpacks to {size / 1e9:.1f} GB, more than {MAX_ZIP_BYTES / 1e9:.0f} GB; "
                    "unpack it yourself and give the folder of the series"
                )
            with tempfile.TemporaryDirectory(prefix="imagetomesh-zip-") as unpacked:
                archive.extractall(unpacked)  # member names made safe by zipfile (no absolute paths, no ..)
                return read_series_folder(Path(unpacked), shown=f"archive {path}")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError) as err:
        raise InputError(f"archive {path} cannot be unpacked ({err}); give the folder of the DICOM series") from None


def _folder_series(folder: Path | str, shown: str) -> list[tuple[str, ...]]:
    """The files of each DICOM series directly in ``folder`` (GDCM's grouping and slice order), in GDCM's order."""
    try:
        return [
            tuple(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), i))
            for i in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
        ]
    except RuntimeError as err:
        raise InputError(f"could not scan {shown} for DICOM: {short_itk_message(err)}") from None


def series_folders(folder: Path, limit: int = MAX_SUBFOLDERS) -> list[tuple[Path, list[tuple[str, ...]]]]:
    """The folders below ``folder`` (not itself; hidden ones and links skipped; at most ``limit`` looked at, in
    name order) that hold a DICOM series, each with the files of its series (:func:`_folder_series`)."""
    found = []
    for count, (root, subfolders, files) in enumerate(os.walk(folder)):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        if count >= limit:
            break
        if Path(root) == Path(folder) or not files:
            continue
        try:
            series = _folder_series(root, root)
        except InputError:
            continue
        if series:
            found.append((Path(root), series))
    return found


def series_description(first_file: str, count: int) -> str:
    """A series in words for a message: its SeriesDescription (0008,103E), read from ``first_file``'s header
    when it has one, and its ``count`` of files: ``'CT Head 2.5 mm' (150 slices)``."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(first_file)
    described = ""
    try:
        reader.ReadImageInformation()
        if reader.HasMetaDataKey("0008|103e"):
            described = reader.GetMetaData("0008|103e").strip()
    except RuntimeError:
        pass
    slices = f"{count} slice{'s' if count != 1 else ''}"
    return f"'{described}' ({slices})" if described else slices
