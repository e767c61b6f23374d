"""Jane Austen's six novels from the Debian package ``r-cran-janeaustenr``, read without R.

The package keeps the novels as R character vectors (one element per line, NA for an empty line) in an R
*lazy-load database*: ``data/Rdata.rdx`` (a gzip-compressed serialization of the index) and ``data/Rdata.rdb``
(the objects, each a compressed serialization). :func:`read_lazyload_db` decodes it in pure Python:

* **Serialization** (R's XDR format): ``X\\n``, then big-endian int32 format version (2 or 3), writer R version and
  minimum R version (version 3 adds the native encoding, an int32 length and its bytes); then one object, written
  recursively as an int32 flags word (type = ``flags & 0xFF``, has-attributes bit 9, has-tag bit 10) and a
  payload that depends on the type.
* **Index**: a named list whose element ``variables`` maps each object name to ``(offset, length)`` in the ``.rdb``.
* **Blobs**: ``rdb[offset:offset + length]`` is a 4-byte big-endian uncompressed length, then either a compression
  type byte (``Z`` zlib, ``2`` bzip2, ``X`` xz, ``0`` none) and the compressed bytes, or (old files) zlib data
  directly.

Get the package without installing R (it ``Depends: r-base-core``)::

    apt-get download r-cran-janeaustenr && dpkg -x r-cran-janeaustenr_*.deb DIR
    # data.root=DIR/usr/lib/R/site-library/janeaustenr, or data.download=true does both into ~/.cache/zoo

:class:`AustenDataModule` splits every novel into chapters (one document each): the five novels other than
*Persuasion* train; the first half of *Persuasion*'s chapters validates, the second half tests.
"""

from __future__ import annotations

import bz2
import glob
import gzip
import itertools
import lzma
import os
import re
import shutil
import struct
import subprocess
import tempfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tasks.data.text import Document, TextDataModule, cache_root, file_stat
from zoo.errors import DatasetNotFoundError
from zoo.registries import DATA

PACKAGE = "r-cran-janeaustenr"
DEBIAN_DIR = "/usr/lib/R/site-library/janeaustenr"
PACKAGE_SUBDIR = "usr/lib/R/site-library/janeaustenr"  # inside a ``dpkg -x`` tree
# R object name → title, in publication order.
BOOKS = {
    "sensesensibility": "Sense & Sensibility",
    "prideprejudice": "Pride & Prejudice",
    "mansfieldpark": "Mansfield Park",
    "emma": "Emma",
    "northangerabbey": "Northanger Abbey",
    "persuasion": "Persuasion",
}
HELD_OUT = "persuasion"

# ------------------------------------------------------------------------------------------- R serialization
# SEXP types and the serialization's special codes (R's serialize.c)
SYMSXP, LISTSXP, CLOSXP, ENVSXP, PROMSXP, LANGSXP, SPECIALSXP, BUILTINSXP, CHARSXP = 1, 2, 3, 4, 5, 6, 7, 8, 9
LGLSXP, INTSXP, REALSXP, CPLXSXP, STRSXP, DOTSXP = 10, 13, 14, 15, 16, 17
VECSXP, EXPRSXP, RAWSXP, S4SXP = 19, 20, 24, 25
REFSXP, NILVALUE, GLOBALENV, UNBOUNDVALUE, MISSINGARG, BASENAMESPACE = 255, 254, 253, 252, 251, 250
NAMESPACESXP, PACKAGESXP, PERSISTSXP, EMPTYENV, BASEENV, ALTREP = 249, 248, 247, 242, 241, 238
NA_INTEGER = -(2**31)
# Singletons read as None: NULL, the empty / base / global environments, the unbound and missing markers.
_SINGLETONS = frozenset({NILVALUE, EMPTYENV, BASEENV, GLOBALENV, UNBOUNDVALUE, MISSINGARG, BASENAMESPACE})
_PAIRLISTS = (LISTSXP, CLOSXP, PROMSXP, LANGSXP, DOTSXP)


class RSymbol(str):
    """An R symbol (a name), as opposed to a character string."""


class RVector(list):
    """An R vector (logical, integer, double, complex, character, list, raw) with its ``attributes``.

    NA elements are ``None``. :meth:`named` pairs the elements with the ``names`` attribute.
    """

    def __init__(self, items: Sequence[Any] = (), rtype: int = VECSXP, attributes: dict[str, Any] | None = None):
        super().__init__(items)
        self.rtype = rtype
        self.attributes = attributes or {}

    def named(self) -> dict[str, Any]:
        names = self.attributes.get("names")
        if names is None:
            raise ValueError("the R vector has no names")
        return dict(zip(names, self))


class RPairlist(dict):
    """An R pairlist (also a call or a closure's parts): tag → value; untagged entries get their position."""

    def __init__(self, items: dict[Any, Any] | None = None, rtype: int = LISTSXP, attributes: dict | None = None):
        super().__init__(items or {})
        self.rtype = rtype
        self.attributes = attributes or {}


class _Reader:
    """Reads one XDR serialization; ``refs`` holds the objects that later ``REFSXP`` entries point back to."""

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.refs: list[Any] = []

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise ValueError(f"truncated R serialization: {n} bytes wanted at byte {self.pos} of {len(self.data)}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def i32(self) -> int:
        return struct.unpack(">i", self.take(4))[0]

    def length(self) -> int:
        n = self.i32()
        if n == -1:  # long vector: two int32 halves
            high, low = self.i32(), self.i32()
            n = (high << 32) + (low & 0xFFFFFFFF)
        return n

    def header(self) -> None:
        if bytes(self.take(2)) != b"X\n":
            raise ValueError("not an R XDR serialization (expected it to start with 'X\\n')")
        version = self.i32()
        self.i32(), self.i32()  # writer's R version, minimum R version
        if version == 3:
            self.take(self.i32())  # native encoding
        elif version != 2:
            raise ValueError(f"unsupported R serialization format version {version}")

    def strings(self) -> list[Any]:
        """The string vector of a namespace / package / persistent reference."""
        if self.i32() != 0:
            raise ValueError("malformed R string vector")
        return [self.item() for _ in range(self.i32())]

    def attributes(self, has_attr: bool) -> dict[str, Any]:
        if not has_attr:
            return {}
        attrs = self.item()
        return dict(attrs) if isinstance(attrs, dict) else {}

    def item(self) -> Any:
        flags = self.i32()
        kind = flags & 0xFF
        has_attr, has_tag = bool(flags & (1 << 9)), bool(flags & (1 << 10))
        if kind in _SINGLETONS:
            return None
        if kind == REFSXP:
            index = flags >> 8 or self.i32()
            return self.refs[index - 1]
        if kind in (PERSISTSXP, NAMESPACESXP, PACKAGESXP):
            value = self.strings()
            self.refs.append(value)
            return value
        if kind == SYMSXP:
            symbol = RSymbol(self.item() or "")
            self.refs.append(symbol)
            return symbol
        if kind == ENVSXP:
            env = RPairlist(rtype=ENVSXP)
            self.refs.append(env)
            self.i32()  # locked
            enclosure, frame, hashtab = self.item(), self.item(), self.item()
            env.update({"enclos": enclosure, "frame": frame, "hashtab": hashtab})
            env.attributes = self.attributes(True)
            return env
        if kind in _PAIRLISTS:
            return self.pairlist(kind, has_attr, has_tag)
        if kind == CHARSXP:
            n = self.i32()
            if n == -1:
                return None
            raw = bytes(self.take(n))
            latin1 = flags & (1 << 14) and not flags & (1 << 15)  # LATIN1_MASK (bit 2 of the levels), not UTF8
            return raw.decode("latin-1" if latin1 else "utf-8", errors="replace")
        if kind in (LGLSXP, INTSXP):
            n = self.length()
            values = struct.unpack(f">{n}i", self.take(4 * n))
            if kind == LGLSXP:
                items = [None if v == NA_INTEGER else bool(v) for v in values]
            else:
                items = [None if v == NA_INTEGER else v for v in values]
            return RVector(items, kind, self.attributes(has_attr))
        if kind == REALSXP:
            n = self.length()
            return RVector(struct.unpack(f">{n}d", self.take(8 * n)), kind, self.attributes(has_attr))
        if kind == CPLXSXP:
            n = self.length()
            parts = struct.unpack(f">{2 * n}d", self.take(16 * n))
            return RVector([complex(a, b) for a, b in zip(parts[::2], parts[1::2])], kind, self.attributes(has_attr))
        if kind == RAWSXP:
            n = self.length()
            return RVector(bytes(self.take(n)), kind, self.attributes(has_attr))
        if kind in (STRSXP, VECSXP, EXPRSXP):
            n = self.length()
            items = [self.item() for _ in range(n)]
            return RVector(items, kind, self.attributes(has_attr))
        if kind == ALTREP:
            return self.altrep()
        if kind in (SPECIALSXP, BUILTINSXP):  # a primitive function, by name
            return RSymbol(bytes(self.take(self.i32())).decode())
        if kind == S4SXP:
            return RPairlist(rtype=kind, attributes=self.attributes(has_attr))
        raise ValueError(f"unsupported R object type {kind} at byte {self.pos - 4}")

    def pairlist(self, kind: int, has_attr: bool, has_tag: bool) -> RPairlist:
        out = RPairlist(rtype=kind)
        while True:  # the CDR chain iteratively (long pairlists would overflow the recursion)
            attributes = self.attributes(has_attr)
            if not out.attributes:
                out.attributes = attributes
            tag = self.item() if has_tag else len(out)
            out[tag] = self.item()
            flags = self.i32()
            kind = flags & 0xFF
            if kind == NILVALUE:
                return out
            if kind not in _PAIRLISTS:
                self.pos -= 4
                out["..."] = self.item()  # an improper list: keep the tail
                return out
            has_attr, has_tag = bool(flags & (1 << 9)), bool(flags & (1 << 10))

    def altrep(self) -> Any:
        """The ALTREP classes R writes for plain data: compact sequences and wrappers."""
        info, state, attributes = self.item(), self.item(), self.item()
        name = next(iter(info.values())) if isinstance(info, dict) and info else None
        attributes = dict(attributes) if isinstance(attributes, dict) else {}
        if name == "compact_intseq":
            n, start, step = (int(v) for v in state)
            return RVector(range(start, start + n * step, step), INTSXP, attributes)
        if name == "compact_realseq":
            n, start, step = int(state[0]), state[1], state[2]
            return RVector([start + i * step for i in range(n)], REALSXP, attributes)
        if name and name.startswith("wrap_"):
            inner = state[0]
            if isinstance(inner, RVector):
                return RVector(inner, inner.rtype, {**inner.attributes, **attributes})
            return inner
        if name == "deferred_string":
            values = state[next(iter(state))] if isinstance(state, dict) else state
            return RVector([None if v is None else _format_number(v) for v in values], STRSXP, attributes)
        raise ValueError(f"unsupported R ALTREP class {name!r}")


def _format_number(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def unserialize(data: bytes) -> Any:
    """Decode one R XDR serialization (what ``serialize(x, NULL, xdr = TRUE)`` writes).

    Character vectors become :class:`RVector` of ``str`` (NA → ``None``), named lists :class:`RVector` whose
    :meth:`~RVector.named` gives a dict, pairlists :class:`RPairlist`, ``NULL`` ``None``.
    """
    reader = _Reader(data)
    reader.header()
    return reader.item()


def decompress_blob(blob: bytes) -> bytes:
    """A lazy-load database entry → the serialization it holds (4-byte length, type byte, compressed bytes)."""
    if len(blob) < 5:
        raise ValueError("R lazy-load entry shorter than its 5-byte header")
    size = struct.unpack(">I", blob[:4])[0]
    kind = blob[4:5]
    if kind == b"Z":
        out = zlib.decompress(blob[5:])
    elif kind == b"2":
        out = bz2.decompress(blob[5:])
    elif kind == b"X":
        out = lzma.decompress(blob[5:])
    elif kind == b"0":
        out = blob[5:]
    else:  # compress = TRUE (R's default for packages): zlib directly after the length
        out = zlib.decompress(blob[4:])
    if len(out) != size:
        raise ValueError(f"R lazy-load entry decompressed to {len(out)} bytes, its header says {size}")
    return out


def read_lazyload_db(prefix: str | os.PathLike, names: Sequence[str] | None = None) -> dict[str, Any]:
    """The objects of an R lazy-load database ``prefix.rdx`` + ``prefix.rdb`` (e.g. ``.../data/Rdata``).

    Args:
        prefix: the two files' path without the extension.
        names: the objects to decode (default: all).
    """
    prefix = Path(prefix)
    rdx, rdb = prefix.with_suffix(".rdx"), prefix.with_suffix(".rdb")
    raw_index = rdx.read_bytes()
    index = unserialize(gzip.decompress(raw_index) if raw_index[:2] == b"\x1f\x8b" else raw_index).named()
    variables = index["variables"].named()
    wanted = list(variables) if names is None else list(names)
    missing = [name for name in wanted if name not in variables]
    if missing:
        raise KeyError(f"{rdx} has no object {', '.join(missing)} (it has {', '.join(sorted(variables))})")
    out = {}
    with open(rdb, "rb") as handle:
        for name in wanted:
            offset, length = (int(v) for v in variables[name])
            handle.seek(offset)
            out[name] = unserialize(decompress_blob(handle.read(length)))
    return out


# ------------------------------------------------------------------------------------------- the package
def default_cache() -> Path:
    """Where ``data.download=true`` unpacks the package: ``~/.cache/zoo/janeaustenr`` (``$XDG_CACHE_HOME/zoo/…``)."""
    return cache_root() / "janeaustenr"


def _package_dir(candidate: Path) -> Path | None:
    """The ``janeaustenr`` folder given it, a ``dpkg -x`` tree above it, or its ``data`` folder."""
    for folder in (candidate, candidate / PACKAGE_SUBDIR, candidate.parent):
        if (folder / "data" / "Rdata.rdb").is_file() and (folder / "data" / "Rdata.rdx").is_file():
            return folder
    return None


def find_janeaustenr(root: str | os.PathLike | None = None) -> Path:
    """The installed ``janeaustenr`` package folder (holding ``data/Rdata.rdb``).

    Looks at ``root`` only, when given; otherwise at ``$ZOO_JANEAUSTENR``, the Debian location
    ``/usr/lib/R/site-library/janeaustenr`` and the download cache ``~/.cache/zoo/janeaustenr``. Each may be the
    package folder itself or a ``dpkg -x`` tree holding ``usr/lib/R/site-library/janeaustenr``.

    Raises:
        DatasetNotFoundError: with the commands that fetch it.
    """
    if root is not None:
        candidates = [Path(root).expanduser()]
    else:
        env = os.environ.get("ZOO_JANEAUSTENR")
        candidates = [Path(p).expanduser() for p in (env, DEBIAN_DIR) if p] + [default_cache()]
    for candidate in candidates:
        found = _package_dir(candidate)
        if found is not None:
            return found
    looked = ", ".join(str(c) for c in candidates)
    raise DatasetNotFoundError(
        f"Jane Austen's novels (Debian package {PACKAGE}) not found; looked in {looked}. Get them without R: "
        f"`apt-get download {PACKAGE} && dpkg -x {PACKAGE}_*.deb DIR`, then set "
        f"data.root=DIR/{PACKAGE_SUBDIR}; or set data.download=true to do both into {default_cache()}."
    )


def download_janeaustenr(directory: str | os.PathLike | None = None) -> Path:
    """``apt-get download r-cran-janeaustenr`` and ``dpkg -x`` it into ``directory`` (default: the cache).

    Returns the package folder. Needs ``apt-get`` and ``dpkg`` (Debian/Ubuntu) and access to an apt mirror.
    """
    target = Path(directory).expanduser() if directory is not None else default_cache()
    found = _package_dir(target)
    if found is not None:
        return found
    missing = [tool for tool in ("apt-get", "dpkg") if shutil.which(tool) is None]
    if missing:
        raise DatasetNotFoundError(
            f"data.download=true needs {' and '.join(missing)} (Debian/Ubuntu) to fetch {PACKAGE}; on another "
            f"system copy a janeaustenr package folder (R's site-library/janeaustenr) and set data.root to it."
        )
    destination = target / PACKAGE_SUBDIR  # the dpkg -x layout; nothing else under target is touched
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target, prefix=".download-") as tmp:
        for command in (["apt-get", "download", PACKAGE], None):
            if command is None:
                debs = sorted(glob.glob(os.path.join(tmp, f"{PACKAGE}_*.deb")))
                if not debs:
                    raise DatasetNotFoundError(f"apt-get download {PACKAGE} produced no .deb file in {tmp}")
                command = ["dpkg", "-x", debs[-1], os.path.join(tmp, "tree")]
            result = subprocess.run(command, cwd=tmp, capture_output=True, text=True)
            if result.returncode != 0:
                raise DatasetNotFoundError(
                    f"`{' '.join(command)}` failed (exit {result.returncode}): {result.stderr.strip()[-500:]}. "
                    f"Run `apt-get update` first if the package is unknown, or fetch it by hand: "
                    f"`apt-get download {PACKAGE} && dpkg -x {PACKAGE}_*.deb DIR`, then data.root=DIR/{PACKAGE_SUBDIR}."
                )
        destination.parent.mkdir(parents=True, exist_ok=True)
        if destination.exists():  # an incomplete earlier unpacking (it has no data/Rdata.rdb): set it aside
            os.replace(destination, os.path.join(tmp, "incomplete"))
        os.replace(os.path.join(tmp, "tree", PACKAGE_SUBDIR), destination)
    found = _package_dir(target)
    if found is None:
        raise DatasetNotFoundError(f"the unpacked {PACKAGE} in {target} lacks data/Rdata.rdb")
    return found


def read_austen(package_dir: str | os.PathLike) -> dict[str, str]:
    """``{book: text}`` for the six novels (keys of :data:`BOOKS`): lines joined by ``\\n``, NA lines empty."""
    objects = read_lazyload_db(Path(package_dir) / "data" / "Rdata", list(BOOKS))
    return {name: "\n".join(line or "" for line in objects[name]) for name in BOOKS}


_CHAPTER = re.compile(r"^\s*(CHAPTER|Chapter)\s+([IVXLC]+|\d+)\.?\s*$")  # a heading line: "CHAPTER IV", "Chapter 12"
_VOLUME = re.compile(r"^\s*(VOLUME|Volume)\s+([IVXLC]+|\d+)\.?\s*$")


def split_chapters(text: str) -> list[str]:
    """A novel's chapters, each from its heading (or the ``VOLUME`` heading just above it) to the next.

    The title page before the first chapter is kept with the first chapter; blank lines at either end of a chapter
    are dropped. A text without chapter headings is one chapter.
    """
    lines = text.split("\n")
    starts = []
    for i, line in enumerate(lines):
        if _CHAPTER.match(line):
            start = i
            j = i - 1
            while j >= 0 and not lines[j].strip():
                j -= 1
            if j >= 0 and _VOLUME.match(lines[j]):
                start = j
            starts.append(start)
    if not starts:
        return [text.strip("\n")]
    starts[0] = 0
    bounds = [*starts, len(lines)]
    return [("\n".join(lines[a:b])).strip("\n") for a, b in itertools.pairwise(bounds)]


@DATA.register("austen")
class AustenDataModule(TextDataModule):
    """Jane Austen's novels, one document per chapter, for language-model pretraining.

    Training: the chapters of *Sense & Sensibility*, *Pride & Prejudice*, *Mansfield Park*, *Emma* and *Northanger
    Abbey*; validation: the first half of *Persuasion*'s chapters; test: the second half. Read from the Debian
    package ``r-cran-janeaustenr`` with no R (see the module's docstring).

    Args:
        root: the ``janeaustenr`` package folder or a ``dpkg -x`` tree holding it (default: ``$ZOO_JANEAUSTENR``,
            ``/usr/lib/R/site-library/janeaustenr``, then ``~/.cache/zoo/janeaustenr``).
        download: when not found, ``apt-get download`` + ``dpkg -x`` the package into ``~/.cache/zoo/janeaustenr``.
        The others: as :class:`~tasks.data.text.TextDataModule`; ``max_docs`` / ``max_chars`` cap each split.
    """

    vocab_size: int = 4096
    fixed_arguments = (
        "files",
        "val_files",
        "test_files",
        "format",
        "text_field",
        "val_fraction",
        "test_fraction",
        "split_seed",
    )

    def __init__(
        self,
        root: str | None = None,
        download: bool = False,
        tokenizer: str = "bpe",
        vocab_size: int = 4096,
        seq_len: int = 512,
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        max_docs: int | None = None,
        max_chars: int | None = None,
        cache_dir: str | None = None,
        seed: int = 0,
        eval_windows: int | None = None,
    ) -> None:
        super().__init__(
            files=None,
            tokenizer=tokenizer,
            vocab_size=vocab_size,
            seq_len=seq_len,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            max_docs=max_docs,
            max_chars=max_chars,
            cache_dir=cache_dir,
            seed=seed,
            eval_windows=eval_windows,
        )
        self.root = root
        self.download = download

    def package_dir(self) -> Path:
        try:
            return find_janeaustenr(self.root)
        except DatasetNotFoundError:
            if not self.download:
                raise
        return download_janeaustenr(self.root)

    def prepare_data(self) -> None:
        if self.download:
            self.package_dir()
        super().prepare_data()

    def source_signature(self) -> dict[str, Any]:
        data = self.package_dir() / "data"
        files = [data / "Rdata.rdb", data / "Rdata.rdx"]
        return {
            "austen": [file_stat(p.resolve()) for p in files],
            "chapters": 1,
            "caps": [self.max_docs, self.max_chars],
        }

    def load_documents(self) -> dict[str, list[Document]]:
        books = read_austen(self.package_dir())
        chapters = {name: split_chapters(text) for name, text in books.items()}
        held_out = chapters[HELD_OUT]
        half = (len(held_out) + 1) // 2

        def docs(name: str, items: Sequence[str], first: int = 0) -> list[Document]:
            return [Document(f"{name}/{first + i + 1:02d}", text) for i, text in enumerate(items)]

        train = [doc for name in BOOKS if name != HELD_OUT for doc in docs(name, chapters[name])]
        splits = {
            "train": train,
            "val": docs(HELD_OUT, held_out[:half]),
            "test": docs(HELD_OUT, held_out[half:], half),
        }
        return {split: self.cap(documents) for split, documents in splits.items()}
