"""WebDataset layout: ``.tar`` shards whose members sharing a key make one sample.

Owns: finding shards (DATA itself, or ``*.tar`` up to three folders below it), listing their
members with the standard library's ``tarfile`` without extracting anything, grouping
members into samples (key = the member path up to the first dot of its file name, as
``webdataset`` does: ``faces/000123.jpg`` and ``faces/000123.json`` are sample
``faces/000123``), reading labels from each sample's ``.json`` (and ``.cls``), the split
from the shard path, and the ``ImageStore`` that reads any subset of images by byte range.
Refuses members that could be path tricks (absolute names, ``..``, links, devices), declared
sizes beyond the limits or the shard, and duplicate keys. Must not decode images.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from audit.data._common import (
    find_files,
    safe_member_file,
    show_list,
    split_from_path,
    typed_label_columns,
)
from audit.data.dataset import Dataset, ImageStore, Layout
from audit.errors import DataError

SUFFIX = ".tar"
#: Member extensions read as the sample's image (lower case, as ``webdataset`` decodes).
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
LABELS_EXTENSION = "json"
CLASS_EXTENSION = "cls"
CLASS_COLUMN = "class"
SPLIT_KEY = "split"
#: Largest member accepted: an encoded image (or label file) declaring more is refused
#: before anything is read, as a tar bomb or a corrupt header.
MAX_MEMBER_BYTES = 256 << 20
#: Largest ``.json``/``.cls`` member: labels are a few hundred bytes.
MAX_LABEL_BYTES = 1 << 20
#: Encoded bytes per batch handed to the decoder.
_BATCH_BYTES = 64 << 20


def detect(path: Path) -> bool:
    """Whether DATA is a ``.tar`` shard or a folder with shards up to three levels below.

    Parameters
    ----------
    path : Path
        DATA, resolved.

    Returns
    -------
    bool
    """
    if path.is_file():
        return path.suffix.lower() == SUFFIX
    return bool(find_files(path, SUFFIX))


@dataclass
class _Sample:
    shard: int
    image: tuple[int, int] | None = None  # (offset, size) of the image member
    image_name: str = ""
    labels: dict[str, object] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)


def _refuse(rel: str, name: str, why: str, fix: str) -> DataError:
    return DataError(f"Shard {rel!r} has member {name!r}, which {why}. {fix}")


def _list_shard(
    path: Path, rel: str, s: int, samples: dict[str, _Sample], where: dict[str, str]
) -> None:
    """Add the samples of one shard to ``samples`` (key → sample), checking every member."""
    size = path.stat().st_size
    try:
        with path.open("rb") as fileobj, tarfile.open(fileobj=fileobj, mode="r:") as tar:
            while True:
                member = tar.next()
                if member is None:
                    break
                tar.members.clear()  # keep only this reader's compact records in memory
                _add_member(tar, member, rel, s, size, samples, where)
    except tarfile.ReadError as e:
        raise DataError(
            f"Cannot read shard {rel!r} in DATA as an uncompressed tar archive ({e}); it is "
            "truncated, corrupt or compressed. WebDataset shards are plain .tar files: "
            "decompress it (e.g. gunzip) or re-write it, or move it out of DATA."
        ) from e
    except OSError as e:
        raise DataError(
            f"Cannot read shard {rel!r} in DATA ({type(e).__name__}: {e.strerror or e}); check "
            "that it exists and is readable."
        ) from e


def _add_member(
    tar: tarfile.TarFile,
    m: tarfile.TarInfo,
    rel: str,
    s: int,
    shard_size: int,
    samples: dict[str, _Sample],
    where: dict[str, str],
) -> None:
    name = m.name
    if m.isdir():
        return
    if not m.isreg() or m.issparse():
        kind = (
            "is a symbolic link"
            if m.issym()
            else "is a hard link"
            if m.islnk()
            else "is a device or FIFO"
            if (m.isdev())
            else "is not a regular file"
        )
        raise _refuse(
            rel,
            name,
            kind,
            "A WebDataset shard holds only regular files; re-write the shard with the files "
            "themselves (tar without links: tar --dereference), or move it out of DATA.",
        )
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or ".." in parts or (len(parts[0]) == 2 and parts[0][1] == ":"):
        raise _refuse(
            rel,
            name,
            "has an absolute path or '..' (a path trick)",
            "Member names must be relative without '..'; re-write the shard, or move it out of "
            "DATA.",
        )
    if m.size > MAX_MEMBER_BYTES or m.offset_data + m.size > shard_size:
        why = (
            f"declares {m.size} bytes, more than the limit of {MAX_MEMBER_BYTES}"
            if m.size > MAX_MEMBER_BYTES
            else f"declares {m.size} bytes at offset {m.offset_data}, past the end of the "
            f"{shard_size}-byte shard"
        )
        raise _refuse(
            rel,
            name,
            why + " (a tar bomb, or a truncated or corrupt shard)",
            "Re-write or re-download the shard, or move it out of DATA.",
        )
    clean = "/".join(p for p in parts if p not in ("", "."))
    head, _, base = clean.rpartition("/")
    if base.startswith("."):
        return  # hidden files (e.g. macOS ._ resource forks) belong to no sample
    stem, dot, ext = base.partition(".")
    key = f"{head}/{stem}" if head else stem
    ext = ext.lower()
    sample = samples.get(key)
    if sample is None:
        sample = samples[key] = _Sample(shard=s)
        where[key] = rel
    elif sample.shard != s:
        raise DataError(
            f"Sample key {key!r} appears in shard {where[key]!r} and again in shard {rel!r}; "
            "keys must be unique across shards (webdataset's ShardWriter numbers them so). "
            "Remove the duplicated shard, or re-write the shards with unique keys."
        )
    if ext in sample.seen or (ext in IMAGE_EXTENSIONS and sample.image is not None):
        what = "image" if ext in IMAGE_EXTENSIONS else f".{ext} file"
        raise DataError(
            f"Shard {rel!r} holds sample {key!r} twice (member {name!r} repeats its {what}); "
            "each key needs exactly one image and at most one file of each kind. Re-write the "
            "shard without the duplicate."
        )
    sample.seen.add(ext)
    if ext in IMAGE_EXTENSIONS:
        sample.image, sample.image_name = (m.offset_data, m.size), name
    elif ext in (LABELS_EXTENSION, CLASS_EXTENSION):
        sample.labels.update(_read_labels(tar, m, rel, key, ext))


def _read_labels(
    tar: tarfile.TarFile, m: tarfile.TarInfo, rel: str, key: str, ext: str
) -> dict[str, object]:
    if m.size > MAX_LABEL_BYTES:
        raise _refuse(
            rel,
            m.name,
            f"declares {m.size} bytes, more than the {MAX_LABEL_BYTES} accepted for a label file",
            "Labels are small JSON objects; re-write the shard.",
        )
    f = tar.extractfile(m)  # a view of the shard's bytes: nothing is written to disk
    data = f.read() if f is not None else b""
    text = data.decode("utf-8", errors="replace").strip()
    if ext == CLASS_EXTENSION:
        try:
            return {CLASS_COLUMN: int(text)}
        except ValueError:
            raise DataError(
                f"Member {m.name!r} of shard {rel!r} holds {text[:40]!r}; a .cls file holds the "
                "sample's class as one integer (0..K-1). Fix it, or remove the member."
            ) from None
    try:
        value = json.loads(text)
    except ValueError as e:
        raise DataError(
            f"Member {m.name!r} of shard {rel!r} is not valid JSON ({e}); a sample's .json "
            'holds an object of labels ({"Smiling": 1, "Male": 0}). Fix or remove it.'
        ) from e
    if not isinstance(value, dict):
        raise DataError(
            f"Member {m.name!r} of shard {rel!r} holds a JSON {type(value).__name__}, not an "
            'object; write the labels as {"Smiling": 1, "Male": 0}.'
        )
    return {k: v for k, v in value.items() if isinstance(k, str)}


def read_webdataset(path: Path) -> Dataset:
    """Read WebDataset shards: the samples and their labels now, images later by byte range.

    Parameters
    ----------
    path : Path
        DATA, resolved: a ``.tar`` shard, or a folder of them (every ``*.tar`` up to three
        folders below, sorted by path).

    Returns
    -------
    Dataset
        ``layout="webdataset"``; ids are the sample keys (unique across shards); every key
        of the samples' ``.json`` whose values are all integers or booleans is a label
        column (others, such as captions, are not labels), ``.cls`` gives column
        ``"class"``; all are default targets, no default groups. The split comes from a
        ``"split"`` key of the ``.json`` files, else the shard paths (``train-000000.tar``,
        ``test/0000.tar``), else there is none.

    Raises
    ------
    DataError
        Unreadable, compressed or truncated shards; link, device, absolute or ``..``
        members; members declaring more than ``MAX_MEMBER_BYTES`` or past the shard's end;
        duplicate keys; samples without an image or with two; bad or missing labels; shards
        that link outside DATA.
    """
    root = path.parent if path.is_file() else path
    files = [path] if path.is_file() else find_files(path, SUFFIX)
    rels = [safe_member_file(root, f, what="shard") for f in files]
    samples: dict[str, _Sample] = {}
    where: dict[str, str] = {}
    for s, (f, rel) in enumerate(zip(files, rels, strict=True)):
        _list_shard(f, rel, s, samples, where)
    if not samples:
        raise DataError(
            f"The shards of DATA ({root}) hold no samples; a WebDataset shard holds members "
            "like 000001.jpg and 000001.json. Check the files."
        )
    keys = list(samples)
    no_image = [k for k in keys if samples[k].image is None]
    if no_image:
        raise DataError(
            f"{len(no_image)} sample(s) of the shards in DATA have no image member "
            f"(.{', .'.join(IMAGE_EXTENSIONS)}): {show_list(no_image)} (in shard "
            f"{where[no_image[0]]!r}). Add the images, or remove those members."
        )
    records = [samples[k].labels for k in keys]

    def at(i: int) -> str:
        return f"sample {keys[i]!r} of shard {where[keys[i]]!r}"

    source = "the shards' .json/.cls members"
    columns = typed_label_columns(records, skip=(SPLIT_KEY,), source=source, where=at)
    if not columns:
        raise DataError(
            "The samples of the shards in DATA have no integer labels; each sample needs a "
            '.json member with an object of integer or boolean labels ({"Smiling": 1, '
            '"Male": 0}) or a .cls member with its class.'
        )
    splits = _splits(records, keys, where, rels, at)
    store = TarStore(
        files,
        rels,
        np.asarray([samples[k].shard for k in keys], dtype=np.int64),
        np.asarray([samples[k].image[0] for k in keys], dtype=np.int64),  # type: ignore[index]
        np.asarray([samples[k].image[1] for k in keys], dtype=np.int64),  # type: ignore[index]
        [samples[k].image_name for k in keys],
    )
    return Dataset(
        root=root,
        layout="webdataset",
        ids=np.asarray(keys, dtype=str),
        columns=columns,
        splits=splits,
        default_targets=tuple(columns),
        default_groups=(),
        class_names={},
        paths=None,
        array=None,
        store=store,
    )


def _splits(
    records: list[dict[str, object]],
    keys: list[str],
    where: dict[str, str],
    rels: list[str],
    at: Callable[[int], str],
) -> np.ndarray | None:
    """Splits from the samples' ``"split"`` keys, else from the shard paths."""
    with_split = [SPLIT_KEY in r for r in records]
    if any(with_split):
        if not all(with_split):
            i = with_split.index(False)
            raise DataError(
                f"The .json of {at(i)} has no {SPLIT_KEY!r} while others do; give every sample "
                "its split, or none."
            )
        bad = [
            i for i, r in enumerate(records) if not r[SPLIT_KEY] or type(r[SPLIT_KEY]) is not str
        ]
        if bad:
            raise DataError(
                f"The {SPLIT_KEY!r} of {at(bad[0])} is {records[bad[0]][SPLIT_KEY]!r}; it must "
                "be a split name (train, val, test)."
            )
        return np.asarray([r[SPLIT_KEY] for r in records], dtype=str)
    named = {rel: split_from_path(rel, source="DATA's shards") for rel in rels}
    if all(v is None for v in named.values()):
        return None
    unnamed = [r for r, v in named.items() if v is None]
    if unnamed:
        raise DataError(
            f"Some shards of DATA name a split in their path and {len(unnamed)} do not: "
            f"{show_list(unnamed)}. Name every shard's split (train-000000.tar, "
            "test/000000.tar), add a 'split' key to the .json files, or pass one split's shards."
        )
    return np.asarray([named[where[k]] for k in keys], dtype=str)


class TarStore(ImageStore):
    """Encoded images inside tar shards, read by byte range (nothing is extracted).

    Parameters
    ----------
    files : list of Path
        The shards.
    rels : list of str
        Their paths relative to DATA, for messages.
    shard, offset, size : numpy.ndarray
        Per dataset row: the shard index, and the byte offset and size of the image member.
    names : list of str
        Per row, the image member's name, for messages.
    """

    def __init__(
        self,
        files: list[Path],
        rels: list[str],
        shard: np.ndarray,
        offset: np.ndarray,
        size: np.ndarray,
        names: list[str],
    ) -> None:
        self.files, self.rels = files, rels
        self.shard, self.offset, self.size, self.names = shard, offset, size, names

    def where(self, row: int) -> str:
        """Say which shard and member hold ``row``'s image."""
        return f"shard {self.rels[int(self.shard[row])]!r} member {self.names[row]!r}"

    def read(self, rows: np.ndarray) -> Iterator[list[tuple[int, bytes | None]]]:
        """Yield the images of ``rows`` shard by shard in file order, ≤ 64 MiB per batch."""
        rows = np.asarray(rows, dtype=np.int64)
        order = np.lexsort((self.offset[rows], self.shard[rows]))
        start = 0
        while start < len(order):
            s = int(self.shard[rows[order[start]]])
            stop = start
            while stop < len(order) and self.shard[rows[order[stop]]] == s:
                stop += 1
            try:
                with self.files[s].open("rb") as f:
                    batch: list[tuple[int, bytes | None]] = []
                    held = 0
                    for k in order[start:stop]:
                        row = rows[k]
                        f.seek(int(self.offset[row]))
                        data = f.read(int(self.size[row]))
                        if len(data) != self.size[row]:
                            raise OSError(f"member {self.names[row]!r} ends past the file's end")
                        batch.append((int(k), data))
                        held += len(data)
                        if held >= _BATCH_BYTES:
                            yield batch
                            batch, held = [], 0
                    if batch:
                        yield batch
            except OSError as e:
                raise DataError(
                    f"Cannot read the images of shard {self.rels[s]!r} in DATA ({e}); it changed "
                    "or became unreadable since it was listed. Re-download it."
                ) from e
            start = stop


LAYOUT = Layout(
    name="webdataset",
    summary="WebDataset .tar shards (members sharing a key: an image plus .json labels)",
    detect=detect,
    read=read_webdataset,
    file_kind="a WebDataset .tar shard",
)
