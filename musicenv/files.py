"""Safe output files: the one atomic writer, output checks made before any work, plain
names, and the rule that shipped files are read-only to the code.

* :func:`write_atomically` writes a file all at once or not at all (a temporary file
  in the target's directory, then ``os.replace``); every writer of the project goes
  through it (MIDI, MusicXML, PNG, WAV, JSON, YAML, checkpoints, caches).
* :func:`staged_folder` does the same for a folder of files (a run directory, a
  study): filled in a temporary sibling, renamed into place when complete.
* :func:`check_writable` (a file) and :func:`check_out_dir` (a folder, created if
  missing) say *before* a long job starts whether its output can be written.
* :func:`check_plain_name` accepts only names that stay inside their folder
  (no ``/``, no ``..``).
* :func:`check_not_shipped` refuses to write over a file inside the installed
  package (the shipped prior, GAN, n-gram model, hyperparameters) without ``force``.

Torch-free and numpy-free: ``import musicenv`` may import it.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import secrets
import shutil
from collections.abc import Callable, Iterator

__all__ = ["OutputPathError", "ShippedFileError", "write_atomically", "write_text", "staged_folder", "check_file_target",
           "check_writable", "check_out_dir", "check_plain_name", "check_not_shipped", "is_shipped", "PACKAGE_ROOTS"]


class OutputPathError(ValueError):
    """An output name or path would leave its folder, or is not a plain name."""


class ShippedFileError(PermissionError):
    """A command was about to write over a file shipped inside the package."""


#: Top-level folders of the installed project whose files are shipped (read-only to the code).
PACKAGE_ROOTS: tuple[pathlib.Path, ...] = tuple(
    pathlib.Path(__file__).resolve().parent.parent / name for name in ("musicenv", "agents", "rewards", "experiments"))

_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")


def check_writable(path: str | os.PathLike, what: str = "file") -> pathlib.Path:
    """Return ``path`` as a Path if a file can be written there, else raise.

    Raises ``IsADirectoryError`` if ``path`` is an existing directory,
    ``FileNotFoundError`` if its parent directory does not exist,
    ``NotADirectoryError`` if the parent is not a directory and
    ``PermissionError`` if the parent is not writable. Each message names the
    path and what to do about it.
    """
    target = pathlib.Path(path).expanduser()
    if target.is_dir():
        raise IsADirectoryError(
            f"cannot write the {what} to {str(target)!r}: that path is an existing directory; "
            f"give a file path instead, e.g. {str(target / ('composition' + (target.suffix or '.out')))!r}"
        )
    parent = target.parent
    if not parent.exists():
        raise FileNotFoundError(
            f"cannot write the {what} to {str(target)!r}: the directory {str(parent)!r} does not exist; "
            "create it first (e.g. os.makedirs) or choose an existing directory"
        )
    if not parent.is_dir():
        raise NotADirectoryError(
            f"cannot write the {what} to {str(target)!r}: {str(parent)!r} is not a directory"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(
            f"cannot write the {what} to {str(target)!r}: the directory {str(parent)!r} is not writable"
        )
    return target


def check_out_dir(out_dir: str | os.PathLike, what: str = "output folder") -> pathlib.Path:
    """The folder as a Path, if it is or can become a writable directory; else raise.

    Creates nothing. Raises ``NotADirectoryError`` if it (or an ancestor) exists as
    a file, ``PermissionError`` if it, or the nearest existing ancestor it would be
    created in, is not writable.
    """
    out = pathlib.Path(out_dir).expanduser()
    if out.exists():
        if not out.is_dir():
            raise NotADirectoryError(f"{what} {str(out)!r} exists and is not a directory; "
                                     "give a folder path (it is created if missing)")
        if not os.access(out, os.W_OK | os.X_OK):
            raise PermissionError(f"{what} {str(out)!r} is not writable")
        return out
    ancestor = out.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise NotADirectoryError(f"cannot create {what} {str(out)!r}: {str(ancestor)!r} is a file")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot create {what} {str(out)!r}: {str(ancestor)!r} is not writable")
    return out


def check_file_target(path: str | os.PathLike, what: str = "file") -> pathlib.Path:
    """As :func:`check_writable`, but the parent folder may be missing if it can be
    created (:func:`check_out_dir`). Creates nothing."""
    target = pathlib.Path(path).expanduser()
    if target.is_dir():
        return check_writable(target, what)  # raises IsADirectoryError
    check_out_dir(target.parent, what=f"folder of the {what}")  # the atomic rename needs the folder writable
    return target


def write_atomically(path: str | os.PathLike, write: Callable[[pathlib.Path], object],
                     *, what: str = "file") -> pathlib.Path:
    """Write a file all at once or not at all, and return its path.

    Checks ``path`` with :func:`check_writable`, calls ``write(tmp)`` to write a
    temporary file in the same directory (same suffix as ``path``, so
    suffix-sniffing writers behave), then ``os.replace``-s it onto ``path``. A
    reader never sees a half-written file, an existing file survives a failed
    write, and the temporary file is removed on any error.
    """
    target = check_writable(path, what)
    # Same directory as the target: os.replace is only atomic within one file system.
    tmp = target.parent / f".{target.stem}.{secrets.token_hex(6)}.tmp{target.suffix}"
    try:
        write(tmp)
        if not tmp.is_file():
            raise OSError(f"writing the {what} {str(target)!r} produced no file")
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    return target


def write_text(path: str | os.PathLike, text: str, *, what: str | None = None) -> pathlib.Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`write_atomically`)."""
    return write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"),
                            what=what or pathlib.Path(path).name)


@contextlib.contextmanager
def staged_folder(final: str | os.PathLike, *, replace: bool = False,
                  tmp_name: str | None = None) -> Iterator[pathlib.Path]:
    """Write a folder all at once or not at all: yields a new temporary sibling of
    ``final`` (named ``tmp_name``, default a hidden random name) to fill; when the block
    ends without error it is renamed onto ``final``. An absent or empty ``final`` is
    replaced; a non-empty one only with ``replace`` (it is removed first), otherwise
    ``OSError`` (directory not empty) and ``final`` stays as it was. On any error the
    temporary folder is removed."""
    final = pathlib.Path(final)
    tmp = final.parent / (tmp_name or f".{final.name}.{secrets.token_hex(4)}.tmp")
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if final.exists():
            if replace and any(final.iterdir()):
                shutil.rmtree(final)
            else:
                final.rmdir()  # OSError if it holds anything
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_plain_name(name: object, what: str = "name") -> str:
    """``name`` if it is a plain name (letters, digits, ``_ . + -``, not starting with
    ``.`` or ``-``), so a file or folder made from it stays in its folder; else raise
    :class:`OutputPathError` saying what is accepted."""
    if not isinstance(name, str) or not _PLAIN_NAME.match(name) or name in (".", ".."):
        raise OutputPathError(f"{what} {name!r} is not a plain name; use letters, digits, '_', '.', '+' or '-' "
                              "(not starting with '.' or '-'), so its files stay in their folder")
    return name


def is_shipped(path: str | os.PathLike) -> bool:
    """Whether ``path`` lies inside the installed package (a shipped file)."""
    resolved = pathlib.Path(path).expanduser().resolve()
    return any(resolved == root or root in resolved.parents for root in PACKAGE_ROOTS)


def check_not_shipped(path: str | os.PathLike, *, force: bool = False, flag: str = "--out") -> pathlib.Path:
    """Raise :class:`ShippedFileError` if ``path`` is an existing file inside the
    installed package and ``force`` is not set. New files in the package are allowed
    (a maintainer shipping a new model); replacing one needs ``force``."""
    target = pathlib.Path(path).expanduser()
    if not force and target.exists() and is_shipped(target):
        raise ShippedFileError(f"{flag} {str(target)!r} is a file shipped with musicenv; writing over it would "
                               "change what every user of the package loads. Choose another path (e.g. under "
                               "runs/), or pass --force if you are updating the shipped file on purpose")
    return target
