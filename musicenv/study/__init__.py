"""A blind A/B listening study in the browser, and a reward learned from what people prefer.

* :mod:`musicenv.study.pieces` — make a study: contexts, pieces from compose sources,
  run directories and corpus melodies, their WAV (:mod:`musicenv.study.synth`) and piano roll.
* :mod:`musicenv.study.db` — the SQLite database (WAL, schema version, migrations).
* :mod:`musicenv.study.app` — the web app (Starlette + uvicorn, 127.0.0.1 by default).
* :mod:`musicenv.study.report` — CSV/JSONL export, win rates, Bradley–Terry ranking.
* :mod:`musicenv.study.features`, :mod:`musicenv.study.fit` — the preference model;
  :mod:`musicenv.study.reward` — the reward term ``preference``.
* :mod:`musicenv.study.simulate` — simulated raters with a known hidden utility.

Nothing here is imported by ``import musicenv``; no module imports torch (the optional
``prior`` feature group does, when asked for).
"""
