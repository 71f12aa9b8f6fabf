"""A melody GAN: LSTM generator, 1-D CNN critic, and the critic as a reward term.

This module trains and evaluates it (training layer); the model and its checkpoints are
in the model layer, :mod:`agents.models.gan`, the reward term and the compose source in
:mod:`agents.models.discriminator`; their public names are re-exported here.

Data: fixed-length segments
---------------------------
The GAN works on segments of ``n_bars`` bars (default 4 bars of 4/4 at 16ths, i.e.
T = 64 steps, one default ``MusicComposition-v0`` episode) cut from corpus melodies at
every bar line (:func:`corpus_segments`; only melodies in the chosen meter; melodies
start on a downbeat, see :mod:`musicenv.corpus`). A segment that starts inside a note
re-articulates it (its first token becomes that note's NOTE_ON); segments without a
single note are skipped. With ``--augment`` (:meth:`SegmentSet.augmented`) every segment
is also used in all 12 keys (:func:`rewards.ngram.best_shift` rules: the octave placement
that keeps most notes in range, the rest folded), key and chords moving with it. The
shipped GAN is trained without it: within a 10-minute budget the 12-fold data learnt
about half as fast (after 400 generator steps, valid overlaps of pitch class / interval /
note length 0.72 / 0.42 / 0.62 with it, 0.88 / 0.51 / 0.46 without), so the shipped model
knows best the keys the chorales use (17 of the 24, mostly with up to three sharps or flats).

Representation: a pitch sequence and a rhythm sequence
------------------------------------------------------
Per step t the model reads or writes two channels:

* **pitch** ``p_t``: a one-hot over P + 1 classes, index 0 = REST and index i = MIDI
  ``grid.min_pitch + i - 1`` (P = 36 by default): *what sounds* at step t;
* **rhythm** ``o_t``: 1 if an event (note or rest) starts at step t, 0 if the previous
  one goes on. ``o_0 = 1`` always.

So a held note keeps its pitch in ``p`` while ``o`` is 0 (the pitch channel is a piano
roll, the rhythm channel marks articulations). Tokens map both ways
(:func:`tokens_to_channels`, :func:`channels_to_tokens`)::

    o_t = 0                 -> HOLD
    o_t = 1, p_t = REST     -> REST
    o_t = 1, p_t = i >= 1   -> NOTE_ON(grid.min_pitch + i - 1)   (token i + 1)

Models
------
:class:`Generator`: noise ``z`` (and optionally the key, and the chord at each step)
sets the LSTM's initial state; each step it reads the previous step's pitch and onset,
its position in the bar (one-hot), ``z`` and the context, and emits pitch logits (P + 1)
and onset logits (2). The pitch it writes is ``p_t = o_t q_t + (1 - o_t) p_{t-1}``:
a HOLD keeps the sounding pitch by construction, so the generator cannot write a held
note whose pitch changes, and the critic never sees one.

:class:`Critic`: a 1-D CNN over the channels [pitch one-hot, onset, position in bar
one-hot, context] -> four strided convolutions (LeakyReLU, no normalisation, as
WGAN-GP requires) -> mean over time -> one score. Mean pooling makes it length-agnostic:
it scores segments of any length (it was trained on T-step ones).

Objective: WGAN-GP on straight-through Gumbel-softmax one-hots
----------------------------------------------------------------
Training is a Wasserstein GAN with gradient penalty (Gulrajani et al. 2017; penalty 10,
``n_critic`` = 5 critic steps per generator step, Adam betas (0.5, 0.9) as in the paper,
lr 2e-4 for both networks: twice the paper's, which learnt faster within a 10-minute
budget here). The
generator's categorical choices are made differentiable with the **straight-through
Gumbel-softmax** (Jang et al. 2017): the forward pass samples hard one-hots (Gumbel-max,
i.e. exact categorical samples) and the backward pass uses the gradient of the
tempered softmax. Why this pair:

* WGAN-GP is the objective known to train on discrete sequences without pre-training
  (Gulrajani et al.'s character model); the standard GAN loss with a sigmoid
  discriminator saturates early when the discriminator wins, which on short budgets
  it does.
* The critic only ever sees *hard* one-hots, from the corpus and from the generator.
  With plain softmax outputs (Gulrajani et al.'s choice, ``relaxation="softmax"``
  here) a critic can tell fakes by their softness alone; that still trains a
  generator, but the critic's score of a hard, token-valued melody then means little,
  and this critic doubles as a reward for an RL agent's token sequences. Straight-through
  keeps the critic's inputs in the domain it is used on.

Checkpoints
-----------
``torch.save`` of a plain dict: ``format`` (``"musicenv.gan"``), ``format_version``,
``metadata`` (a JSON string: config, grid, meter, segment length, corpus, training
settings, metrics), ``state_dict`` (generator and critic tensors) and ``reference``
(tensors: the training segments' tokens, keys and chords, kept so that sampling a
context, calibrating the reward and SeqGAN-style critic updates work offline), read back
with ``torch.load(weights_only=True)``. :meth:`MelodyGAN.load` raises
:class:`CheckpointError` naming the problem for a missing, corrupt or foreign file, a
missing key, an unknown format version, weights that do not fit the config, or a grid
different from the one asked for. ``MelodyGAN.load()`` loads the shipped
:data:`DEFAULT_GAN` (Bach chorale sopranos; figures in its ``.metrics.json``).

Reward term
-----------
:class:`DiscriminatorReward` (``"discriminator"`` in :mod:`rewards`): the critic's
calibrated score of the finished melody, optionally as per-step shaping, optionally
updating the critic on the agent's own episodes (SeqGAN-style); see its docstring.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from agents.models.discriminator import DiscriminatorReward
from agents.models.gan import (
    CONDITIONS,
    DEFAULT_GAN,
    FORMAT_VERSION,
    RELAXATIONS,
    CheckpointError,
    Critic,
    GANConfig,
    Generator,
    MelodyGAN,
    SegmentSet,
    _sounding_tokens,
    channels_to_tokens,
    critic_losses,
    critic_step,
    random_token_melodies,
    tokens_to_channels,
)
from musicenv.encoding import DEFAULT_GRID, FIRST_PITCH_TOKEN, HOLD, TokenGrid
from musicenv.theory import (
    Meter,
)

__all__ = ["GANConfig", "Generator", "Critic", "MelodyGAN", "CheckpointError", "SegmentSet", "GANTrainResult",
           "DiscriminatorReward", "corpus_segments", "critic_losses", "critic_step", "tokens_to_channels",
           "channels_to_tokens", "random_token_melodies", "random_note_melodies", "train", "evaluate",
           "format_evaluation", "DEFAULT_GAN", "FORMAT_VERSION", "CONDITIONS", "RELAXATIONS"]


def corpus_segments(corpus, n_bars: int = 4, meter: str = "4/4", stride_bars: int = 1) -> SegmentSet:
    """Segments of ``n_bars`` bars of every melody of ``corpus`` (a
    :class:`~musicenv.corpus.MelodyCorpus`) in ``meter``, starting at every
    ``stride_bars``-th bar line (see module doc). Raises ``ValueError`` if none fits."""
    grid = corpus.grid
    bar = Meter.parse(meter).steps_per_bar(grid.steps_per_quarter)
    T = n_bars * bar
    toks, keys, chords = [], [], []
    for m in corpus:
        if Meter.parse(m.meter) != Meter.parse(meter) or m.n_steps < T:
            continue
        tokens = np.asarray(m.tokens, dtype=np.int64)
        sounding = _sounding_tokens(tokens)
        for s in range(0, m.n_steps - T + 1, stride_bars * bar):
            w = tokens[s:s + T].copy()
            if w[0] == HOLD:
                w[0] = sounding[s]
            if not (w >= FIRST_PITCH_TOKEN).any():
                continue
            toks.append(w)
            keys.append(int(m.key))
            chords.append(np.asarray(m.chords[s:s + T], dtype=np.int64))
    if not toks:
        raise ValueError(f"no melody of corpus {getattr(corpus, 'name', '')!r} has {n_bars} bars of {meter}")
    return SegmentSet(np.stack(toks), np.array(keys, dtype=np.int64), np.stack(chords), grid, bar)



@dataclass
class GANTrainResult:
    """What :func:`train` did: generator steps, wall time, the best evaluation."""

    steps: int
    seconds: float
    best_step: int
    best_valid: dict[str, float]
    stopped: str
    history: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


EVAL_FEATURES = ("pitch_class", "interval", "note_length")


def _quick_eval(model: MelodyGAN, reference_tokens: np.ndarray, n: int, seed: int) -> dict[str, float]:
    from musicenv.metrics import compare_sets, distinct_n

    samples = model.generate(n, seed)
    cmp = compare_sets(list(samples), list(reference_tokens), features=EVAL_FEATURES)
    out = {f"overlap/{f}": cmp[f]["overlap"] for f in EVAL_FEATURES}
    out["overlap/mean"] = float(np.nanmean([out[f"overlap/{f}"] for f in EVAL_FEATURES]))
    out["distinct_4"] = distinct_n(list(samples), 4)
    return out


def train(model: MelodyGAN, data: SegmentSet, valid: SegmentSet | None = None, *, max_steps: int = 3000,
          max_minutes: float | None = None, batch_size: int = 64, n_critic: int = 5, gp_weight: float = 10.0,
          lr: float = 2e-4, betas: tuple[float, float] = (0.5, 0.9), eval_every: int = 200,
          eval_samples: int = 128, seed: int = 0, log_dir: str | os.PathLike | None = None,
          checkpoint_path: str | os.PathLike | None = None, progress: bool = True,
          callback: Callable[[int, dict[str, float]], None] | None = None) -> GANTrainResult:
    """Train ``model`` adversarially on ``data`` (WGAN-GP, see module doc).

    Each generator step follows ``n_critic`` critic steps, each on a fresh batch of
    ``batch_size`` real segments (their keys/chords also condition the fakes) against
    generated ones. Stops after ``max_steps`` generator steps or ``max_minutes``. Every
    ``eval_every`` steps (and at the end) ``eval_samples`` melodies are compared with the
    ``valid`` segments (overlapped area of the pitch-class, interval and note-length
    histograms, :func:`musicenv.metrics.compare_sets`); the weights with the best mean
    overlap are restored at the end (GAN training oscillates) and, with
    ``checkpoint_path``, saved there after every improvement. ``log_dir`` gets
    TensorBoard scalars. Shows a tqdm progress bar.
    """
    from musicenv.progress import progress_bar  # tqdm on a terminal, lines in a pipe

    if len(data) < 2:
        raise ValueError("need at least 2 training segments")
    if data.grid != model.grid or data.seq_len != model.config.seq_len or data.steps_per_bar != model.config.steps_per_bar:
        raise ValueError(f"segments (T={data.seq_len}, bar={data.steps_per_bar}, {data.grid}) do not fit the model "
                         f"(T={model.config.seq_len}, bar={model.config.steps_per_bar}, {model.grid})")
    for name, v in (("max_steps", max_steps), ("batch_size", batch_size), ("n_critic", n_critic)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    cfg = model.config
    opt_g = torch.optim.Adam(model.generator.parameters(), lr=lr, betas=betas)
    opt_d = torch.optim.Adam(model.critic.parameters(), lr=lr, betas=betas)
    writer = None
    if log_dir is not None:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(log_dir))
    ref_tokens = valid.tokens if valid is not None and len(valid) else None
    t0 = time.perf_counter()
    deadline = None if max_minutes is None else t0 + 60.0 * max_minutes
    best_score, best_step, best_valid, best_state = -math.inf, 0, {}, None
    history: list[dict[str, float]] = []
    stopped = "max_steps"
    T = cfg.seq_len
    hard = cfg.relaxation == "st_gumbel"

    def evaluate_now(step: int) -> None:
        nonlocal best_score, best_step, best_valid, best_state
        model.eval()
        res = _quick_eval(model, ref_tokens, eval_samples, seed=seed + step)
        model.train()
        res["step"] = step
        res["minutes"] = (time.perf_counter() - t0) / 60
        history.append(res)
        if writer is not None:
            for k, v in res.items():
                if k not in ("step", "minutes"):
                    writer.add_scalar(f"valid/{k}", v, step)
        if res["overlap/mean"] > best_score:
            best_score, best_step, best_valid = res["overlap/mean"], step, dict(res)
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if checkpoint_path is not None:
                model.save(checkpoint_path, training_progress={"step": step, "valid": res})

    model.train()
    bar = progress_bar(total=max_steps, desc="train-gan", unit="step", disable=not progress, dynamic_ncols=True)
    step = 0
    logs: dict[str, float] = {}
    try:
        while step < max_steps:
            if deadline is not None and time.perf_counter() > deadline:
                stopped = "max_minutes"
                break
            # Critic: n_critic batches; all fakes generated in one batched call.
            idx = rng.integers(0, len(data), (n_critic, batch_size))
            reals = [data.subset(i) for i in idx]
            with torch.no_grad():
                all_keys = np.concatenate([r.keys for r in reals])
                all_chords = np.concatenate([r.chords for r in reals])
                ctx = model.context(all_keys, all_chords, T)
                z = torch.randn(n_critic * batch_size, cfg.noise_size, generator=gen)
                fp, fo = model.generator(z, ctx, T, hard=hard, tau=cfg.tau, gen=gen)
            for k in range(n_critic):
                sl = slice(k * batch_size, (k + 1) * batch_size)
                logs = critic_step(model, opt_d, reals[k], None, (fp[sl], fo[sl]), gp_weight=gp_weight, gen=gen)
            # Generator: maximise the critic's score of its samples.
            real = data.subset(rng.integers(0, len(data), batch_size))
            ctx = model.context(real.keys, real.chords, T)
            z = torch.randn(batch_size, cfg.noise_size, generator=gen)
            fp, fo = model.generator(z, ctx, T, hard=hard, tau=cfg.tau, gen=gen)
            loss_g = -model.critic(fp, fo, ctx).mean()
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            step += 1
            logs["generator_loss"] = float(loss_g.detach())
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(W=f"{logs['wasserstein']:.3f}", gp=f"{logs['gradient_penalty']:.3f}",
                                best=f"{best_score:.3f}")
                if writer is not None:
                    for k, v in logs.items():
                        writer.add_scalar(f"train/{k}", v, step)
            if callback is not None:
                callback(step, logs)
            if ref_tokens is not None and eval_every and step % eval_every == 0:
                evaluate_now(step)
    finally:
        bar.close()
    if ref_tokens is not None and (not history or history[-1]["step"] != step):
        evaluate_now(step)
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    if writer is not None:
        writer.close()
    return GANTrainResult(step, time.perf_counter() - t0, best_step if best_state is not None else step,
                          best_valid, stopped, history)



#: Note lengths (steps) drawn by :func:`random_note_melodies`: 16th, 8th, dotted 8th,
#: quarter, dotted quarter, half.
RANDOM_NOTE_LENGTHS = (1, 2, 3, 4, 6, 8)


def random_note_melodies(n: int, length: int, grid: TokenGrid = DEFAULT_GRID, seed: int = 0, *,
                         low: int = 60, high: int = 79) -> np.ndarray:
    """A "random melody" baseline: back-to-back notes (no rests), each pitch uniform in
    MIDI ``low..high`` (a soprano's C4..G5), each length uniform over
    :data:`RANDOM_NOTE_LENGTHS`; the last note is cut at ``length``. (n, length) int64."""
    rng = np.random.default_rng(seed)
    out = np.full((n, length), HOLD, dtype=np.int64)
    for i in range(n):
        t = 0
        while t < length:
            out[i, t] = grid.token(int(rng.integers(low, high + 1)))
            t += int(rng.choice(RANDOM_NOTE_LENGTHS))
    return out


def _diversity(samples: Sequence[np.ndarray], train_rows: set[bytes] | None) -> dict[str, float]:
    from musicenv.metrics import as_composition, distinct_ngrams, mean_pairwise_edit_distance

    arr = [np.asarray(s, dtype=np.int64) for s in samples]
    out = {k: float(v) for k, v in distinct_ngrams(arr).items()}
    out["edit_distance"] = mean_pairwise_edit_distance([as_composition(a) for a in arr], normalize=True)
    out["unique"] = len({a.tobytes() for a in arr}) / len(arr)
    if train_rows is not None:
        out["copied"] = float(np.mean([a.tobytes() in train_rows for a in arr]))
    return out


def evaluate(model: MelodyGAN, corpus: Any = "bach", *, n: int = 200, seed: int = 0, split_seed: int = 0,
             include_prior: bool = True, progress: bool = False) -> dict[str, dict[str, float]]:
    """Measure the GAN's samples against the corpus's held-out test split.

    Sets of ``n`` melodies of T steps each: ``gan`` (:meth:`MelodyGAN.generate`, contexts
    from its reference segments), ``random_tokens`` (:func:`random_token_melodies`),
    ``random_melody`` (:func:`random_note_melodies`), ``prior`` (the shipped note-RNN,
    :mod:`agents.note_rnn`, sampled at temperature 1 for T steps; left out if it is not
    installed) and ``corpus_valid`` (the valid split's segments: the ceiling a model of
    the corpus could reach). The reference is the test split cut into non-overlapping
    T-step segments (:func:`corpus_segments` with a stride of the segment length).

    Per set: ``overlap/<feature>`` (overlapped area of the pooled histograms with the
    reference's, :func:`musicenv.metrics.compare_sets`; 1 = same distribution) for the
    pitch-class, interval and note-length histograms; ``kl/<feature>``; diversity:
    ``distinct_1..4`` (distinct token n-grams / all), ``edit_distance`` (mean pairwise
    edit distance of note sequences / longer length), ``unique`` (share of distinct
    samples) and ``copied`` (share of samples that equal a training segment exactly, in
    any key). ``corpus`` is a name for :func:`musicenv.corpus.load` or a loaded corpus.
    """
    from musicenv import corpus as corpus_mod
    from musicenv.metrics import compare_sets

    mc = corpus_mod.load(corpus, model.grid, progress=progress) if isinstance(corpus, str) else corpus
    split = mc.split(seed=split_seed)
    bars = model.config.seq_len // model.config.steps_per_bar
    meter = model.metadata.get("meter", "4/4")
    test = corpus_segments(split.test, bars, meter, stride_bars=bars)
    valid = corpus_segments(split.valid, bars, meter, stride_bars=bars)
    train_segs = corpus_segments(split.train, bars, meter, stride_bars=1)
    train_rows = {r.tobytes() for r in train_segs.augmented().tokens}
    T = model.config.seq_len
    rng = np.random.default_rng(seed)
    sets: dict[str, np.ndarray] = {
        "gan": model.generate(n, seed),
        "random_tokens": random_token_melodies(n, T, model.grid, seed),
        "random_melody": random_note_melodies(n, T, model.grid, seed),
    }
    notes: dict[str, Any] = {}
    if include_prior:
        try:
            from agents.note_rnn import NoteRNN

            prior = NoteRNN.load(grid=model.grid)
            sets["prior"] = prior.sample(n, T, 1.0, seed=seed)
        except (ImportError, ValueError, OSError) as e:  # the prior is optional here; say why it is missing
            notes["prior"] = f"left out: {e}"
    pick = rng.choice(len(valid), size=min(n, len(valid)), replace=False)
    sets["corpus_valid"] = valid.tokens[pick]
    reference = list(test.tokens)
    out: dict[str, dict[str, float]] = {}
    for name, tokens in sets.items():
        cmp = compare_sets(list(tokens), reference, features=EVAL_FEATURES)
        row = {f"overlap/{f}": cmp[f]["overlap"] for f in EVAL_FEATURES}
        row.update({f"kl/{f}": cmp[f]["kl"] for f in EVAL_FEATURES})
        row.update(_diversity(list(tokens), train_rows))
        row["n"] = float(len(tokens))
        out[name] = row
    out["_reference"] = {"test_segments": float(len(test)), "valid_segments": float(len(valid)),
                         "train_segments": float(len(train_segs))}
    if notes:
        out["_notes"] = notes
    return out


def format_evaluation(results: dict[str, dict[str, float]]) -> str:
    """A Markdown table of :func:`evaluate`'s results (one row per set)."""
    cols = [f"overlap/{f}" for f in EVAL_FEATURES] + ["distinct_2", "distinct_4", "edit_distance", "unique", "copied"]
    head = ["set", "n", "pitch-class overlap", "interval overlap", "note-length overlap",
            "distinct-2", "distinct-4", "edit dist.", "unique", "copied"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for name, row in results.items():
        if name.startswith("_"):
            continue
        cells = [f"{row.get(c, math.nan):.3f}" for c in cols]
        lines.append(f"| {name} | {int(row['n'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


