"""``musicenv pretrain``, ``musicenv evaluate-prior`` and ``musicenv finetune-prior``.

* ``pretrain``: fit a note-RNN prior on a corpus's training split, compare it with the
  uniform and n-gram (orders 1..8) baselines on the same test split, save the checkpoint,
  its metrics (``<checkpoint stem>.metrics.json``: the NLL table, command, wall time) and
  the best n-gram model (``ngram_<corpus>.npz``) beside it.
* ``evaluate-prior``: the same table for an existing checkpoint (default: the shipped prior).
* ``finetune-prior``: transfer. Held-out NLL on a second corpus (default Essen) of
  (a) the prior as it is, (b) the prior fine-tuned on that corpus, (c) the same
  architecture trained from scratch on it with the same budget (updates, batch size,
  time limit); writes both checkpoints and ``transfer.json``.

NLLs are nats per token over whole melodies (:func:`agents.note_rnn.evaluate_nll`).
torch is imported inside the commands only (``musicenv --help`` stays fast).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import time
from pathlib import Path
from typing import Any

from musicenv.files import check_writable
from musicenv.files import write_text as _write_text

__all__ = ["add_commands", "format_table"]


def _setup_torch(threads: int) -> Any:
    # On a shared machine, OpenMP threads that spin while waiting for a descheduled peer make
    # 2-thread training up to 20x slower than 1 thread; a passive wait policy avoids that.
    # It only takes effect if set before torch starts.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    torch.set_num_threads(threads)
    return torch


def _load_split(name: str, split_seed: int):
    from musicenv import corpus

    data = corpus.load(name)
    return data, data.split(seed=split_seed, valid=0.1, test=0.1)


def _splits(name: str, split_seed: int):
    data, splits = _load_split(name, split_seed)
    for part, sub in zip(("train", "valid", "test"), splits):
        if len(sub) == 0:
            raise ValueError(f"the {part} split of {name!r} (seed {split_seed}, 10 % valid, 10 % test) is empty: "
                             f"the corpus has only {len(data)} melodies")
    return data, splits


def format_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of NLL rows (``model``, optional ``k``/``augmented``, ``valid``, ``test``)."""
    lines = ["| model | k | training data | valid NLL | test NLL |", "|---|---:|---|---:|---:|"]
    for r in rows:
        k = "" if r.get("k") is None else f"{r['k']:g}"
        data = "" if r.get("augmented") is None else ("12 keys" if r["augmented"] else "as is")
        valid = "" if r.get("valid") is None else f"{r['valid']:.4f}"
        test = "" if r.get("test") is None else f"{r['test']:.4f}"
        lines.append(f"| {r['model']} | {k} | {data} | {valid} | {test} |")
    return "\n".join(lines)


def _baseline_rows(splits, grid) -> tuple[list[dict[str, Any]], dict[str, Any], Any]:
    from rewards.ngram import ngram_baselines

    train, valid, test = (c.token_arrays() for c in splits)
    table = ngram_baselines(train, valid, test, grid)
    rows = [{"model": "uniform", **table["uniform"]}]
    for r in table["ngrams"]:
        rows.append({"model": f"{r['order']}-gram", "k": r["k"], "augmented": r["augmented"],
                     "valid": r["valid"], "test": r["test"]})
    best = table["best"]
    return rows, best, table["models"][best["order"]]


def _model_row(model, splits, label: str | None = None) -> dict[str, Any]:
    from agents.note_rnn import evaluate_nll

    c = model.config
    name = label or f"note-RNN ({c.arch} {c.num_layers}x{c.hidden_size})"
    return {"model": name, "valid": evaluate_nll(model, splits.valid), "test": evaluate_nll(model, splits.test)}


def _corpus_record(name: str, data, splits, split_seed: int) -> dict[str, Any]:
    return {"name": name, "melodies": len(data), "split": {"seed": split_seed, "valid": 0.1, "test": 0.1},
            "train": {"melodies": len(splits.train), "tokens": splits.train.n_steps},
            "valid": {"melodies": len(splits.valid), "tokens": splits.valid.n_steps},
            "test": {"melodies": len(splits.test), "tokens": splits.test.n_steps}}


def _train_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"augment": not args.no_augment, "batch_size": args.batch_size, "lr": args.lr, "max_steps": args.steps,
            "eval_every": args.eval_every, "patience": args.patience, "max_minutes": args.max_minutes,
            "seed": args.seed, "weight_decay": args.weight_decay}


_NEGATABLE = {"relative-pitch", "harmonic-pitch"}


def _command(args: argparse.Namespace, options: list[str]) -> str:
    """The command with every option spelled out (defaults included), to rerun it as is."""
    parts = ["musicenv", args.command]
    for opt in options:
        v = getattr(args, opt.replace("-", "_"))
        if isinstance(v, bool):
            if opt in _NEGATABLE:
                parts.append(f"--{opt}" if v else f"--no-{opt}")
            elif v:
                parts.append(f"--{opt}")
        elif v is not None and v != []:
            parts += [f"--{opt}", ",".join(v) if isinstance(v, list) else str(v)]
    return shlex.join(parts)


def _environment(threads: int) -> dict[str, Any]:
    import torch

    return {"torch": torch.__version__, "threads": threads, "cpu_count": os.cpu_count(),
            "machine": platform.machine(), "python": platform.python_version(),
            "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


# ---------------------------------------------------------------------------- outputs
def _check_outputs(paths: Any, force: bool) -> None:
    """Before any work: every output file can be written (its folder exists or can be
    created), and none overwrites a file shipped inside the package unless ``force``."""
    from musicenv.files import check_file_target, check_not_shipped

    for path in paths:
        check_not_shipped(path, force=force)
        check_file_target(path, what="output")


# ---------------------------------------------------------------------------- pretrain
_PRETRAIN_OPTIONS = ["corpus", "exclude", "melodies", "out", "arch", "layers", "hidden", "embed", "dropout", "heads",
                     "relative-pitch", "harmonic-pitch", "condition", "context-dropout",
                     "batch-size", "lr", "weight-decay", "steps", "eval-every", "patience", "max-minutes",
                     "no-augment", "seed", "split-seed", "threads"]


def _pretrain_melodies(args: argparse.Namespace) -> int:
    """``pretrain --corpus melodies``: the general prior on the shipped three-collection set
    (:mod:`musicenv.melodies`), optionally without one collection (``--exclude``)."""
    t_start = time.perf_counter()
    torch = _setup_torch(args.threads)
    from agents.note_rnn import NoteRNN, NoteRNNConfig, evaluate_nll, melody_examples, train
    from musicenv import melodies

    out = Path(args.out) if args.out else Path("runs") / "prior" / "note_rnn_melodies.pt"
    if out.suffix != ".pt":
        raise ValueError(f"--out must be a .pt file path, got {out}")
    _check_outputs((out, out.with_name(out.stem + ".metrics.json")), args.force)  # before any work
    args.out = str(out)  # the recorded command names it
    data = melodies.load(args.melodies)
    styles = [s for s in melodies.STYLES if s not in args.exclude]
    if not styles:
        raise ValueError("--exclude leaves no collection to train on")
    train_pairs, valid_pairs = data.split("train", styles), data.split("valid", styles)
    print(f"{data}; training on {', '.join(styles)}: {len(train_pairs)} train / {len(valid_pairs)} valid melodies")
    config = NoteRNNConfig(arch=args.arch, vocab_size=data.grid.vocab_size, embed_size=args.embed,
                           hidden_size=args.hidden, num_layers=args.layers, dropout=args.dropout, n_heads=args.heads,
                           conditioning=tuple(args.condition), bar_positions=4 * data.grid.steps_per_quarter,
                           relative_pitch=args.relative_pitch, harmonic_pitch=args.harmonic_pitch,
                           missing_context=True, styles=melodies.STYLES)
    torch.manual_seed(args.seed)
    model = NoteRNN(config, data.grid)
    augment = False if args.no_augment else "random"
    print(f"{model}; training (keys: {augment or 'as is'}, context dropout {args.context_dropout}, "
          f"{args.steps} updates max, {args.max_minutes} min max, {args.threads} threads)")
    kwargs = {**_train_kwargs(args), "augment": augment, "context_dropout": args.context_dropout}
    result = train(model, train_pairs, valid_pairs, **kwargs)
    per: dict[str, Any] = {}
    for style in melodies.STYLES:
        for part in ("valid", "test"):
            ex, _ = melody_examples(data.split(part, [style]))
            per.setdefault(style, {})[part] = evaluate_nll(model, ex)
    wall = time.perf_counter() - t_start
    command = _command(args, _PRETRAIN_OPTIONS)
    record = {"name": "melodies", "collections": styles, "excluded": list(args.exclude),
              "file": melodies.SHIPPED.name if args.melodies is None else str(args.melodies),
              "split": data.report.get("split"),
              "train": {"melodies": len(train_pairs), "tokens": int(sum(m.n_steps for _, m in train_pairs))},
              "valid": {"melodies": len(valid_pairs), "tokens": int(sum(m.n_steps for _, m in valid_pairs))}}
    training = {k: v for k, v in result.to_dict().items() if k != "history"}
    metrics = {"command": command, "wall_seconds_total": wall, "train_seconds": result.seconds, "corpus": record,
               "nll_with_context": per, "parameters": model.n_parameters, "config": config.to_dict(),
               "training": training, "history": result.history, "environment": _environment(args.threads)}
    model.save(out, corpus=record, training={**training, "command": command, **kwargs},
               metrics={"valid_nll": result.best_valid_nll, "per_collection": per})
    metrics["checkpoint_bytes"] = out.stat().st_size
    metrics_path = out.with_name(out.stem + ".metrics.json")
    _write_text(metrics_path, json.dumps(metrics, indent=2) + "\n")
    for style, r in per.items():
        print(f"{style:8s} valid {r['valid']:.4f}  test {r['test']:.4f} nats/token (with context)")
    print(f"training {result.seconds / 60:.1f} min ({result.steps} updates, stopped: {result.stopped}); "
          f"wrote {out} ({metrics['checkpoint_bytes'] / 1e6:.2f} MB) and {metrics_path}")
    return 0


def _cmd_pretrain(args: argparse.Namespace) -> int:
    if args.corpus == "melodies":
        return _pretrain_melodies(args)
    t_start = time.perf_counter()
    torch = _setup_torch(args.threads)
    from agents.note_rnn import NoteRNN, NoteRNNConfig, train

    out = Path(args.out) if args.out else Path("runs") / "prior" / f"note_rnn_{Path(str(args.corpus)).stem}.pt"
    if out.suffix != ".pt":
        raise ValueError(f"--out must be a .pt file path, got {out}")
    corpus_stem = Path(str(args.corpus)).stem
    outputs = (out, out.with_name(out.stem + ".metrics.json"), out.with_name(f"ngram_{corpus_stem}.npz"))
    _check_outputs(outputs, args.force)  # before any work: training can take many minutes
    args.out = str(out)  # the recorded command names it
    data, splits = _splits(args.corpus, args.split_seed)
    print(f"{args.corpus}: {len(splits.train)} train / {len(splits.valid)} valid / {len(splits.test)} test melodies "
          f"({splits.train.n_steps} / {splits.valid.n_steps} / {splits.test.n_steps} tokens)")
    rows, best, best_ngram = _baseline_rows(splits, data.grid)
    print(f"best n-gram on valid: order {best['order']} (k={best['k']:g}), test NLL {best['test']:.4f}")
    config = NoteRNNConfig(arch=args.arch, vocab_size=data.grid.vocab_size, embed_size=args.embed,
                           hidden_size=args.hidden, num_layers=args.layers, dropout=args.dropout, n_heads=args.heads,
                           conditioning=tuple(args.condition), bar_positions=4 * data.grid.steps_per_quarter,
                           relative_pitch=args.relative_pitch, harmonic_pitch=args.harmonic_pitch)
    torch.manual_seed(args.seed)
    model = NoteRNN(config, data.grid)
    print(f"{model}; training (augment={not args.no_augment}, {args.steps} updates max, "
          f"{args.max_minutes} min max, {args.threads} threads)")
    result = train(model, splits.train, splits.valid, **_train_kwargs(args))
    row = _model_row(model, splits)
    rows.append(row)
    wall = time.perf_counter() - t_start
    command = _command(args, _PRETRAIN_OPTIONS)
    metrics = {
        "command": command,
        "wall_seconds_total": wall,
        "train_seconds": result.seconds,
        "corpus": _corpus_record(args.corpus, data, splits, args.split_seed),
        "table": rows,
        "best_ngram": {"order": best["order"], "k": best["k"], "augmented": best["augmented"],
                       "valid": best["valid"], "test": best["test"]},
        "model": {"valid": row["valid"], "test": row["test"], "parameters": model.n_parameters,
                  "config": config.to_dict()},
        "improvement_over_best_ngram": 1.0 - row["test"] / best["test"],
        "training": {k: v for k, v in result.to_dict().items() if k != "history"},
        "history": result.history,
        "environment": _environment(args.threads),
    }
    model.save(out, corpus=metrics["corpus"], training={**metrics["training"], "command": command,
                                                         **_train_kwargs(args)},
               metrics={"valid_nll": row["valid"], "test_nll": row["test"], "table": rows,
                        "best_ngram": metrics["best_ngram"]})
    metrics["checkpoint_bytes"] = out.stat().st_size
    metrics_path = outputs[1]
    _write_text(metrics_path, json.dumps(metrics, indent=2) + "\n")
    best_ngram.meta.update(corpus=args.corpus, split=metrics["corpus"]["split"], valid_nll=best["valid"],
                           test_nll=best["test"], command=command,
                           grid={"min_pitch": data.grid.min_pitch, "max_pitch": data.grid.max_pitch,
                                 "steps_per_quarter": data.grid.steps_per_quarter})
    ngram_path = best_ngram.save(outputs[2])
    print(f"\nNLL in nats per token ({args.corpus}, whole held-out melodies):\n")
    print(format_table(rows))
    print(f"\nnote-RNN test NLL is {100 * metrics['improvement_over_best_ngram']:.1f} % below the best n-gram's "
          f"({best['order']}-gram). Training {result.seconds / 60:.1f} min ({result.steps} updates, "
          f"stopped: {result.stopped}), total {wall / 60:.1f} min.")
    print(f"wrote {out} ({metrics['checkpoint_bytes'] / 1e6:.2f} MB), {metrics_path}, {ngram_path}")
    return 0


# ---------------------------------------------------------------------------- evaluate-prior
#: Improvement over the own-trained n-gram the general prior must reach on every collection.
GOAL_GAIN = 0.20


def _with_context(examples: list, keep: tuple[str, ...]) -> list:
    """Copies of ``examples`` with every context not in ``keep`` set to -1 (not given)."""
    from dataclasses import replace

    import numpy as np

    out = []
    for e in examples:
        changes = {}
        for name in ("chord", "next_chord", "position"):
            if name not in keep and getattr(e, name) is not None:
                changes[name] = np.full(len(e.tokens), -1, dtype=np.int64)
        for name in ("key", "meter", "style"):
            if name not in keep:
                changes[name] = -1
        out.append(replace(e, **changes))
    return out


_ALL_CONTEXT = ("chord", "next_chord", "position", "key", "meter", "style")
_NO_STYLE = ("chord", "next_chord", "position", "key", "meter")


def _ngram_table(data, style: str, melody_file: Path) -> dict[str, Any]:
    """Uniform and n-gram rows for one collection (own train, k/order on valid), cached
    per melody file in the corpus cache directory (the fit takes minutes on Essen)."""
    import hashlib

    from musicenv.corpus import default_cache_dir
    from rewards.ngram import ngram_baselines

    digest = hashlib.sha256(melody_file.read_bytes()).hexdigest()[:16]
    cache = default_cache_dir() / f"ngram_baselines_{style}_{digest}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    parts = data.collections[style]
    table = ngram_baselines(parts.train.token_arrays(), parts.valid.token_arrays(), parts.test.token_arrays(),
                            data.grid)
    table = {k: v for k, v in table.items() if k != "models"}
    cache.parent.mkdir(parents=True, exist_ok=True)
    _write_text(cache, json.dumps(table, indent=1))
    return table


def melody_statistics(compositions) -> dict[str, float]:
    """Pooled statistics of a set of melodies, each with its key and chord track:
    ``in_key`` (notes whose pitch class is in the key, ``theory.KEY_SCALE_MASK``),
    ``strong_beat_chord_tones`` (strong-beat steps over a chord whose sounding pitch is a
    chord tone, as :func:`musicenv.metrics.harmony_statistics`), and the style figures
    ``note_length`` (mean steps per note), ``interval`` (mean |semitones| between
    successive notes) and ``notes_per_bar``."""
    import numpy as np

    from musicenv.metrics import harmony_statistics

    notes = in_key = strong_num = strong_den = bars = 0
    lengths, intervals = [], []
    for c in compositions:
        h = harmony_statistics(c)
        ns = c.notes()
        notes += len(ns)
        in_key += h["key_consistency"] * len(ns) if ns else 0
        bar = c.meter.steps_per_bar(c.grid.steps_per_quarter)
        bars += c.n_steps / bar
        lengths += [n.duration for n in ns]
        intervals += [abs(b.pitch - a.pitch) for a, b in zip(ns, ns[1:])]
        strong = _strong_counts(c)
        strong_num += strong[0]
        strong_den += strong[1]
    return {"pieces": len(compositions), "notes": notes, "in_key": in_key / max(notes, 1),
            "strong_beat_chord_tones": strong_num / max(strong_den, 1),
            "note_length": float(np.mean(lengths)) if lengths else float("nan"),
            "interval": float(np.mean(intervals)) if intervals else float("nan"),
            "notes_per_bar": notes / max(bars, 1e-9)}


def _strong_counts(c) -> tuple[int, int]:
    """(chord tones, scored steps) of the chord_tone_on_strong_beat term on one melody."""
    from musicenv.metrics import _HARMONY_SPEC, _iter_scored

    for _, _, values in _iter_scored(_HARMONY_SPEC, [c]):
        v = values[0, :, 0]
        return int((v > 0).sum()), int((v != 0).sum())
    return 0, 0


def conditioned_samples(model, n: int, *, style: str | None = None, seed: int = 0, context: bool = True,
                        temperature: float = 1.0, env_id: str = "MusicComposition-v0") -> list:
    """``n`` melodies sampled from ``model`` in the contexts the env draws (key,
    progression, meter; env reset seeds ``seed .. seed + n - 1``), fed that context
    (``context``) and ``style``; returned as compositions carrying the env's key and
    chords."""
    import gymnasium as gym
    import numpy as np

    import musicenv  # noqa: F401
    from musicenv.composition import Composition
    from musicenv.melodies import next_chord_track
    from musicenv.theory import Meter

    env = gym.make(env_id)
    contexts = []
    for i in range(n):
        env.reset(seed=seed + i)
        core = env.unwrapped.core
        contexts.append((int(core.batch.key[0]), core.batch.chords[0].copy(), core.meter))
    env.close()
    T = len(contexts[0][1])
    meter = contexts[0][2]
    bar = meter.steps_per_bar(model.grid.steps_per_quarter)
    chords = np.stack([c for _, c, _ in contexts])
    cond = None
    if context:
        full = {"chord": chords, "next_chord": np.stack([next_chord_track(c) for c in chords]),
                "key": np.repeat(np.array([k for k, _, _ in contexts])[:, None], T, 1),
                "position": np.broadcast_to(np.arange(T) % bar, (n, T)),
                "meter": np.full((n, T), Meter.SUPPORTED.index(str(meter))),
                "style": np.full((n, T), -1 if style is None else model.config.styles.index(style))}
        cond = {k: v for k, v in full.items() if k in model.config.conditioning} or None
    tokens = model.sample(n, T, temperature, seed=seed, cond=cond)
    from musicenv.theory import Key

    return [Composition(tokens[i], Key.from_index(k), meter, chords[i], model.grid)
            for i, (k, _, _) in enumerate(contexts)]


def _sample_rows(model, bach, data, n: int, seed: int) -> tuple[list[str], dict[str, Any]]:
    """Conditioned-sample figures and the real melodies' own, for the README."""
    import numpy as np

    from musicenv import melodies
    from musicenv.composition import Composition
    from musicenv.theory import Key, Meter

    out: dict[str, Any] = {}
    rows = [("new prior, key + chords, no style", conditioned_samples(model, n, seed=seed))]
    rows += [(f"new prior, key + chords, style {s}", conditioned_samples(model, n, seed=seed, style=s))
             for s in melodies.STYLES]
    rows += [("new prior, bare tokens", conditioned_samples(model, n, seed=seed, context=False)),
             ("Bach prior (token-only)", conditioned_samples(bach, n, seed=seed, context=False))]
    for s in melodies.STYLES:
        real = []
        for m in data.collections[s].test:
            chords = melodies.derive_chords(m.tokens, m.key, m.meter, m.grid)
            real.append(Composition(np.array(m.tokens), Key.from_index(m.key), Meter.parse(m.meter), chords, m.grid))
        rows.append((f"{s} test melodies under derived chords", real))
        if s == "bach":
            rows.append(("bach test melodies under the chorale's own chords", data.collections[s].test.compositions()))
    lines = ["| melodies | pieces | notes in key | strong-beat chord tones | note length (steps) | "
             "|interval| (semitones) | notes per bar |", "|---|---:|---:|---:|---:|---:|---:|"]
    for label, comps in rows:
        st = melody_statistics(comps)
        out[label] = st
        lines.append(f"| {label} | {st['pieces']} | {100 * st['in_key']:.1f} % | "
                     f"{100 * st['strong_beat_chord_tones']:.1f} % | {st['note_length']:.2f} | "
                     f"{st['interval']:.2f} | {st['notes_per_bar']:.2f} |")
    return lines, out


def _evaluate_melodies(args: argparse.Namespace, model) -> int:
    """The general prior's tables: per collection, and leave-one-collection-out."""
    from agents.note_rnn import BACH_PRIOR, NoteRNN, evaluate_nll, melody_examples, prior_path
    from musicenv import melodies

    mel_file = Path(args.melodies) if args.melodies else melodies.SHIPPED
    data = melodies.load(mel_file)
    bach = NoteRNN.load(BACH_PRIOR)
    styles = args.collections or list(melodies.STYLES)
    report: dict[str, Any] = {"checkpoint": str(args.checkpoint), "melodies": str(mel_file), "collections": {},
                              "leave_one_out": {}}
    lines = ["| collection | test melodies / tokens | uniform | best own n-gram (order, k) | Bach prior | "
             "new prior, bare tokens | new prior + key, meter, chords | + style | gain vs n-gram |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for style in styles:
        test = data.collections[style].test
        ex, _ = melody_examples(data.split("test", [style]))
        ng = _ngram_table(data, style, mel_file)
        best = ng["best"]
        row = {"melodies": len(test), "tokens": test.n_steps, "uniform": ng["uniform"]["test"],
               "ngram": best, "bach_prior": evaluate_nll(bach, ex),
               "bare": evaluate_nll(model, _with_context(ex, ())),
               "context": evaluate_nll(model, _with_context(ex, _NO_STYLE)),
               "context_style": evaluate_nll(model, ex)}
        row["gain_context_style"] = 1 - row["context_style"] / best["test"]
        row["gain_bare"] = 1 - row["bare"] / best["test"]
        report["collections"][style] = row
        lines.append(f"| {style} | {row['melodies']} / {row['tokens']} | {row['uniform']:.3f} | "
                     f"{best['test']:.3f} ({best['order']}, {best['k']:g}) | {row['bach_prior']:.3f} | "
                     f"{row['bare']:.3f} | {row['context']:.3f} | {row['context_style']:.3f} | "
                     f"{100 * row['gain_context_style']:.0f} % (bare {100 * row['gain_bare']:.0f} %) |")
    print("\nNLL in nats per token on each collection's test split (whole melodies):\n")
    print("\n".join(lines))
    loo_lines = ["| left out | model (budget) | with key, meter, chords | bare tokens | n-gram trained on it | "
                 "at or below? |", "|---|---|---:|---:|---:|---|"]
    for style in styles:
        path = Path(args.loo_dir) / f"note_rnn_no_{style}.pt" if args.loo_dir else \
            prior_path("default").with_name(f"note_rnn_no_{style}.pt")
        if not path.is_file():
            loo_lines.append(f"| {style} | (no model at {path}) | | | | |")
            continue
        loo = NoteRNN.load(path)
        ex, _ = melody_examples(data.split("test", [style]))
        ng = report["collections"][style]["ngram"]["test"]
        tr = loo.metadata.get("training", {})
        r = {"checkpoint": str(path), "context": evaluate_nll(loo, _with_context(ex, _NO_STYLE)),
             "bare": evaluate_nll(loo, _with_context(ex, ())), "ngram_own": ng,
             "training_minutes": round(tr.get("seconds", 0.0) / 60, 1), "updates": tr.get("steps")}
        report["leave_one_out"][style] = r
        loo_lines.append(f"| {style} | {path.name} ({r['updates']} updates, {r['training_minutes']} min) | "
                         f"{r['context']:.3f} | {r['bare']:.3f} | {ng:.3f} | "
                         f"{'yes' if r['context'] <= ng else 'no'} (bare: {'yes' if r['bare'] <= ng else 'no'}) |")
    print("\nLeave one collection out: trained without it, scored on its test split (nats/token):\n")
    print("\n".join(loo_lines))
    if args.samples:
        sample_lines, report["samples"] = _sample_rows(model, bach, data, args.samples, args.seed)
        print(f"\nSamples in MusicComposition-v0's contexts (key, progression, 4 bars of 4/4; env seeds "
              f"{args.seed}..{args.seed + args.samples - 1}, temperature 1), and real melodies:\n")
        print("\n".join(sample_lines))
    met = {s: r["gain_context_style"] >= GOAL_GAIN for s, r in report["collections"].items()}
    print(f"\ngoal: >= {100 * GOAL_GAIN:.0f} % below the own-trained n-gram on every collection (with context): "
          + ", ".join(f"{s} {'met' if ok else 'NOT met'}" for s, ok in met.items()))
    report["goal_met"] = met
    if args.json:
        _write_text(args.json, json.dumps(report, indent=2) + "\n")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    if args.json:  # before the minutes of scoring, not after them
        check_writable(args.json, what="--json file")
    _setup_torch(args.threads)
    from agents.note_rnn import NoteRNN, prior_path

    model = NoteRNN.load(prior_path(args.checkpoint))
    if args.corpus in (None, "melodies") and model.metadata.get("corpus", {}).get("name") == "melodies":
        return _evaluate_melodies(args, model)
    name = args.corpus or model.metadata.get("corpus", {}).get("name")
    if not name:
        raise ValueError("the checkpoint does not record its corpus; give --corpus")
    split_seed = args.split_seed if args.split_seed is not None else model.metadata.get("corpus", {}).get(
        "split", {}).get("seed", 0)
    data, splits = _splits(name, split_seed)
    if data.grid != model.grid:
        raise ValueError(f"corpus grid {data.grid} differs from the checkpoint's {model.grid}")
    rows, best, _ = _baseline_rows(splits, data.grid)
    row = _model_row(model, splits)
    rows.append(row)
    print(f"\nNLL in nats per token ({name}, split seed {split_seed}, whole held-out melodies):\n")
    print(format_table(rows))
    gain = 1.0 - row["test"] / best["test"]
    print(f"\nnote-RNN test NLL is {100 * gain:.1f} % below the best n-gram's ({best['order']}-gram, chosen on valid).")
    if args.json:
        _write_text(args.json, json.dumps({"checkpoint": str(args.checkpoint), "corpus": name,
                                           "split_seed": split_seed, "table": rows, "best_ngram": best,
                                           "improvement_over_best_ngram": gain}, indent=2) + "\n")
    return 0


# ---------------------------------------------------------------------------- finetune-prior
_FINETUNE_OPTIONS = ["checkpoint", "corpus", "out", "batch-size", "lr", "scratch-lr", "weight-decay", "steps",
                     "eval-every", "patience", "max-minutes", "no-augment", "seed", "split-seed", "threads"]


def _cmd_finetune(args: argparse.Namespace) -> int:
    torch = _setup_torch(args.threads)
    from agents.note_rnn import NoteRNN, prior_path, train

    out = Path(args.out)
    _check_outputs([out / f"note_rnn_{Path(str(args.corpus)).stem}_{label}.pt" for label in ("finetuned", "scratch")]
                   + [out / "transfer.json"], args.force)
    prior = NoteRNN.load(prior_path(args.checkpoint))
    source = prior.metadata.get("corpus", {}).get("name", "prior")
    data, splits = _splits(args.corpus, args.split_seed)
    if data.grid != prior.grid:
        raise ValueError(f"corpus grid {data.grid} differs from the prior's {prior.grid}")
    print(f"{args.corpus}: {len(splits.train)} train / {len(splits.valid)} valid / {len(splits.test)} test melodies")
    command = _command(args, _FINETUNE_OPTIONS)
    rows: list[dict[str, Any]] = []
    if not args.no_baselines:
        base_rows, best, _ = _baseline_rows(splits, data.grid)
        rows += [base_rows[0], {**[r for r in base_rows if r["model"] == f"{best['order']}-gram"][0],
                                "model": f"best n-gram ({best['order']}-gram, chosen on valid)"}]
    rows.append({**_model_row(prior, splits, f"(a) {source} prior as is"), "steps": 0, "seconds": 0.0})
    runs = {}
    for label, lr, init in (("finetuned", args.lr, prior), ("scratch", args.scratch_lr, None)):
        torch.manual_seed(args.seed)
        model = NoteRNN(prior.config, prior.grid)
        if init is not None:
            model.load_state_dict(init.state_dict())
        print(f"\n{label}: {model}, lr {lr:g}")
        result = train(model, splits.train, splits.valid, **{**_train_kwargs(args), "lr": lr})
        title = "(b) fine-tuned" if init is not None else "(c) from scratch, same budget"
        rows.append({**_model_row(model, splits, title), "steps": result.steps, "seconds": result.seconds})
        out.mkdir(parents=True, exist_ok=True)
        path = model.save(out / f"note_rnn_{Path(str(args.corpus)).stem}_{label}.pt",
                          corpus=_corpus_record(args.corpus, data, splits, args.split_seed),
                          training={**{k: v for k, v in result.to_dict().items() if k != "history"},
                                    "command": command, "init": str(args.checkpoint) if init is not None else None},
                          metrics={"valid_nll": rows[-1]["valid"], "test_nll": rows[-1]["test"]})
        runs[label] = {"checkpoint": str(path), **{k: v for k, v in result.to_dict().items()}}
    print(f"\nTransfer {source} -> {args.corpus}, NLL in nats per token on held-out {args.corpus} melodies:\n")
    print(format_table(rows))
    print("\n" + " | ".join(f"{r['model']}: {r['steps']} updates, {r['seconds'] / 60:.1f} min"
                            for r in rows if r.get("steps")))
    report = {"command": command, "source": source, "target": args.corpus, "table": rows, "runs": runs,
              "corpus": _corpus_record(args.corpus, data, splits, args.split_seed),
              "environment": _environment(args.threads)}
    _write_text(out / "transfer.json", json.dumps(report, indent=2) + "\n")
    print(f"wrote {out / 'transfer.json'} and the two checkpoints in {out}/")
    return 0


# ---------------------------------------------------------------------------- melody-corpus
def _cmd_melody_corpus(args: argparse.Namespace) -> int:
    from musicenv import melodies

    out = Path(args.out) if args.out else melodies.SHIPPED
    if out.exists() and not args.force:
        raise ValueError(f"{out} exists; give --force to overwrite it (or another --out)")
    t0 = time.perf_counter()
    report = melodies.build(out, jobs=args.jobs, cache_dir=args.cache_dir, progress=not args.quiet)
    for name, r in report["collections"].items():
        print(f"{name:8s} {r['melodies']:5d} melodies, {r['steps']:7d} steps, split {r['split']}, "
              f"{r['exact_duplicates']} exact duplicates, chords {r['chord_source']}, parsed in {r['parse_seconds']} s")
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB) in {time.perf_counter() - t0:.1f} s")
    return 0


# ---------------------------------------------------------------------------- parsers
def _conditions(text: str) -> list[str]:
    from_text = [c.strip() for c in text.split(",") if c.strip()]
    from agents.note_rnn import CONDITIONS as accepted
    bad = [c for c in from_text if c not in accepted]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown conditioning {bad}; accepted: {', '.join(accepted)}")
    return from_text


def _styles(text: str) -> list[str]:
    from musicenv.melodies import STYLES

    names = [c.strip() for c in text.split(",") if c.strip()]
    bad = [c for c in names if c not in STYLES]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown collection {bad}; accepted: {', '.join(STYLES)}")
    return names


def _positive_int(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return v


def _add_training_options(p: argparse.ArgumentParser, *, steps: int, lr: float, max_minutes: float | None) -> None:
    p.add_argument("--batch-size", type=_positive_int, default=64, help="melodies per update (default: 64)")
    p.add_argument("--lr", type=float, default=lr, help=f"peak learning rate (default: {lr:g})")
    p.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay (default: 0)")
    p.add_argument("--steps", type=_positive_int, default=steps, help=f"max updates (default: {steps})")
    p.add_argument("--eval-every", type=_positive_int, default=100, help="updates between valid evaluations (default: 100)")
    p.add_argument("--patience", type=_positive_int, default=8,
                   help="stop after this many evaluations without improvement (default: 8)")
    p.add_argument("--max-minutes", type=float, default=max_minutes,
                   help=f"stop at the first evaluation after this much training time (default: {max_minutes})")
    p.add_argument("--no-augment", action="store_true", help="train on the melodies as they are, not in all 12 keys")
    p.add_argument("--seed", type=int, default=0, help="training seed (default: 0)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the train/valid/test split (default: 0)")
    p.add_argument("--threads", type=_positive_int, default=2, help="torch threads (default: 2)")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``pretrain``, ``evaluate-prior`` and ``finetune-prior`` to the ``musicenv`` parser."""
    p = subparsers.add_parser("pretrain", help="train a note-RNN prior and compare it with n-gram baselines",
                              description=_cmd_pretrain.__doc__ or __doc__.split("\n\n")[1])
    p.add_argument("--corpus", default="bach",
                   help="corpus name or path for musicenv.corpus.load, or 'melodies' for the general prior's "
                        "shipped bach + essen + oneills set (musicenv.melodies) (default: bach)")
    p.add_argument("--exclude", type=_styles, default=[],
                   help="with --corpus melodies: collections to leave out (leave-one-collection-out models)")
    p.add_argument("--melodies", default=None,
                   help="with --corpus melodies: a melody file written by `musicenv melody-corpus` "
                        "(default: the shipped one)")
    p.add_argument("--context-dropout", type=float, default=0.15,
                   help="with --corpus melodies: conditioning dropout p (default: 0.15)")
    p.add_argument("--out", default=None, help="checkpoint path (.pt; default: runs/prior/note_rnn_<corpus>.pt). The "
                                               "metrics JSON and the best n-gram are written next to it")
    p.add_argument("--force", action="store_true",
                   help="allow writing over a file shipped inside the package (e.g. agents/pretrained/)")
    p.add_argument("--arch", default="lstm", choices=["lstm", "gru", "transformer"], help="architecture (default: lstm)")
    p.add_argument("--layers", type=_positive_int, default=2, help="layers (default: 2)")
    p.add_argument("--hidden", type=_positive_int, default=128, help="units per layer / model width (default: 128)")
    p.add_argument("--embed", type=_positive_int, default=64, help="token embedding width, RNNs (default: 64)")
    p.add_argument("--dropout", type=float, default=0.1, help="dropout (default: 0.1)")
    p.add_argument("--heads", type=_positive_int, default=4, help="attention heads, transformer (default: 4)")
    p.add_argument("--relative-pitch", action=argparse.BooleanOptionalAction, default=True,
                   help="relative-pitch features: intervals from the last pitch, pitch classes above the first "
                        "(default: on)")
    p.add_argument("--harmonic-pitch", action=argparse.BooleanOptionalAction, default=False,
                   help="output heads scoring each pitch by its pitch class above the key's tonic and the chord's "
                        "root (needs key or chord in --condition; default: off)")
    p.add_argument("--condition", type=_conditions, default=[],
                   help="comma-separated conditioning, any of chord,next_chord,key,position,meter,style "
                        "(default: none, token-only)")
    _add_training_options(p, steps=1400, lr=3e-3, max_minutes=13.0)
    p.set_defaults(func=_cmd_pretrain)

    p = subparsers.add_parser("melody-corpus", help="rebuild the general prior's melody file (musicenv.melodies)",
                              description="Parse music21's bach, essenFolksong and oneills1850 collections (cached), "
                                          "derive chord tracks, split, and write the compressed token arrays the "
                                          "general prior trains on.")
    p.add_argument("--out", default=None, help="output .npz (default: the shipped musicenv/data/melodies_v1.npz)")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.add_argument("--jobs", type=_positive_int, default=None, help="parser processes (default: min(2, cpus))")
    p.add_argument("--cache-dir", default=None, help="musicenv.corpus cache directory (default: $MUSICENV_CACHE "
                                                     "or ~/.cache/musicenv)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_melody_corpus)

    p = subparsers.add_parser("evaluate-prior", help="NLL table of a prior and the n-gram baselines on a test split")
    p.add_argument("--checkpoint", default="default",
                   help="checkpoint path, or 'default' (the general prior: per-collection and leave-one-out "
                        "tables), 'bach' or 'small' for a shipped prior")
    p.add_argument("--corpus", default=None, help="corpus (default: the one the checkpoint was trained on)")
    p.add_argument("--split-seed", type=int, default=None, help="split seed (default: the checkpoint's)")
    p.add_argument("--json", default=None, help="also write the table to this JSON file")
    p.add_argument("--threads", type=_positive_int, default=2, help="torch threads (default: 2)")
    p.add_argument("--melodies", default=None, help="general prior: melody file (default: the shipped one)")
    p.add_argument("--collections", type=_styles, default=None,
                   help="general prior: collections to evaluate (default: bach,essen,oneills)")
    p.add_argument("--samples", type=int, default=100,
                   help="general prior: conditioned samples per row of the sample table (0: none; default: 100)")
    p.add_argument("--seed", type=int, default=0, help="general prior: seed of the samples (default: 0)")
    p.add_argument("--loo-dir", default=None,
                   help="general prior: folder of the leave-one-out models note_rnn_no_<collection>.pt "
                        "(default: beside the shipped prior)")
    p.set_defaults(func=_cmd_evaluate)

    p = subparsers.add_parser("finetune-prior", help="transfer: fine-tune a prior on another corpus vs. training from scratch")
    p.add_argument("--checkpoint", default="default", help="prior to start from ('default' / 'small': a shipped Bach prior)")
    p.add_argument("--corpus", default="essen", help="target corpus (default: essen)")
    p.add_argument("--out", default="runs/transfer", help="output directory (default: runs/transfer)")
    p.add_argument("--force", action="store_true", help="allow writing over files shipped inside the package")
    p.add_argument("--scratch-lr", type=float, default=3e-3, help="peak learning rate from scratch (default: 3e-3)")
    p.add_argument("--no-baselines", action="store_true", help="skip the n-gram baselines on the target corpus")
    _add_training_options(p, steps=400, lr=1e-3, max_minutes=3.5)
    p.set_defaults(func=_cmd_finetune)
