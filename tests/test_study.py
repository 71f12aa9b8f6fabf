"""The listening study: database, web app, report, preference model, reward term, simulated
raters, and a real headless browser answering 20 pairs across a server crash."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from musicenv.composition import Composition
from musicenv.study.app import COOKIE, RemoteBindError, check_host, make_app
from musicenv.study.db import (
    DB_NAME,
    MIGRATIONS,
    SCHEMA_VERSION,
    AnswerError,
    StudyDB,
    StudyDBError,
)
from musicenv.study.features import STYLE_NAMES, piece_features, style_features
from musicenv.study.fit import PreferenceModel, PreferenceModelError, fit_preference, pair_accuracy
from musicenv.study.pieces import StudySpecError, create_study
from musicenv.study.report import bradley_terry_sources, export_answers, win_rates, write_report
from musicenv.study.simulate import HiddenUtility, SimulatedRater, varied_pieces
from musicenv.study.synth import SYNTH_SAMPLE_RATE, synthesise

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
#: 3 sources x 7 contexts: 21 pieces, 21 pairs (one per source pair and context).
SOURCES = ["random", "rule", "corpus:bach"]
N_CONTEXTS = 7


@pytest.fixture(scope="module")
def study_template(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("study") / "s"
    create_study(folder, SOURCES, contexts=N_CONTEXTS, n_bars=2, seed=3, audio="numpy", progress=False)
    return folder


@pytest.fixture
def study(study_template, tmp_path) -> Path:
    """A fresh copy of the template study (its own database)."""
    return Path(shutil.copytree(study_template, tmp_path / "study"))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def answer_count(folder: Path) -> int:
    with sqlite3.connect(folder / DB_NAME) as c:
        return c.execute("SELECT count(*) FROM answers").fetchone()[0]


# ---------------------------------------------------------------------------- making a study
def test_study_pairs_share_their_context_and_cover_every_source_pair(study):
    with StudyDB(study) as db:
        pieces = {p.id: p for p in db.pieces()}
        pairs = db.pairs()
        assert db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.schema_version == SCHEMA_VERSION
    assert len(pieces) == len(SOURCES) * N_CONTEXTS and len(pairs) == 3 * N_CONTEXTS
    combos = set()
    for pair in pairs:
        a, b = pieces[pair.piece_a], pieces[pair.piece_b]
        assert (a.context, a.key, a.progression, a.meter, a.n_bars) == (b.context, b.key, b.progression, b.meter,
                                                                         b.n_bars)
        assert len(a.tokens) == len(b.tokens) == 2 * 16
        assert a.chords == b.chords  # same progression, bar by bar
        combos.add(frozenset((a.source, b.source)))
    assert len(combos) == 3
    for p in pieces.values():
        # file names say nothing about the source, and the files are what the database says
        assert p.source.split(":")[0] not in p.wav and p.wav.endswith(".wav") and p.png.endswith(".png")
        with wave.open(str(study / "media" / p.wav)) as w:
            assert w.getframerate() == SYNTH_SAMPLE_RATE and w.getnframes() > SYNTH_SAMPLE_RATE
    # the corpus pieces are real chorale melodies: in the key of their context
    bach = [p for p in pieces.values() if p.source == "corpus:bach"]
    comp = [Composition(np.array(p.tokens), p.key, p.meter, np.array(p.chords)) for p in bach]
    assert np.mean([style_features(c)[STYLE_NAMES.index("in_key_share")] for c in comp]) > 0.9


def test_create_study_refuses_bad_settings_and_writes_nothing(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x.txt").write_text("x")
    with pytest.raises(StudySpecError, match="not an empty folder"):
        create_study(tmp_path / "busy", ["random", "rule"], contexts=1)
    # (an unknown compose source lists the available ones: musicenv.compose's own tests cover that)
    with pytest.raises(StudySpecError, match="corpus source needs a name"):
        create_study(tmp_path / "new", ["random", "corpus:"], contexts=1)
    with pytest.raises(StudySpecError, match="at most one corpus"):
        create_study(tmp_path / "new", ["corpus:bach", "corpus:essen"], contexts=1)
    with pytest.raises(StudySpecError, match="given twice"):
        create_study(tmp_path / "new", ["rule", "rule"], contexts=1)
    with pytest.raises(StudySpecError, match="at least two sources"):
        create_study(tmp_path / "new", ["random"], contexts=1)
    with pytest.raises(StudySpecError, match="contexts must be a positive"):
        create_study(tmp_path / "new", ["random", "rule"], contexts=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy"]


def test_numpy_synth_plays_the_notes_at_their_pitch_and_time():
    # C4 for a half note, a half-note rest, A4 for a half note, at 120 quarters per minute
    tokens = [60 - 46] + [1] * 7 + [0] + [1] * 7 + [69 - 46] + [1] * 7
    comp = Composition(np.array(tokens), "C major", "4/4", tempo=120.0)
    x = synthesise(comp)
    sr = SYNTH_SAMPLE_RATE
    assert len(x) == round((24 / 4 * 0.5 + 0.3) * sr)
    assert np.abs(x).max() == pytest.approx(10 ** (-3 / 20))

    def peak_hz(seg):
        spec = np.abs(np.fft.rfft(seg * np.hanning(len(seg))))
        return np.fft.rfftfreq(len(seg), 1 / sr)[np.argmax(spec)]

    assert peak_hz(x[int(0.05 * sr):int(0.95 * sr)]) == pytest.approx(261.6, abs=2.0)
    assert peak_hz(x[int(2.05 * sr):int(2.95 * sr)]) == pytest.approx(440.0, abs=2.0)
    # the rest is silent once the release (40 ms) is over
    assert np.abs(x[int(1.1 * sr):int(1.95 * sr)]).max() < 1e-6


# ---------------------------------------------------------------------------- database faults
def test_migration_from_version_1_keeps_every_row(tmp_path):
    path = tmp_path / DB_NAME
    c = sqlite3.connect(path)
    c.executescript(MIGRATIONS[0])
    c.execute("INSERT INTO studies VALUES (1, 'old', '2026-01-01', '{}', ?)", ("ab" * 32,))
    for i in (1, 2):
        c.execute("INSERT INTO pieces (id, study_id, source, context, key, progression, meter, n_bars, seed, tokens, "
                  "chords, wav, png, wav_sha256, png_sha256) VALUES (?, 1, ?, 0, 'C major', 'C', '4/4', 1, 0, "
                  "'[2]', '[0]', ?, ?, 'x', 'y')", (i, f"s{i}", f"{i}.wav", f"{i}.png"))
    c.execute("INSERT INTO pairs VALUES (1, 1, 1, 2)")
    c.execute("INSERT INTO raters VALUES (1, 1, 'cookie', NULL, '2026-01-01')")
    c.execute("INSERT INTO answers VALUES (1, 1, 1, 2, 2, '2026-01-01')")
    c.execute("PRAGMA user_version = 1")
    c.commit()
    c.close()
    with StudyDB(path) as db:
        assert db.schema_version == SCHEMA_VERSION == 2
        rows = db.answers()
        assert len(rows) == 1 and rows[0]["winner_source"] == "s2" and rows[0]["musicality_a"] is None
        # the new columns work, with their checks
        rater = db.rater("new-rater")
        db.add_answer(rater["id"], 1, 2, "left", musicality=(5, 1), elapsed_ms=10)
        new = db.answers()[-1]
        assert (new["winner"], new["musicality_a"], new["musicality_b"], new["elapsed_ms"]) == (2, 1, 5, 10)
        with pytest.raises(AnswerError, match="CHECK constraint"):
            with db.transaction() as c:
                c.execute("UPDATE answers SET interest_a = 7")
        with pytest.raises(AnswerError, match="already answered") as e:
            db.add_answer(1, 1, 1, "left")
        assert e.value.status == 409


def test_database_refuses_newer_foreign_and_corrupt_files_and_leaves_them(tmp_path):
    newer = tmp_path / "newer.sqlite"
    c = sqlite3.connect(newer)
    c.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    c.close()
    foreign = tmp_path / "foreign.sqlite"
    c = sqlite3.connect(foreign)
    c.execute("CREATE TABLE t (x)")
    c.commit()
    c.close()
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not a database" * 100)
    before = {p: sha(p) for p in (newer, foreign, garbage)}
    with pytest.raises(StudyDBError, match="newer than this musicenv"):
        StudyDB(newer)
    with pytest.raises(StudyDBError, match="not a musicenv study"):
        StudyDB(foreign)
    with pytest.raises(StudyDBError, match="not a usable SQLite"):
        StudyDB(garbage)
    with pytest.raises(StudyDBError, match="no study database"):
        StudyDB(tmp_path / "missing.sqlite")
    assert {p: sha(p) for p in before} == before


_WRITER = """
import sys
from musicenv.study.db import StudyDB
db = StudyDB(sys.argv[1])
pairs = db.pairs()
for i, pair in enumerate(pairs):
    rater = db.rater("killed-writer-%03d" % i)
    db.add_answer(rater["id"], pair.id, pair.piece_a, "left")
    print(i + 1, flush=True)
    if i + 1 == 8:
        sys.stdin.readline()  # wait here, mid-study, to be killed
"""


def test_answers_committed_before_a_kill_survive_it(study):
    proc = subprocess.Popen([PY, "-c", _WRITER, str(study)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        acknowledged = 0
        while acknowledged < 8:
            acknowledged = int(proc.stdout.readline())
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    # every answer acknowledged is there; the database is intact and still writable
    assert answer_count(study) == 8
    with StudyDB(study) as db:
        assert db.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rater = db.rater("after-the-crash")
        db.add_answer(rater["id"], db.pairs()[0].id, db.pairs()[0].piece_b, "none")
    assert answer_count(study) == 9


def test_a_locked_or_full_database_gives_503_and_changes_nothing(study):
    from starlette.testclient import TestClient

    app = make_app(study)
    with TestClient(app) as client:
        client.get("/")
        state = client.get("/api/next").json()
        pair = state["pair"]
        body = {"pair_id": pair["pair_id"], "left": pair["left"], "token": pair["token"], "choice": "left"}
        db = app.state.db
        # another process holds the write lock
        other = sqlite3.connect(study / DB_NAME, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        db.conn.execute("PRAGMA busy_timeout = 100")
        r = client.post("/api/answer", json=body)
        assert r.status_code == 503 and "unavailable" in r.json()["error"]
        other.execute("ROLLBACK")
        other.close()
        assert answer_count(study) == 0
        # the disk is full: no page may be added
        pages = db.conn.execute("PRAGMA page_count").fetchone()[0]
        db.conn.execute(f"PRAGMA max_page_count = {pages}")
        filler = "x" * 3000
        with pytest.raises(StudyDBError, match="rolled back"):
            with db.transaction() as c:
                for _ in range(50):
                    c.execute("UPDATE studies SET name = name || ?", (filler,))
        assert db.study()["name"] == "s"
        db.conn.execute("PRAGMA max_page_count = 1073741823")
        r = client.post("/api/answer", json=body)
        assert r.status_code == 200 and r.json()["answered"] == 1
    assert answer_count(study) == 1


# ---------------------------------------------------------------------------- the web app
def test_bad_requests_get_4xx_and_change_nothing(study):
    from starlette.testclient import TestClient

    with TestClient(make_app(study)) as client, TestClient(make_app(study)) as intruder:
        assert client.get("/api/next").status_code == 400  # no cookie yet
        page = client.get("/")
        assert page.status_code == 200 and COOKIE in page.cookies
        assert "Content-Security-Policy" in page.headers and "HttpOnly" in page.headers["set-cookie"]
        pair = client.get("/api/next").json()["pair"]
        good = {"pair_id": pair["pair_id"], "left": pair["left"], "token": pair["token"], "choice": "right",
                "musicality": [4, None], "interest": [None, 2], "elapsed_ms": 1234}
        bad = [
            ({**good, "pair_id": 10**6}, 404),  # unknown pair
            ({**good, "token": "0" * 64}, 403),  # forged token
            ({**good, "left": [p for p in (pair["left"],)][0] + 1}, 403),  # sides swapped by hand
            ({**good, "choice": "both"}, 400),
            ({**good, "musicality": [9, None]}, 400),
            ({**good, "interest": "high"}, 400),
            ({**good, "elapsed_ms": -5}, 400),
            ({**good, "pair_id": "1"}, 400),
        ]
        for body, status in bad:
            r = client.post("/api/answer", json=body)
            assert r.status_code == status, (body, r.json())
        assert client.post("/api/answer", content=b"{" + b" " * 5000 + b"}",
                           headers={"content-type": "application/json"}).status_code == 413
        assert client.post("/api/answer", content=b"pair_id=1", headers={
            "content-type": "application/x-www-form-urlencoded"}).status_code == 415
        assert client.post("/api/answer", content=b"{not json", headers={
            "content-type": "application/json"}).status_code == 400
        # another rater cannot use this rater's token
        intruder.get("/")
        assert intruder.post("/api/answer", json=good).status_code == 403
        # paths outside the study's own files
        for path in ("/media/../study.sqlite", "/media/%2e%2e%2fstudy.sqlite", "/media/study.sqlite",
                     "/media/..%2f..%2fetc%2fpasswd", "/static/app.js", "/study.sqlite", "/media/x.wav"):
            assert client.get(path).status_code == 404, path
        assert answer_count(study) == 0
        r = client.post("/api/answer", json=good)
        assert r.status_code == 200 and r.json()["answered"] == 1
        assert client.post("/api/answer", json=good).status_code == 409  # replay
        assert client.get(pair["pieces"][0]["audio"]).headers["content-type"] == "audio/wav"
    with StudyDB(study) as db:
        rows = db.answers()
    assert len(rows) == 1
    row = rows[0]
    right = row["piece_b"] if row["left_piece"] == row["piece_a"] else row["piece_a"]
    assert row["winner"] == right and row["elapsed_ms"] == 1234
    left_is_a = row["left_piece"] == row["piece_a"]
    assert (row["musicality_a"], row["musicality_b"]) == ((4, None) if left_is_a else (None, 4))


def test_order_and_sides_are_random_per_rater_and_stable(study):
    with StudyDB(study) as db:
        pairs = db.pairs()
        lefts = {c: [db.left_piece_for(c, p) == p.piece_a for p in pairs] for c in ("rater-one", "rater-two")}
        orders = {c: [p.id for p in db.pair_order(c)] for c in ("rater-one", "rater-two")}
        assert lefts["rater-one"] == [db.left_piece_for("rater-one", p) == p.piece_a for p in pairs]
    assert 0 < sum(lefts["rater-one"]) < len(pairs)  # both sides occur
    assert lefts["rater-one"] != lefts["rater-two"] and orders["rater-one"] != orders["rater-two"]
    assert sorted(orders["rater-one"]) == sorted(p.id for p in pairs)


def test_serving_elsewhere_than_loopback_needs_the_explicit_flag(study, capsys):
    from musicenv.cli import main

    assert check_host("127.0.0.1", False) == "127.0.0.1" and check_host("::1", False) == "::1"
    with pytest.raises(RemoteBindError, match="--allow-remote"):
        check_host("0.0.0.0", False)
    assert check_host("0.0.0.0", True) == "0.0.0.0"
    assert main(["study", "serve", str(study), "--host", "0.0.0.0"]) == 2
    assert "--allow-remote" in capsys.readouterr().err


# ---------------------------------------------------------------------------- report and export
def _answers(study: Path, outcomes: list[tuple[str, str, str]]) -> None:
    """Answer pairs by source: (source shown left, source shown right, choice)."""
    with StudyDB(study) as db:
        pieces = {p.id: p for p in db.pieces()}
        pairs = db.pairs()
        used = set()
        for i, (left_src, right_src, choice) in enumerate(outcomes):
            rater = db.rater(f"hand-rater-{i:03d}")
            pair = next(p for p in pairs if (p.id, i) not in used and {pieces[p.piece_a].source,
                                                                      pieces[p.piece_b].source} == {left_src, right_src})
            used.add((pair.id, i))
            left = pair.piece_a if pieces[pair.piece_a].source == left_src else pair.piece_b
            db.add_answer(rater["id"], pair.id, left, choice)


def test_report_win_rates_ranking_and_exports(study, tmp_path):
    # rule beats random 3 times of 4, once by "no preference"; corpus beats both twice
    _answers(study, [("rule", "random", "left"), ("random", "rule", "right"), ("rule", "random", "left"),
                     ("rule", "random", "none"), ("corpus:bach", "random", "left"), ("rule", "corpus:bach", "right"),
                     ("random", "corpus:bach", "right"), ("corpus:bach", "rule", "left")])
    with StudyDB(study) as db:
        rows = db.answers()
    wr = win_rates(rows, resamples=2000)
    assert wr["rule"]["comparisons"] == 6 and wr["rule"]["wins"] == pytest.approx(3.5)
    assert wr["corpus:bach"]["win_rate"] == 1.0 and wr["random"]["win_rate"] == pytest.approx(0.5 / 6)
    for s in wr.values():
        assert s["low"] <= s["win_rate"] <= s["high"]
    bt = bradley_terry_sources(rows, resamples=200)
    assert [s for s in sorted(bt, key=lambda s: bt[s]["rank"])] == ["corpus:bach", "rule", "random"]
    assert sum(b["strength"] for b in bt.values()) == pytest.approx(0.0, abs=1e-6)
    md, png = write_report(study, tmp_path / "rep", resamples=500)
    text = md.read_text()
    assert "| 1 | `corpus:bach` |" in text and "58.3 %" in text  # rule: 3.5 of 6
    assert "The pieces as music" in text and png.stat().st_size > 10_000
    csv_path = export_answers(study, tmp_path / "a.csv")
    jsonl = export_answers(study, tmp_path / "a.jsonl")
    lines = csv_path.read_text().splitlines()
    assert len(lines) == 9 and "winner_source" in lines[0]
    records = [json.loads(x) for x in jsonl.read_text().splitlines()]
    assert [r["winner_source"] for r in records].count(None) == 1
    assert {r["source_a"] for r in records} | {r["source_b"] for r in records} == set(SOURCES)
    with pytest.raises(ValueError, match="csv, jsonl"):
        export_answers(study, tmp_path / "a.xlsx")


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2), st.sampled_from([0.0, 0.5, 1.0])),
                min_size=1, max_size=30))
def test_win_rates_account_for_every_answer(answers):
    names = ["x", "y", "z"]
    rows = [{"source_a": names[i], "source_b": names[j if j != i else (i + 1) % 3], "piece_a": 1, "piece_b": 2,
             "winner": None if y == 0.5 else (1 if y == 1.0 else 2)} for i, j, y in answers]
    wr = win_rates(rows, resamples=50)
    assert sum(s["wins"] for s in wr.values()) == pytest.approx(len(rows))
    assert sum(s["comparisons"] for s in wr.values()) == 2 * len(rows)
    assert all(0.0 <= s["win_rate"] <= 1.0 for s in wr.values())


# ---------------------------------------------------------------------------- preference model
def _simulated_answers(comps, u, n_pairs, seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(len(comps), size=n_pairs)
    b = (a + rng.integers(1, len(comps), size=n_pairs)) % len(comps)
    rater = SimulatedRater(temperature=0.5, tie_margin=0.05, seed=seed)
    y = np.array([rater.choose(u[i], u[j]) for i, j in zip(a, b)])
    return a, b, y


def test_the_default_feature_groups_include_the_style_profile_of_each_piece():
    from musicenv.study.features import DEFAULT_GROUPS, available_groups
    from musicenv.style import piece_style

    assert "style_profile" in DEFAULT_GROUPS and "style_profile" in available_groups()
    # a note per beat (C D E F G F E D, twice) and a note per 16th: 4 and 16 notes per bar
    per_beat = Composition(np.array([t for p in (60, 62, 64, 65, 67, 65, 64, 62) for t in (p - 46, 1, 1, 1)] * 2),
                           "C major", "4/4")
    per_16th = Composition(np.array([p - 46 for p in (60, 62, 64, 65) * 16]), "C major", "4/4")
    names, X = piece_features([per_beat, per_16th], ("style_profile",))
    assert "style_profile.pieces" not in names
    col = {n: X[:, i] for i, n in enumerate(names)}
    assert col["style_profile.notes_per_bar"].tolist() == [4.0, 16.0]
    assert col["style_profile.sixteenth_share"].tolist() == [0.0, 1.0]
    assert col["style_profile.leap_share"][0] == pytest.approx(piece_style(per_beat)["leap_share"])


def test_preference_model_reaches_90_percent_of_the_hidden_utility_on_heldout_pairs():
    comps = varied_pieces(200, seed=1)
    u = HiddenUtility()(comps)
    names, X = piece_features(comps, ("style", "reward_terms"))
    a, b, y = _simulated_answers(comps, u, 500, seed=0)
    model = fit_preference(X, a, b, y, feature_names=names, groups=["style", "reward_terms"], holdout=0.2,
                           refit=False, seed=0)
    test = np.random.default_rng(0).permutation(len(y))[:model.metrics["heldout_answers"]]
    truth = pair_accuracy(u, a[test], b[test], y[test])
    assert model.metrics["heldout_answers"] == 100
    assert truth > 0.85  # the raters are noisy but informative
    assert model.metrics["heldout_accuracy"] >= 0.9 * truth
    # the model's own scores rank fresh pieces like the hidden utility does
    fresh = varied_pieces(60, seed=7)
    rho = np.corrcoef(np.argsort(np.argsort(model.score(fresh))), np.argsort(np.argsort(HiddenUtility()(fresh))))[0, 1]
    assert rho > 0.8


def test_preference_model_file_round_trip_and_refusals(tmp_path):
    comps = varied_pieces(40, seed=2)
    u = HiddenUtility()(comps)
    names, X = piece_features(comps, ("style",))
    a, b, y = _simulated_answers(comps, u, 120, seed=1)
    model = fit_preference(X, a, b, y, feature_names=names, groups=["style"], members=4, seed=0)
    path = model.save(tmp_path / "m.json")
    again = PreferenceModel.load(path)
    np.testing.assert_allclose(again.value(X, k=1.0), model.value(X, k=1.0))
    assert abs(float(model.value(X, k=0.0).mean())) < 1e-9  # offset: the study's average piece scores 0
    # spread penalty lowers every value
    assert (model.value(X, k=2.0) <= model.value(X, k=0.0) + 1e-12).all()
    data = json.loads(path.read_text())
    for broken, match in [({**data, "kind": "other"}, "not a musicenv preference"),
                          ({**data, "format_version": 99}, "format_version"),
                          ({**data, "weights": [[1.0]]}, "inconsistent shapes"),
                          ({**data, "std": [0.0] * len(names)}, "non-positive sd")]:
        (tmp_path / "bad.json").write_text(json.dumps(broken))
        with pytest.raises(PreferenceModelError, match=match):
            PreferenceModel.load(tmp_path / "bad.json")
    (tmp_path / "bad.json").write_bytes(pickle.dumps(model))
    with pytest.raises(PreferenceModelError, match="not readable JSON"):
        PreferenceModel.load(tmp_path / "bad.json")
    with pytest.raises(PreferenceModelError, match="at least 10 answers"):
        fit_preference(X, a[:5], b[:5], y[:5], feature_names=names, groups=["style"])


def test_preference_reward_term_terminal_and_shaped_in_the_env(tmp_path):
    import gymnasium as gym

    import musicenv  # noqa: F401
    import rewards
    from musicenv.baselines import RuleBasedPolicy, run_episode

    comps = varied_pieces(60, seed=3)
    names, X = piece_features(comps, ("style", "reward_terms"))
    a, b, y = _simulated_answers(comps, HiddenUtility()(comps), 200, seed=2)
    model = fit_preference(X, a, b, y, feature_names=names, groups=["style", "reward_terms"], members=4, seed=0)
    path = str(model.save(tmp_path / "pref.json"))
    assert "preference" in rewards.available()
    totals = {}
    for mode, extra in (("terminal", {}), ("shaped", {}), ("shaped4", {"every": 4}),
                        ("shapedg", {"gamma": 0.8})):
        spec = {"weight": 2.0, "model": path, "mode": mode[:6] if mode != "terminal" else mode, "k": 0.5, **extra}
        env = gym.make("MusicComposition-v0", reward={"preference": spec})
        obs, _ = env.reset(seed=4)
        policy = RuleBasedPolicy(env, seed=4)
        per_step, done = [], False
        while not done:
            obs, r, term, trunc, info = env.step(policy(obs))
            per_step.append(info["reward_terms"]["preference"])
            done = term or trunc
        comp = env.unwrapped.composition
        expected = 2.0 * model.score([comp], k=0.5)[0]
        nonzero = np.flatnonzero(per_step)
        if mode == "terminal":
            assert list(nonzero) == [len(per_step) - 1]
        elif mode == "shaped":
            assert set(nonzero) <= {15, 31, 47, 63} and len(nonzero) >= 3  # bar ends only
        elif mode == "shaped4":
            assert set(nonzero) <= set(range(3, 64, 4)) and len(nonzero) >= 8  # every 4 steps
        else:
            # potential-based shaping for gamma 0.8: the discounted return is terminal mode's
            discounted = sum(0.8**t * v for t, v in enumerate(per_step))
            assert discounted == pytest.approx(0.8 ** 63 * expected, rel=1e-9, abs=1e-12)
            assert len(nonzero) > 32  # it pays (or drains) at every step
            env.close()
            continue
        totals[mode] = sum(per_step)
        assert totals[mode] == pytest.approx(expected, rel=1e-9, abs=1e-9)
        term_obj = env.unwrapped.core.reward.terms[0][1]
        assert type(term_obj).__name__ == "PreferenceReward"
        clone = pickle.loads(pickle.dumps(term_obj))
        assert clone.params == term_obj.params and "_model" not in vars(clone)
        env.close()
    assert totals["terminal"] == pytest.approx(totals["shaped"]) == pytest.approx(totals["shaped4"])
    with pytest.raises(rewards.RewardSpecError, match="does not exist"):
        env = gym.make("MusicComposition-v0", reward={"preference": {"model": str(tmp_path / "none.json")}})
        env.reset(seed=0)
    with pytest.raises(rewards.RewardSpecError, match="mode must be one of"):
        rewards.make({"preference": {"model": path, "mode": "sometimes"}})
    with pytest.raises(rewards.RewardSpecError, match="gamma must be in"):
        rewards.make({"preference": {"model": path, "mode": "shaped", "gamma": 0.0}})
    with pytest.raises(rewards.RewardSpecError, match="every must be a whole number"):
        rewards.make({"preference": {"model": path, "mode": "shaped", "every": 2.5}})
    comp, _ = run_episode(gym.make("MusicComposition-v0"), lambda o: 2, seed=0)
    assert rewards.score({"preference": {"model": path}}, comp)["total"] == pytest.approx(model.score([comp])[0])


def test_simulate_report_and_fit_from_the_command_line(study, tmp_path, capsys):
    from musicenv.cli import main

    assert main(["study", "simulate", str(study), "--raters", "6"]) == 0
    assert answer_count(study) == 6 * 3 * N_CONTEXTS
    assert main(["study", "report", str(study), "--resamples", "300"]) == 0
    out = capsys.readouterr().out
    # the hidden utility likes in-key stepwise melodies at a note per beat: random comes last
    assert "| 3 | `random` |" in out
    assert main(["study", "fit", str(study), "--out", str(tmp_path / "m.json"), "--groups", "style",
                 "--members", "3"]) == 0
    assert "held-out pair accuracy" in capsys.readouterr().out
    assert PreferenceModel.load(tmp_path / "m.json").metrics["answers"] == 6 * 3 * N_CONTEXTS


# ---------------------------------------------------------------------------- the browser
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(study: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen([PY, "-m", "musicenv.cli", "study", "serve", str(study), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start in 60 s")


@pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
                    reason="needs Debian's chromium and chromium-driver (installed by .ci/run)")
def test_a_real_browser_answers_20_pairs_across_a_server_crash(study, tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--autoplay-policy=no-user-gesture-required",
                 f"--user-data-dir={tmp_path / 'chrome-profile'}", "--window-size=1200,1000"):
        opts.add_argument(flag)
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    server = _start_server(study, port)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    sent: list[tuple[int, int, str]] = []  # (pair, left piece, choice)
    try:
        wait = WebDriverWait(driver, 20)
        driver.get(url)
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-pair"))

        # it plays: a click on "Play A" starts the WAV and time advances
        driver.find_element(By.CSS_SELECTOR, "button.play[data-i='0']").click()
        wait.until(lambda d: d.execute_script("return document.getElementById('audio-0').currentTime") > 0.05)
        assert driver.execute_script("return document.getElementById('audio-0').duration") > 1.0
        assert driver.execute_script("return document.getElementById('roll-1').naturalWidth") > 100
        driver.find_element(By.TAG_NAME, "body").send_keys(" ")  # Space stops
        shot = os.environ.get("MUSICENV_STUDY_SCREENSHOT")
        if shot:
            driver.save_screenshot(shot)

        def answer(i: int) -> None:
            body = driver.find_element(By.TAG_NAME, "body")
            before = int(body.get_attribute("data-answered"))
            cur = driver.execute_script("return current")
            if i % 2:  # by keyboard
                key, choice = [("a", "left"), (Keys.ARROW_RIGHT, "right"), ("n", "none"), ("b", "right")][i // 2 % 4]
                body.send_keys(key)
            else:  # by click
                choice = ["left", "right", "none"][i // 2 % 3]
                driver.find_element(By.ID, f"choose-{choice}").click()
            sent.append((cur["pair_id"], cur["left"], choice))
            wait.until(lambda d: int(d.find_element(By.TAG_NAME, "body").get_attribute("data-answered")) == before + 1)

        for i in range(10):
            answer(i)
        assert answer_count(study) == 10
        assert driver.find_element(By.ID, "count").text == f"10 / {3 * N_CONTEXTS}"

        # the server dies mid-study and comes back: the page resumes at 10, with the pair it showed
        shown = driver.execute_script("return current.pair_id")
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=20)
        server = _start_server(study, port)
        driver.refresh()
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-answered") == "10")
        assert driver.execute_script("return current.pair_id") == shown
        assert driver.execute_script("return document.getElementById('progress').value") == 10
        for i in range(10, 20):
            answer(i)

        # phone width: the pieces stack and nothing scrolls sideways
        driver.set_window_size(390, 844)
        time.sleep(0.3)
        geom = driver.execute_script(
            "const a = document.getElementById('piece-0').getBoundingClientRect(),"
            " b = document.getElementById('piece-1').getBoundingClientRect();"
            "return [a.bottom, b.top, document.documentElement.scrollWidth, window.innerWidth]")
        assert geom[1] >= geom[0] and geom[2] <= geom[3]
    finally:
        driver.quit()
        server.kill()
        server.wait(timeout=20)
    with StudyDB(study) as db:
        rows = db.answers()
    assert len(rows) == 20 and len({r["rater"] for r in rows}) == 1
    assert [(r["pair_id"], r["left_piece"]) for r in rows] == [(p, left) for p, left, _ in sent]
    for r, (_, left, choice) in zip(rows, sent):
        right = r["piece_b"] if left == r["piece_a"] else r["piece_a"]
        assert r["winner"] == {"left": left, "right": right, "none": None}[choice]


# ---------------------------------------------------------------------------- RL with the learned reward
@pytest.mark.slow
def test_ppo_with_the_preference_term_raises_the_hidden_utility(tmp_path):
    """PPO on `theory` + `preference` (fitted on simulated raters) writes pieces the raters'
    hidden utility scores higher than PPO on `theory` alone, on the same held-out contexts."""
    import torch

    from agents.train import train
    from musicenv.study.pieces import compose_on_contexts, draw_contexts

    torch.set_num_threads(1)
    comps = varied_pieces(240, seed=11)
    utility = HiddenUtility()
    names, X = piece_features(comps, ("style", "reward_terms"))
    a, b, y = _simulated_answers(comps, utility(comps), 600, seed=5)
    model = fit_preference(X, a, b, y, feature_names=names, groups=["style", "reward_terms"], seed=0)
    path = str(model.save(tmp_path / "preference.json"))
    contexts = draw_contexts(30, n_bars=4, meter="4/4", seed=123)
    scores = {}
    for name, reward in [("theory", "theory"),
                         ("preference", {"theory": 1.0, "preference": {"weight": 5.0, "model": path,
                                                                        "mode": "shaped"}})]:
        train({"algo": "ppo", "reward": reward, "n_timesteps": 50_000, "out": str(tmp_path / name), "seed": 0,
               "eval_freq": 0, "checkpoint_freq": 0, "final_episodes": 10, "baselines": [], "progress": False})
        pieces = compose_on_contexts(f"run:{tmp_path / name}", contexts, seed=0)
        scores[name] = utility(pieces)
    # measured (seed 0, issue 18's theory): 0.68 with theory alone, 1.39 with the preference term at
    # weight 5 (1.11 at 2, 1.34 at 10); under the per-note theory_v0 weight 20 gave -1.53 -> -0.35
    assert scores["preference"].mean() > scores["theory"].mean() + 0.5, {k: v.mean() for k, v in scores.items()}


@pytest.mark.slow
def test_prior_feature_group_scores_a_scale_above_random_notes():
    comps = varied_pieces(6, seed=0)
    scale = Composition(np.array([t for p in (60, 62, 64, 65, 67, 65, 64, 62) for t in (p - 46, 1, 1, 1)] * 2),
                        "C major", "4/4")
    names, X = piece_features([scale, *comps], ("prior",))
    assert names[0] == "prior.mean_log_prob" and X.shape == (7, len(names)) and len(names) > 1
    assert np.isfinite(X).all()
    assert X[0, 0] > np.median(X[1:, 0])  # a stepwise C major line is likelier under the prior
