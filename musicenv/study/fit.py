"""A Bradley–Terry preference model over piece features, fitted as a bootstrap ensemble.

Each piece x gets a utility u(x) = w · φ(x), where φ standardises the features of
:func:`musicenv.study.features.piece_features` (mean 0, sd 1 over the study's pieces)
and, with ``degree=2``, appends their squares (so a model can prefer a *middle* value,
e.g. a moderate number of notes per bar). The Bradley–Terry likelihood
P(a preferred to b) = σ(u(a) − u(b)) (Bradley & Terry 1952; the reward models of
preference-based RL, Christiano et al. 2017) is maximised with an L2 penalty λ‖w‖²/2;
"no preference" answers count as half a win for each side. λ is chosen by 5-fold
cross-validation on the training pairs.

The ensemble is ``members`` such models, each fitted on a bootstrap resample of the
training answers. Its score of a piece is

    value(x) = mean_m u_m(x) − k · sd_m u_m(x) − offset,

the mean minus ``k`` times the members' spread (pessimism where the answers say little,
against over-optimisation, as in ensemble reward models), with ``offset`` the mean
ensemble utility of the study's pieces (so an average study piece scores 0). Units are
logits of preference: a piece scoring 1 more than another is preferred with probability
σ(1) = 0.73.

Held-out pair accuracy: a share ``holdout`` of the answers (not their pieces) is set
aside before fitting; accuracy is the share of held-out answers with a preference whose
winner the ensemble mean ranks higher. Models save to JSON (:meth:`PreferenceModel.save`;
no pickle anywhere).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["PreferenceModel", "PreferenceModelError", "fit_preference", "fit_bradley_terry",
           "pair_accuracy", "FORMAT_VERSION", "KIND", "DEFAULT_LAMBDAS"]

FORMAT_VERSION = 1
KIND = "musicenv.preference"
DEFAULT_LAMBDAS = (0.03, 0.3, 3.0, 30.0)


class PreferenceModelError(ValueError):
    """A preference model file that is missing, corrupt, or does not fit the features computed here;
    or fitting data that cannot make a model."""


def _expand(Z: np.ndarray, degree: int) -> np.ndarray:
    return np.concatenate([Z, Z**2 - 1.0], axis=1) if degree == 2 else Z


def fit_bradley_terry(F: np.ndarray, a: np.ndarray, b: np.ndarray, y: np.ndarray, lam: float,
                      weights: np.ndarray | None = None) -> np.ndarray:
    """Weights w of the Bradley–Terry model σ(w·(F[a] − F[b])) fitted to outcomes ``y``
    (1: a preferred, 0: b preferred, 0.5: no preference), with L2 penalty ``lam``; the
    optional ``weights`` count each answer that many times (bootstrap)."""
    D = F[a] - F[b]
    c = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=np.float64)
    n = D.shape[1]

    def loss(w: np.ndarray) -> float:
        d = D @ w
        # -[y log σ(d) + (1 - y) log σ(-d)] = softplus(d) - y d, written stably
        return float(c @ (np.logaddexp(0.0, d) - y * d)) + 0.5 * lam * float(w @ w)

    # Newton's method with backtracking: the loss is strictly convex (lam > 0), so a few
    # iterations reach the optimum to machine precision.
    w = np.zeros(n)
    value = loss(w)
    for _ in range(50):
        d = D @ w
        p = 0.5 * (1.0 + np.tanh(0.5 * d))
        grad = D.T @ (c * (p - y)) + lam * w
        hess = (D * (c * p * (1.0 - p))[:, None]).T @ D + lam * np.eye(n)
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while True:
            new = w - t * step
            new_value = loss(new)
            if new_value <= value - 1e-4 * t * float(grad @ step) or t < 1e-8:
                break
            t *= 0.5
        converged = value - new_value < 1e-10 * max(1.0, abs(value))
        w, value = new, new_value
        if converged:
            break
    return w


def pair_accuracy(u: np.ndarray, a: np.ndarray, b: np.ndarray, y: np.ndarray) -> float:
    """Share of answers with a preference (y != 0.5) whose winner has the higher ``u``
    (ties in u count half). NaN if there are none."""
    decided = y != 0.5
    if not decided.any():
        return math.nan
    d = (u[a] - u[b])[decided]
    won = np.where(y[decided] == 1.0, d, -d)
    return float(np.mean((won > 0) + 0.5 * (won == 0)))


@dataclass
class PreferenceModel:
    """A fitted ensemble (see the module doc). ``weights`` has shape (members, features × degree)."""

    feature_names: list[str]
    groups: list[str]
    mean: np.ndarray
    std: np.ndarray
    weights: np.ndarray
    degree: int = 2
    offset: float = 0.0
    lam: float = 1.0
    metrics: dict[str, Any] = field(default_factory=dict)

    def member_utilities(self, X: np.ndarray) -> np.ndarray:
        """u_m(x) of each member for feature rows ``X`` (n, features): shape (members, n)."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(self.feature_names):
            raise PreferenceModelError(f"expected features of shape (n, {len(self.feature_names)}), got {X.shape}")
        Z = _expand((X - self.mean) / self.std, self.degree)
        return self.weights @ Z.T

    def value(self, X: np.ndarray, k: float = 1.0) -> np.ndarray:
        """Ensemble mean − ``k`` · spread − offset for each row of ``X``: shape (n,)."""
        U = self.member_utilities(X)
        return U.mean(axis=0) - k * U.std(axis=0) - self.offset

    def score(self, comps: Sequence[Any], k: float = 1.0) -> np.ndarray:
        """:meth:`value` of compositions (their features computed here)."""
        from musicenv.study.features import FeatureError, piece_features

        comps = list(comps)
        if not comps:
            return np.zeros(0)
        try:
            names, X = piece_features(comps, self.groups)
        except FeatureError as e:
            raise PreferenceModelError(f"this preference model needs feature groups {self.groups}: {e}") from e
        if names != self.feature_names:
            missing = [n for n in self.feature_names if n not in names]
            if missing:
                raise PreferenceModelError(f"features the model was fitted on are not computed here: {missing[:5]}"
                                           + (" ..." if len(missing) > 5 else ""))
            X = X[:, [names.index(n) for n in self.feature_names]]
        return self.value(X, k)

    # -- files ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"kind": KIND, "format_version": FORMAT_VERSION, "feature_names": list(self.feature_names),
                "groups": list(self.groups), "mean": self.mean.tolist(), "std": self.std.tolist(),
                "weights": self.weights.tolist(), "degree": self.degree, "offset": self.offset,
                "lambda": self.lam, "metrics": self.metrics}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model as JSON (atomically) and return the path."""
        from musicenv.render import write_atomically

        text = json.dumps(self.to_dict(), indent=1, allow_nan=True)
        return write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), what="preference model")

    @classmethod
    def load(cls, path: str | os.PathLike) -> PreferenceModel:
        """Read a model written by :meth:`save`; :class:`PreferenceModelError` names what is wrong."""
        path = Path(path).expanduser()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise PreferenceModelError(f"preference model {str(path)!r} does not exist; fit one with "
                                       "`musicenv study fit STUDY_DIR --out MODEL.json`") from e
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise PreferenceModelError(f"preference model {str(path)!r} is not readable JSON: {e}") from e
        return cls.from_dict(data, str(path))

    @classmethod
    def from_dict(cls, data: Any, where: str = "preference model") -> PreferenceModel:
        if not isinstance(data, dict) or data.get("kind") != KIND:
            raise PreferenceModelError(f"{where} is not a musicenv preference model (kind must be {KIND!r})")
        if data.get("format_version") != FORMAT_VERSION:
            raise PreferenceModelError(f"{where} has format_version {data.get('format_version')!r}; this musicenv "
                                       f"reads {FORMAT_VERSION}")
        try:
            names = [str(n) for n in data["feature_names"]]
            groups = [str(g) for g in data["groups"]]
            mean = np.asarray(data["mean"], dtype=np.float64)
            std = np.asarray(data["std"], dtype=np.float64)
            weights = np.asarray(data["weights"], dtype=np.float64)
            degree = int(data["degree"])
            offset = float(data["offset"])
            lam = float(data.get("lambda", 1.0))
        except (KeyError, TypeError, ValueError) as e:
            raise PreferenceModelError(f"{where} is missing or has a malformed field: {e}") from e
        D = len(names)
        if degree not in (1, 2) or mean.shape != (D,) or std.shape != (D,) or weights.ndim != 2 \
                or weights.shape[1] != D * degree or weights.shape[0] < 1:
            raise PreferenceModelError(f"{where} has inconsistent shapes: {D} features, degree {degree}, mean "
                                       f"{mean.shape}, std {std.shape}, weights {weights.shape}")
        if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()
                and np.isfinite(weights).all() and math.isfinite(offset)):
            raise PreferenceModelError(f"{where} holds non-finite numbers or a non-positive sd")
        return cls(names, groups, mean, std, weights, degree, offset, lam, dict(data.get("metrics") or {}))


def _cv_lambda(F: np.ndarray, a: np.ndarray, b: np.ndarray, y: np.ndarray, lambdas: Sequence[float],
               rng: np.random.Generator, folds: int = 5) -> float:
    if len(y) < 2 * folds or len(lambdas) == 1:
        return float(lambdas[len(lambdas) // 2])
    fold = rng.permutation(len(y)) % folds
    best, best_loss = lambdas[0], math.inf
    for lam in lambdas:
        loss = 0.0
        for f in range(folds):
            tr, te = fold != f, fold == f
            w = fit_bradley_terry(F, a[tr], b[tr], y[tr], lam)
            d = (F[a[te]] - F[b[te]]) @ w
            loss += float(np.sum(np.logaddexp(0.0, d) - y[te] * d))
        if loss < best_loss:
            best, best_loss = lam, loss
    return float(best)


def fit_preference(X: np.ndarray, a: Sequence[int], b: Sequence[int], y: Sequence[float], *,
                   feature_names: Sequence[str], groups: Sequence[str], members: int = 8, degree: int = 2,
                   holdout: float = 0.2, lambdas: Sequence[float] = DEFAULT_LAMBDAS, refit: bool = True,
                   seed: int = 0) -> PreferenceModel:
    """Fit the ensemble to answers over pieces with feature rows ``X`` (n_pieces, n_features).

    Answer i compares piece ``a[i]`` with ``b[i]`` (row indices into ``X``); ``y[i]`` is 1
    (a preferred), 0 (b preferred) or 0.5 (no preference). A share ``holdout`` of the
    answers is held out to measure accuracy (``model.metrics``); with ``refit`` the
    returned model is then fitted again on all answers (the held-out figures describe the
    same procedure on less data). Raises :class:`PreferenceModelError` on unusable input.
    """
    X = np.asarray(X, dtype=np.float64)
    a, b, y = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64), np.asarray(y, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != len(feature_names):
        raise PreferenceModelError(f"X must be (n_pieces, {len(feature_names)}), got {X.shape}")
    if not (len(a) == len(b) == len(y)) or len(y) < 10:
        raise PreferenceModelError(f"need at least 10 answers with matching a, b, y; got {len(a)}, {len(b)}, {len(y)}")
    if not np.isin(y, (0.0, 0.5, 1.0)).all():
        raise PreferenceModelError("outcomes y must be 1 (a preferred), 0 (b preferred) or 0.5 (no preference)")
    if a.min() < 0 or b.min() < 0 or max(a.max(), b.max()) >= len(X):
        raise PreferenceModelError("piece indices a, b must index rows of X")
    if not 0.0 <= holdout < 1.0:
        raise PreferenceModelError(f"holdout must be in [0, 1), got {holdout!r}")
    if degree not in (1, 2) or members < 1:
        raise PreferenceModelError(f"degree must be 1 or 2 and members >= 1; got {degree}, {members}")
    if not np.isfinite(X).all():
        raise PreferenceModelError("features hold NaN or infinite values")
    rng = np.random.default_rng(seed)
    mean = X.mean(axis=0)
    std = X.std(axis=0)
    std = np.where(std > 1e-9, std, 1.0)
    F = _expand((X - mean) / std, degree)

    def ensemble(idx: np.ndarray) -> tuple[np.ndarray, float]:
        lam = _cv_lambda(F, a[idx], b[idx], y[idx], lambdas, rng)
        W = []
        for _ in range(members):
            counts = np.bincount(rng.integers(len(idx), size=len(idx)), minlength=len(idx)).astype(np.float64)
            W.append(fit_bradley_terry(F, a[idx], b[idx], y[idx], lam, weights=counts))
        return np.array(W), lam

    order = rng.permutation(len(y))
    n_test = int(round(holdout * len(y)))
    test, train = order[:n_test], order[n_test:]
    W, lam = ensemble(train)
    metrics: dict[str, Any] = {"answers": int(len(y)), "train_answers": int(len(train)),
                               "heldout_answers": int(len(test)), "ties": int((y == 0.5).sum()),
                               "pieces": int(len(X)), "members": members, "degree": degree, "lambda": lam}
    U = (W @ F.T).mean(axis=0)
    metrics["train_accuracy"] = pair_accuracy(U, a[train], b[train], y[train])
    if n_test:
        metrics["heldout_accuracy"] = pair_accuracy(U, a[test], b[test], y[test])
        # Spread-penalised ranking, as the reward uses it (k = 1).
        Uk = (W @ F.T)
        metrics["heldout_accuracy_k1"] = pair_accuracy(Uk.mean(0) - Uk.std(0), a[test], b[test], y[test])
    if refit and n_test:
        W, lam = ensemble(np.arange(len(y)))
        metrics["lambda_all"] = lam
    offset = float((W @ F.T).mean())
    return PreferenceModel(list(feature_names), list(groups), mean, std, W, degree, offset, lam, metrics)
