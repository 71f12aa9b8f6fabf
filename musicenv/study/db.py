"""The listening study's database: SQLite in WAL mode, with a schema version and migrations.

One file, ``study.sqlite`` in the study folder, holds everything a study needs:

========== =================================================================
table      rows
========== =================================================================
studies    one per study: name, creation time, settings (JSON), the HMAC secret
pieces     each piece: source, context (key, progression, meter, bars), tokens,
           chord track, seed, its WAV and PNG file names and their SHA-256
pairs      two pieces of one context that raters compare (``piece_a < piece_b``)
raters     an anonymous cookie id, an optional name, first seen
answers    one per (pair, rater): the piece on the left, the winner (NULL: no
           preference), optional 1-5 ratings of musicality and interest per
           piece, the time taken, a UTC timestamp
========== =================================================================

The schema version is SQLite's ``PRAGMA user_version``. :data:`MIGRATIONS` lists the
SQL that takes a database from version ``i`` to ``i + 1``; :func:`connect` applies the
missing ones in one transaction, so a database is either fully migrated or untouched.
A database written by a newer version of musicenv is refused, not modified.

Every write is its own ``BEGIN IMMEDIATE ... COMMIT`` transaction, and SQLite's WAL
journal with ``synchronous=FULL`` makes a committed answer survive the process being
killed (or the machine losing power) the moment :meth:`StudyDB.add_answer` returns.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import hmac
import json
import os
import secrets
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["StudyDB", "StudyDBError", "AnswerError", "connect", "SCHEMA_VERSION", "MIGRATIONS", "DB_NAME",
           "MEDIA_DIR", "PieceRow", "PairRow", "CHOICES", "file_sha256"]

DB_NAME = "study.sqlite"
MEDIA_DIR = "media"
#: What a rater may answer, as sent by the page: the left piece, the right one, or no preference.
CHOICES = ("left", "right", "none")
RATING_MIN, RATING_MAX = 1, 5  # inclusive: optional musicality / interest ratings

#: SQL taking the schema from version i to i + 1 (index i). Append, never edit.
MIGRATIONS: tuple[str, ...] = (
    # 0 -> 1: the study, its pieces, pairs, raters and answers.
    """
    CREATE TABLE studies (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        created_at TEXT NOT NULL,
        settings TEXT NOT NULL,
        secret TEXT NOT NULL
    );
    CREATE TABLE pieces (
        id INTEGER PRIMARY KEY,
        study_id INTEGER NOT NULL REFERENCES studies(id),
        source TEXT NOT NULL,
        context INTEGER NOT NULL,
        key TEXT NOT NULL,
        progression TEXT NOT NULL,
        meter TEXT NOT NULL,
        n_bars INTEGER NOT NULL,
        seed INTEGER NOT NULL,
        tokens TEXT NOT NULL,
        chords TEXT NOT NULL,
        wav TEXT NOT NULL,
        png TEXT NOT NULL,
        wav_sha256 TEXT NOT NULL,
        png_sha256 TEXT NOT NULL,
        UNIQUE (study_id, source, context)
    );
    CREATE TABLE pairs (
        id INTEGER PRIMARY KEY,
        study_id INTEGER NOT NULL REFERENCES studies(id),
        piece_a INTEGER NOT NULL REFERENCES pieces(id),
        piece_b INTEGER NOT NULL REFERENCES pieces(id),
        CHECK (piece_a < piece_b),
        UNIQUE (study_id, piece_a, piece_b)
    );
    CREATE TABLE raters (
        id INTEGER PRIMARY KEY,
        study_id INTEGER NOT NULL REFERENCES studies(id),
        cookie TEXT NOT NULL UNIQUE,
        name TEXT,
        created_at TEXT NOT NULL
    );
    CREATE TABLE answers (
        id INTEGER PRIMARY KEY,
        pair_id INTEGER NOT NULL REFERENCES pairs(id),
        rater_id INTEGER NOT NULL REFERENCES raters(id),
        left_piece INTEGER NOT NULL REFERENCES pieces(id),
        winner INTEGER REFERENCES pieces(id),
        answered_at TEXT NOT NULL,
        UNIQUE (pair_id, rater_id)
    );
    """,
    # 1 -> 2: optional ratings and the time a rater took; an index for "what is left for this rater".
    """
    ALTER TABLE answers ADD COLUMN musicality_a INTEGER CHECK (musicality_a BETWEEN 1 AND 5);
    ALTER TABLE answers ADD COLUMN musicality_b INTEGER CHECK (musicality_b BETWEEN 1 AND 5);
    ALTER TABLE answers ADD COLUMN interest_a INTEGER CHECK (interest_a BETWEEN 1 AND 5);
    ALTER TABLE answers ADD COLUMN interest_b INTEGER CHECK (interest_b BETWEEN 1 AND 5);
    ALTER TABLE answers ADD COLUMN elapsed_ms INTEGER CHECK (elapsed_ms >= 0);
    CREATE INDEX answers_by_rater ON answers (rater_id);
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


class StudyDBError(RuntimeError):
    """The study database cannot be opened, is not a study, is from a newer version, or a write failed."""


class AnswerError(ValueError):
    """An answer that cannot be stored. ``status`` is the HTTP status the web app returns."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class PieceRow:
    id: int
    source: str
    context: int
    key: str
    progression: str
    meter: str
    n_bars: int
    seed: int
    tokens: tuple[int, ...]
    chords: tuple[int, ...]
    wav: str
    png: str


@dataclass(frozen=True)
class PairRow:
    id: int
    piece_a: int
    piece_b: int


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            h.update(block)
    return h.hexdigest()


def connect(path: str | os.PathLike, *, create: bool = False, timeout: float = 5.0) -> sqlite3.Connection:
    """Open (``create=True``: create) the study database at ``path``, in WAL mode, migrated
    to :data:`SCHEMA_VERSION`.

    Raises :class:`StudyDBError` if the file is missing (and ``create`` is false), is not
    an SQLite database, was written by a newer musicenv (a higher schema version), or
    cannot be migrated; the file is left as it was in each case.
    """
    path = Path(path)
    if not create and not path.is_file():
        raise StudyDBError(f"no study database at {str(path)!r}; create the study first (musicenv study serve "
                           "STUDY_DIR --source ...)")
    if path.exists() and not path.is_file():
        raise StudyDBError(f"{str(path)!r} is not a file")
    if create and not path.parent.is_dir():
        raise StudyDBError(f"cannot create {str(path)!r}: the folder {str(path.parent)!r} does not exist")
    try:
        conn = sqlite3.connect(str(path), timeout=timeout, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as e:
        raise StudyDBError(f"cannot open study database {str(path)!r}: {e}") from e
    try:
        conn.row_factory = sqlite3.Row
        _check_version(conn, path)  # before anything writes: a refused file stays as it was
        conn.execute("PRAGMA foreign_keys = ON")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StudyDBError(f"cannot switch {str(path)!r} to WAL mode (journal_mode is {mode!r})")
        conn.execute("PRAGMA synchronous = FULL")
        _migrate(conn, path)
    except sqlite3.DatabaseError as e:
        conn.close()
        raise StudyDBError(f"{str(path)!r} is not a usable SQLite study database: {e}") from e
    except BaseException:
        conn.close()
        raise
    return conn


def _check_version(conn: sqlite3.Connection, path: Path) -> None:
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise StudyDBError(f"{str(path)!r} has schema version {version}, newer than this musicenv's "
                           f"{SCHEMA_VERSION}; upgrade musicenv to open it")
    if version == 0:
        tables = conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
        if tables:
            raise StudyDBError(f"{str(path)!r} is an SQLite database but not a musicenv study (it has tables "
                               "and no schema version)")


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version == SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        for step in range(version, SCHEMA_VERSION):
            for statement in _statements(MIGRATIONS[step]):
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException as e:
        conn.execute("ROLLBACK")
        if isinstance(e, sqlite3.Error):
            raise StudyDBError(f"migrating {str(path)!r} from schema version {version} failed: {e}") from e
        raise


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


class StudyDB:
    """A study's database (see the module doc). Use as a context manager or call :meth:`close`.

    ``path`` is the study folder or the ``.sqlite`` file itself.
    """

    def __init__(self, path: str | os.PathLike, *, create: bool = False, timeout: float = 5.0) -> None:
        path = Path(path)
        self.path = path / DB_NAME if path.is_dir() or (create and path.suffix != ".sqlite") else path
        self.folder = self.path.parent
        self.conn = connect(self.path, create=create, timeout=timeout)

    # -- plumbing ------------------------------------------------------------------------
    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> StudyDB:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; rolled back on any error, which is re-raised
        (SQLite errors as :class:`StudyDBError`)."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            raise StudyDBError(f"cannot start a write to {str(self.path)!r}: {e}") from e
        try:
            yield self.conn
            self.conn.execute("COMMIT")
        except BaseException as e:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")
            if isinstance(e, sqlite3.IntegrityError):
                raise AnswerError(f"rejected by the database: {e}", 409) from e
            if isinstance(e, sqlite3.Error):
                raise StudyDBError(f"write to {str(self.path)!r} failed and was rolled back: {e}") from e
            raise

    @property
    def schema_version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    # -- the study -----------------------------------------------------------------------
    def create_study(self, name: str, settings: dict[str, Any]) -> int:
        if self.conn.execute("SELECT count(*) FROM studies").fetchone()[0]:
            raise StudyDBError(f"{str(self.path)!r} already holds a study")
        with self.transaction() as c:
            cur = c.execute("INSERT INTO studies (name, created_at, settings, secret) VALUES (?, ?, ?, ?)",
                            (name, _now(), json.dumps(settings, sort_keys=True), secrets.token_hex(32)))
        return int(cur.lastrowid)

    def study(self) -> sqlite3.Row:
        row = self.conn.execute("SELECT * FROM studies ORDER BY id LIMIT 1").fetchone()
        if row is None:
            raise StudyDBError(f"{str(self.path)!r} holds no study yet")
        return row

    @property
    def settings(self) -> dict[str, Any]:
        return json.loads(self.study()["settings"])

    def add_pieces(self, study_id: int, pieces: Sequence[dict[str, Any]]) -> list[int]:
        """Insert pieces (dicts with the ``pieces`` columns; ``tokens``/``chords`` as int lists)
        in one transaction; returns their ids."""
        ids = []
        with self.transaction() as c:
            for p in pieces:
                cur = c.execute(
                    "INSERT INTO pieces (study_id, source, context, key, progression, meter, n_bars, seed, tokens, "
                    "chords, wav, png, wav_sha256, png_sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (study_id, p["source"], int(p["context"]), p["key"], p["progression"], p["meter"],
                     int(p["n_bars"]), int(p["seed"]), json.dumps([int(t) for t in p["tokens"]]),
                     json.dumps([int(t) for t in p["chords"]]), p["wav"], p["png"], p["wav_sha256"],
                     p["png_sha256"]))
                ids.append(int(cur.lastrowid))
        return ids

    def add_pairs(self, study_id: int, pairs: Sequence[tuple[int, int]]) -> None:
        with self.transaction() as c:
            c.executemany("INSERT INTO pairs (study_id, piece_a, piece_b) VALUES (?, ?, ?)",
                          [(study_id, min(a, b), max(a, b)) for a, b in pairs])

    def pieces(self) -> list[PieceRow]:
        rows = self.conn.execute("SELECT * FROM pieces ORDER BY id").fetchall()
        return [self._piece(r) for r in rows]

    def piece(self, piece_id: int) -> PieceRow | None:
        r = self.conn.execute("SELECT * FROM pieces WHERE id = ?", (int(piece_id),)).fetchone()
        return None if r is None else self._piece(r)

    @staticmethod
    def _piece(r: sqlite3.Row) -> PieceRow:
        return PieceRow(r["id"], r["source"], r["context"], r["key"], r["progression"], r["meter"], r["n_bars"],
                        r["seed"], tuple(json.loads(r["tokens"])), tuple(json.loads(r["chords"])), r["wav"], r["png"])

    def pairs(self) -> list[PairRow]:
        return [PairRow(r["id"], r["piece_a"], r["piece_b"])
                for r in self.conn.execute("SELECT id, piece_a, piece_b FROM pairs ORDER BY id")]

    def pair(self, pair_id: int) -> PairRow | None:
        r = self.conn.execute("SELECT id, piece_a, piece_b FROM pairs WHERE id = ?", (int(pair_id),)).fetchone()
        return None if r is None else PairRow(r["id"], r["piece_a"], r["piece_b"])

    def media_files(self) -> dict[str, str]:
        """File name -> SHA-256 of every file the study serves (its pieces' WAV and PNG)."""
        out: dict[str, str] = {}
        for r in self.conn.execute("SELECT wav, png, wav_sha256, png_sha256 FROM pieces"):
            out[r["wav"]] = r["wav_sha256"]
            out[r["png"]] = r["png_sha256"]
        return out

    # -- raters and answers ----------------------------------------------------------------
    def rater(self, cookie: str, *, create: bool = True, name: str | None = None) -> sqlite3.Row | None:
        """The rater with this cookie id (created if missing and ``create``)."""
        row = self.conn.execute("SELECT * FROM raters WHERE cookie = ?", (cookie,)).fetchone()
        if row is None and create:
            with self.transaction() as c:
                c.execute("INSERT OR IGNORE INTO raters (study_id, cookie, name, created_at) VALUES (?, ?, ?, ?)",
                          (self.study()["id"], cookie, name, _now()))
            row = self.conn.execute("SELECT * FROM raters WHERE cookie = ?", (cookie,)).fetchone()
        return row

    def set_rater_name(self, rater_id: int, name: str | None) -> None:
        with self.transaction() as c:
            c.execute("UPDATE raters SET name = ? WHERE id = ?", (name, int(rater_id)))

    def answered_pairs(self, rater_id: int) -> set[int]:
        return {r[0] for r in self.conn.execute("SELECT pair_id FROM answers WHERE rater_id = ?", (int(rater_id),))}

    def add_answer(self, rater_id: int, pair_id: int, left_piece: int, choice: str, *,
                   musicality: tuple[int | None, int | None] = (None, None),
                   interest: tuple[int | None, int | None] = (None, None),
                   elapsed_ms: int | None = None) -> int:
        """Store one answer and commit it before returning its id.

        ``choice`` is ``"left"``, ``"right"`` or ``"none"`` for the rater's view, whose left
        piece was ``left_piece``; ``musicality`` and ``interest`` are (left, right) ratings
        1..5 or None. Raises :class:`AnswerError` (status 404: unknown pair; 409: this rater
        already answered it; 400: anything else malformed); nothing is written then.
        """
        pair = self.pair(pair_id)
        if pair is None:
            raise AnswerError(f"unknown pair {pair_id}", 404)
        if left_piece not in (pair.piece_a, pair.piece_b):
            raise AnswerError(f"piece {left_piece} is not in pair {pair_id}", 400)
        if choice not in CHOICES:
            raise AnswerError(f"choice must be one of {', '.join(CHOICES)}; got {choice!r}", 400)
        right_piece = pair.piece_b if left_piece == pair.piece_a else pair.piece_a
        winner = {"left": left_piece, "right": right_piece, "none": None}[choice]
        ratings = {}
        for what, (left, right) in (("musicality", musicality), ("interest", interest)):
            for value in (left, right):
                if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                          or not RATING_MIN <= value <= RATING_MAX):
                    raise AnswerError(f"{what} ratings must be whole numbers {RATING_MIN}..{RATING_MAX} or "
                                      f"empty; got {value!r}", 400)
            by_piece = {left_piece: left, right_piece: right}
            ratings[f"{what}_a"], ratings[f"{what}_b"] = by_piece[pair.piece_a], by_piece[pair.piece_b]
        if elapsed_ms is not None and (isinstance(elapsed_ms, bool) or not isinstance(elapsed_ms, int)
                                       or elapsed_ms < 0):
            raise AnswerError(f"elapsed_ms must be a non-negative whole number of milliseconds, got {elapsed_ms!r}")
        if pair.id in self.answered_pairs(rater_id):
            raise AnswerError(f"pair {pair_id} was already answered by this rater", 409)
        with self.transaction() as c:
            cur = c.execute(
                "INSERT INTO answers (pair_id, rater_id, left_piece, winner, answered_at, musicality_a, "
                "musicality_b, interest_a, interest_b, elapsed_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (pair.id, int(rater_id), int(left_piece), winner, _now(), ratings["musicality_a"],
                 ratings["musicality_b"], ratings["interest_a"], ratings["interest_b"], elapsed_ms))
        return int(cur.lastrowid)

    def answers(self) -> list[dict[str, Any]]:
        """Every answer joined with its pieces and rater, oldest first (the export rows)."""
        q = """
        SELECT a.id AS answer_id, a.answered_at, a.pair_id, r.cookie AS rater, r.name AS rater_name,
               pa.id AS piece_a, pa.source AS source_a, pb.id AS piece_b, pb.source AS source_b,
               pa.context AS context, pa.key AS key, pa.progression AS progression, pa.meter AS meter,
               pa.n_bars AS n_bars, a.left_piece, a.winner,
               CASE WHEN a.winner IS NULL THEN NULL WHEN a.winner = pa.id THEN pa.source ELSE pb.source END
                   AS winner_source,
               a.musicality_a, a.musicality_b, a.interest_a, a.interest_b, a.elapsed_ms
        FROM answers a JOIN pairs p ON p.id = a.pair_id JOIN pieces pa ON pa.id = p.piece_a
             JOIN pieces pb ON pb.id = p.piece_b JOIN raters r ON r.id = a.rater_id
        ORDER BY a.id
        """
        return [dict(r) for r in self.conn.execute(q)]

    def count_answers(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM answers").fetchone()[0])

    # -- tokens ------------------------------------------------------------------------------
    def _secret(self) -> bytes:
        if getattr(self, "_key", None) is None:
            self._key = bytes.fromhex(self.study()["secret"])
        return self._key

    def answer_token(self, rater_cookie: str, pair_id: int, left_piece: int) -> str:
        """HMAC-SHA256 over (rater, pair, left piece) with the study's secret: the page must
        send it back with the answer, so answers cannot be forged for other raters or pairs."""
        msg = f"{rater_cookie}|{int(pair_id)}|{int(left_piece)}".encode()
        return hmac.new(self._secret(), msg, hashlib.sha256).hexdigest()

    def check_token(self, rater_cookie: str, pair_id: int, left_piece: int, token: str) -> bool:
        return isinstance(token, str) and hmac.compare_digest(self.answer_token(rater_cookie, pair_id, left_piece),
                                                              token)

    def left_piece_for(self, rater_cookie: str, pair: PairRow) -> int:
        """Which piece of ``pair`` this rater sees on the left: a fair coin from the study's
        secret, fixed per (rater, pair) so a reload or a restart shows the same page."""
        bit = hmac.new(self._secret(), f"side|{rater_cookie}|{pair.id}".encode(), hashlib.sha256).digest()[0] & 1
        return pair.piece_a if bit else pair.piece_b

    def pair_order(self, rater_cookie: str) -> list[PairRow]:
        """The study's pairs in this rater's own random order (fixed per rater)."""
        pairs = self.pairs()
        return sorted(pairs, key=lambda p: hmac.new(self._secret(), f"order|{rater_cookie}|{p.id}".encode(),
                                                    hashlib.sha256).digest())
