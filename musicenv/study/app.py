"""The study's web app (Starlette, served by uvicorn): blind A/B listening in the browser.

Routes
------
``GET /``                 the page (sets the rater cookie ``musicenv_rater`` if missing)
``GET /api/next``         progress and the rater's next pair (or ``done``)
``POST /api/answer``      ``{"pair_id", "left", "token", "choice": "left"|"right"|"none",
                          "musicality": [l, r], "interest": [l, r], "elapsed_ms"}``;
                          committed before the reply, which carries the next pair
``POST /api/rater``       ``{"name": "..."}``: the rater's name (optional; else anonymous)
``GET /media/NAME``       a WAV or PNG of one of the study's pieces, nothing else

Each pair is shown with a token, HMAC-SHA256 of (rater cookie, pair, left piece) under the
study's secret (:meth:`StudyDB.answer_token`); an answer must carry it. Bad requests get a
4xx and change nothing: 400 malformed JSON or values, or no rater cookie; 403 a token that
does not match (a forged answer, or another rater's pair); 404 an unknown pair or file;
409 a pair this rater already answered (a replay); 413 a body over ``max_body`` bytes;
415 a body that is not JSON. A failing database gives 503.

The rater cookie is random (128 bits), ``HttpOnly`` and ``SameSite=Strict``; with the JSON
content type that a cross-site form cannot send, other sites cannot answer for a rater.
Left and right are a fair coin per (rater, pair), and each rater gets the pairs in an
order of their own, both fixed by the study's secret, so a reload or a server restart
resumes exactly where the rater stopped.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import re
import secrets
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from musicenv.study.db import MEDIA_DIR, AnswerError, StudyDB, StudyDBError

__all__ = ["make_app", "serve", "COOKIE", "MAX_BODY", "check_host", "RemoteBindError"]

COOKIE = "musicenv_rater"
MAX_BODY = 4096  # bytes; an answer is about 200
_COOKIE_RE = re.compile(r"[A-Za-z0-9_-]{16,64}")
_NAME_MAX = 80
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
_CSP = ("default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; "
        "img-src 'self'; media-src 'self'; connect-src 'self'; form-action 'none'; frame-ancestors 'none'")


class RemoteBindError(ValueError):
    """A host other than loopback was given without the explicit flag that allows it."""


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def check_host(host: str, allow_remote: bool) -> str:
    """``host`` if it is a loopback address (or ``localhost``) or ``allow_remote``; else raise."""
    if host == "localhost":
        return host
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not allow_remote:
        raise RemoteBindError(f"--host {host} would let other machines reach the study; it serves on 127.0.0.1 "
                              "unless you also pass --allow-remote")
    return host


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=_SECURITY_HEADERS)


async def _read_json(request: Request, max_body: int) -> Any:
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise _BadRequest(400, "bad Content-Length")
        if int(length) > max_body:
            raise _BadRequest(413, f"request body of {length} bytes is over the {max_body}-byte limit")
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise _BadRequest(415, f"send JSON (Content-Type: application/json), not {ctype or 'nothing'}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_body:
            raise _BadRequest(413, f"request body over the {max_body}-byte limit")
    try:
        data = json.loads(bytes(body).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _BadRequest(400, f"body is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise _BadRequest(400, "body must be a JSON object")
    return data


def _int_field(data: dict[str, Any], name: str) -> int:
    v = data.get(name)
    if isinstance(v, bool) or not isinstance(v, int):
        raise _BadRequest(400, f"{name} must be a whole number, got {v!r}")
    return v


def _ratings(data: dict[str, Any], name: str) -> tuple[int | None, int | None]:
    v = data.get(name, [None, None])
    if v is None:
        return None, None
    if not isinstance(v, list) or len(v) != 2:
        raise _BadRequest(400, f"{name} must be [left, right], each 1..5 or null; got {v!r}")
    return v[0], v[1]


def make_app(study_dir: str | Path, *, max_body: int = MAX_BODY, check_files: bool = True) -> Starlette:
    """The Starlette app serving the study in ``study_dir`` (see the module doc).

    ``check_files`` first verifies every piece's WAV and PNG against the SHA-256 in the
    database (:func:`musicenv.study.pieces.check_media`).
    """
    from musicenv.study.pieces import check_media

    db = StudyDB(study_dir)
    if check_files:
        try:
            check_media(db)
        except StudyDBError:
            db.close()
            raise
    media_dir = (db.folder / MEDIA_DIR).resolve()
    media = db.media_files()
    pair_count = len(db.pairs())
    page = _PAGE.replace("__TITLE__", _html_escape(db.study()["name"]))

    def rater_cookie(request: Request) -> str:
        cookie = request.cookies.get(COOKIE, "")
        if not _COOKIE_RE.fullmatch(cookie):
            raise _BadRequest(400, "no rater cookie: open the study page first")
        return cookie

    def state(cookie: str) -> dict[str, Any]:
        rater = db.rater(cookie)
        done = db.answered_pairs(rater["id"])
        out: dict[str, Any] = {"answered": len(done), "total": pair_count, "rater": rater["name"] or "",
                               "done": len(done) >= pair_count, "pair": None}
        for pair in db.pair_order(cookie):
            if pair.id in done:
                continue
            left = db.left_piece_for(cookie, pair)
            right = pair.piece_b if left == pair.piece_a else pair.piece_a
            pieces = [db.piece(left), db.piece(right)]
            out["pair"] = {
                "pair_id": pair.id, "left": left, "token": db.answer_token(cookie, pair.id, left),
                "context": {"key": pieces[0].key, "progression": pieces[0].progression, "meter": pieces[0].meter},
                "pieces": [{"audio": f"/media/{p.wav}", "roll": f"/media/{p.png}"} for p in pieces],
            }
            break
        return out

    def guarded(handler):
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except _BadRequest as e:
                return _error(e.status, e.message)
            except AnswerError as e:
                return _error(e.status, str(e))
            except StudyDBError as e:
                return _error(503, f"the study database is unavailable: {e}")
        return endpoint

    async def index(request: Request) -> Response:
        response = HTMLResponse(page, headers={**_SECURITY_HEADERS, "Content-Security-Policy": _CSP,
                                               "Cache-Control": "no-store"})
        if not _COOKIE_RE.fullmatch(request.cookies.get(COOKIE, "")):
            response.set_cookie(COOKIE, secrets.token_urlsafe(16), max_age=365 * 24 * 3600, httponly=True,
                                samesite="strict", path="/")
        return response

    async def next_pair(request: Request) -> Response:
        return JSONResponse(state(rater_cookie(request)), headers={**_SECURITY_HEADERS, "Cache-Control": "no-store"})

    async def answer(request: Request) -> Response:
        cookie = rater_cookie(request)
        data = await _read_json(request, max_body)
        pair_id, left = _int_field(data, "pair_id"), _int_field(data, "left")
        token = data.get("token")
        pair = db.pair(pair_id)
        if pair is None:
            raise _BadRequest(404, f"unknown pair {pair_id}")
        if not isinstance(token, str) or not db.check_token(cookie, pair_id, left, token):
            raise _BadRequest(403, "the answer's token does not match this rater and pair")
        choice = data.get("choice")
        elapsed = data.get("elapsed_ms")
        rater = db.rater(cookie)
        db.add_answer(rater["id"], pair_id, left, choice if isinstance(choice, str) else repr(choice),
                      musicality=_ratings(data, "musicality"), interest=_ratings(data, "interest"),
                      elapsed_ms=elapsed)
        return JSONResponse(state(cookie), headers={**_SECURITY_HEADERS, "Cache-Control": "no-store"})

    async def set_name(request: Request) -> Response:
        cookie = rater_cookie(request)
        data = await _read_json(request, max_body)
        name = data.get("name")
        if name is not None and (not isinstance(name, str) or len(name) > _NAME_MAX):
            raise _BadRequest(400, f"name must be text of at most {_NAME_MAX} characters")
        name = (name or "").strip() or None
        db.set_rater_name(db.rater(cookie)["id"], name)
        return JSONResponse(state(cookie), headers=_SECURITY_HEADERS)

    async def media_file(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in media:
            return _error(404, "not a file of this study")
        path = (media_dir / name).resolve()
        if path.parent != media_dir or not path.is_file():
            return _error(404, "not a file of this study")
        mime = "audio/wav" if name.endswith(".wav") else "image/png"
        return FileResponse(path, media_type=mime, headers={**_SECURITY_HEADERS, "Cache-Control": "private, max-age=3600"})

    async def not_found(request: Request, exc: Exception) -> Response:
        return _error(404, "not found")

    async def not_allowed(request: Request, exc: Exception) -> Response:
        return _error(405, "method not allowed")

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/api/next", guarded(next_pair), methods=["GET"]),
        Route("/api/answer", guarded(answer), methods=["POST"]),
        Route("/api/rater", guarded(set_name), methods=["POST"]),
        Route("/media/{name:str}", media_file, methods=["GET"]),
    ]
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        try:
            yield
        finally:
            db.close()

    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_allowed}, lifespan=lifespan)
    app.state.db = db
    return app


def _html_escape(text: str) -> str:
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;"))


def serve(study_dir: str | Path, *, host: str = "127.0.0.1", port: int = 8765, allow_remote: bool = False,
          log_level: str = "warning") -> None:
    """Serve the study with uvicorn until interrupted (see :func:`check_host` for ``host``)."""
    import uvicorn

    check_host(host, allow_remote)
    app = make_app(study_dir)
    print(f"listening study {study_dir}: open http://{host if ':' not in host else f'[{host}]'}:{port}/ "
          "(Ctrl-C stops; answers are saved one by one)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)


_PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__ · listening study</title>
<style>
  :root { font-family: system-ui, sans-serif; color: #222; background: #fafafa; }
  body { margin: 0 auto; max-width: 1100px; padding: 12px; }
  h1 { font-size: 1.25rem; margin: 4px 0 8px; }
  #bar { display: flex; align-items: center; gap: 10px; }
  progress { flex: 1; height: 14px; }
  #context { color: #555; margin: 6px 0 10px; font-size: .95rem; }
  #pieces { display: flex; gap: 12px; }
  .piece { flex: 1; background: #fff; border: 1px solid #ddd; border-radius: 8px; padding: 10px; min-width: 0; }
  .piece h2 { margin: 0 0 6px; font-size: 1.1rem; }
  .piece img { width: 100%; height: auto; display: block; border-radius: 4px; }
  .piece audio { width: 100%; margin-top: 6px; }
  .ratings { display: flex; gap: 10px; flex-wrap: wrap; margin-top: 6px; font-size: .9rem; }
  #choices { display: flex; gap: 10px; margin: 12px 0; }
  #choices button { flex: 1; font-size: 1.05rem; padding: 14px 6px; border-radius: 8px; border: 1px solid #888;
                    background: #fff; cursor: pointer; }
  #choices button:hover:enabled { background: #eef; }
  button:focus-visible, select:focus-visible { outline: 3px solid #36c; }
  kbd { border: 1px solid #aaa; border-radius: 3px; padding: 0 4px; font-size: .85em; background: #f3f3f3; }
  #help { color: #666; font-size: .85rem; }
  #done { display: none; font-size: 1.2rem; padding: 30px 0; }
  #error { color: #b00; min-height: 1.2em; }
  @media (max-width: 700px) {
    #pieces { flex-direction: column; }
    #choices { flex-direction: column; }
    #choices button { padding: 16px 6px; }
  }
</style></head>
<body>
<h1>Which piece do you prefer?</h1>
<div id="bar"><progress id="progress" value="0" max="1"></progress><span id="count">0 / 0</span></div>
<p><label>Your name (optional): <input id="name" maxlength="80" autocomplete="nickname"></label>
   <button id="save-name" type="button">Save</button></p>
<div id="study">
  <div id="context"></div>
  <div id="pieces">
    <section class="piece" id="piece-0"><h2>A</h2>
      <button type="button" class="play" data-i="0">▶ Play A (<kbd>1</kbd>)</button>
      <audio id="audio-0" controls preload="auto"></audio>
      <img id="roll-0" alt="piano roll of piece A">
      <div class="ratings">
        <label>Musicality <select id="musicality-0"><option value="">–</option><option>1</option><option>2</option><option>3</option><option>4</option><option>5</option></select></label>
        <label>Interest <select id="interest-0"><option value="">–</option><option>1</option><option>2</option><option>3</option><option>4</option><option>5</option></select></label>
      </div></section>
    <section class="piece" id="piece-1"><h2>B</h2>
      <button type="button" class="play" data-i="1">▶ Play B (<kbd>2</kbd>)</button>
      <audio id="audio-1" controls preload="auto"></audio>
      <img id="roll-1" alt="piano roll of piece B">
      <div class="ratings">
        <label>Musicality <select id="musicality-1"><option value="">–</option><option>1</option><option>2</option><option>3</option><option>4</option><option>5</option></select></label>
        <label>Interest <select id="interest-1"><option value="">–</option><option>1</option><option>2</option><option>3</option><option>4</option><option>5</option></select></label>
      </div></section>
  </div>
  <div id="choices">
    <button type="button" id="choose-left" data-choice="left">A is better (<kbd>A</kbd> / <kbd>←</kbd>)</button>
    <button type="button" id="choose-none" data-choice="none">No preference (<kbd>N</kbd> / <kbd>↓</kbd>)</button>
    <button type="button" id="choose-right" data-choice="right">B is better (<kbd>B</kbd> / <kbd>→</kbd>)</button>
  </div>
  <p id="help">Listen to both, then choose. Keys: <kbd>1</kbd>/<kbd>2</kbd> play A/B, <kbd>Space</kbd> stops,
     <kbd>A</kbd> <kbd>N</kbd> <kbd>B</kbd> (or arrows) answer. Ratings are optional.</p>
</div>
<div id="done">All pairs are done. Thank you!</div>
<div id="error" role="alert"></div>
<script>
"use strict";
let current = null, shownAt = 0, busy = false;
const $ = (id) => document.getElementById(id);
function show(state) {
  $("progress").max = Math.max(state.total, 1);
  $("progress").value = state.answered;
  $("count").textContent = state.answered + " / " + state.total;
  if (document.activeElement !== $("name")) $("name").value = state.rater || "";
  current = state.pair;
  document.body.dataset.answered = String(state.answered);
  if (!current) {
    $("study").style.display = "none"; $("done").style.display = "block";
    document.body.dataset.done = "1"; return;
  }
  const ctx = current.context;
  $("context").textContent = ctx.key + " · " + ctx.meter + " · chords " + ctx.progression;
  for (let i = 0; i < 2; i++) {
    const a = $("audio-" + i);
    a.pause(); a.src = current.pieces[i].audio; a.load();
    $("roll-" + i).src = current.pieces[i].roll;
    $("musicality-" + i).value = ""; $("interest-" + i).value = "";
  }
  document.body.dataset.pair = String(current.pair_id);
  shownAt = performance.now();
}
async function call(url, body) {
  const opts = body === undefined ? {} :
      {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)};
  const r = await fetch(url, {credentials: "same-origin", ...opts});
  const data = await r.json();
  if (!r.ok) throw new Error(data.error || r.statusText);
  return data;
}
function rating(id) { const v = $(id).value; return v ? parseInt(v, 10) : null; }
async function answer(choice) {
  if (!current || busy) return;
  busy = true; $("error").textContent = "";
  document.querySelectorAll("#choices button").forEach((b) => b.disabled = true);
  try {
    const state = await call("/api/answer", {
      pair_id: current.pair_id, left: current.left, token: current.token, choice: choice,
      musicality: [rating("musicality-0"), rating("musicality-1")],
      interest: [rating("interest-0"), rating("interest-1")],
      elapsed_ms: Math.round(performance.now() - shownAt)});
    show(state);
  } catch (e) {
    $("error").textContent = "Could not save the answer: " + e.message + ". Reload the page to go on.";
  } finally {
    busy = false;
    document.querySelectorAll("#choices button").forEach((b) => b.disabled = false);
  }
}
function play(i) {
  const a = $("audio-" + i), other = $("audio-" + (1 - i));
  other.pause(); a.currentTime = 0; a.play().catch((e) => { $("error").textContent = "Cannot play: " + e.message; });
}
document.querySelectorAll("#choices button").forEach((b) => b.addEventListener("click", () => answer(b.dataset.choice)));
document.querySelectorAll("button.play").forEach((b) => b.addEventListener("click", () => play(+b.dataset.i)));
$("save-name").addEventListener("click", async () => {
  try { show(await call("/api/rater", {name: $("name").value})); } catch (e) { $("error").textContent = e.message; }
});
document.addEventListener("keydown", (ev) => {
  const tag = (ev.target && ev.target.tagName) || "";
  if (tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA" || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const k = ev.key;
  let handled = true;
  if (k === "a" || k === "A" || k === "ArrowLeft") answer("left");
  else if (k === "b" || k === "B" || k === "ArrowRight") answer("right");
  else if (k === "n" || k === "N" || k === "ArrowDown") answer("none");
  else if (k === "1") play(0);
  else if (k === "2") play(1);
  else if (k === " ") { $("audio-0").pause(); $("audio-1").pause(); }
  else handled = false;
  if (handled) ev.preventDefault();
});
call("/api/next").then(show).catch((e) => { $("error").textContent = "Cannot load the study: " + e.message; });
</script>
</body></html>
"""
