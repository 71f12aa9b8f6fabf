"""MaskablePPO anchored to the policy it started from: ReaLchords' KL penalty to its teacher.

ReaLchords (Wu et al. 2024) fine-tunes its online chord model with RL while a KL
penalty keeps it near the maximum-likelihood model it started from. With ``musicenv
train --init-from`` a run starts from another run's policy (e.g. the behaviour-cloned
chords of ``musicenv jam-pretrain``); :class:`AnchoredMaskablePPO`
(``--algo maskable_kl_ppo``) adds to MaskablePPO's loss

    β · mean_s KL(π(·|s) ‖ π₀(·|s))

where π₀ is a frozen copy of the policy as it was when training began (the
``--init-from`` weights; for a run without them, its random initial policy), both
distributions restricted to the legal actions of s (the env's action masks).

Mechanism (as :class:`agents.kl_control.KLPPO`): PPO's loss holds −ent_coef · mean H(π);
the policy's ``evaluate_actions`` (used only in that loss) returns
``entropy_coef · H(π) − kl_coef · KL(π ‖ π₀)`` in the entropy's place and PPO's own
``ent_coef`` is 1, so PPO's unchanged ``train`` minimises L_clip − entropy_coef · H +
β · KL + vf_coef · L_vf (the logged ``train/entropy_loss`` is minus that combination).
π₀ is saved with every checkpoint and ``agent.pt`` (module ``anchor``), so a resumed
run keeps its anchor.
"""

from __future__ import annotations

import copy
from typing import Any

import torch as th
from sb3_contrib import MaskablePPO

from agents.kl_control import _with_signature

__all__ = ["AnchoredMaskablePPO", "masked_kl"]


def masked_kl(logits: th.Tensor, ref_logits: th.Tensor, masks: th.Tensor | None) -> th.Tensor:
    """(B,) KL(softmax(logits) ‖ softmax(ref_logits)), both restricted to the legal
    actions (``masks`` True; all when None)."""
    if masks is not None:
        masks = th.as_tensor(masks, dtype=th.bool, device=logits.device).reshape(logits.shape)
        neg = th.tensor(-1e8, dtype=logits.dtype, device=logits.device)
        logits, ref_logits = th.where(masks, logits, neg), th.where(masks, ref_logits, neg)
    log_p, log_q = th.log_softmax(logits, dim=1), th.log_softmax(ref_logits, dim=1)
    p = log_p.exp()
    terms = p * (log_p - log_q)
    if masks is not None:
        terms = th.where(masks, terms, th.zeros_like(terms))
    return terms.sum(dim=1)


class AnchoredMaskablePPO(MaskablePPO):
    """MaskablePPO + ``kl_coef`` · KL(π ‖ π₀) to the policy training began with (see the
    module doc). ``entropy_coef`` is the entropy bonus (MaskablePPO's ``ent_coef``,
    which this class sets to 1 itself); every other keyword is MaskablePPO's."""

    def __init__(self, policy: Any, env: Any, kl_coef: float = 0.1, entropy_coef: float = 0.0, **kwargs: Any) -> None:
        if "ent_coef" in kwargs:
            raise ValueError("AnchoredMaskablePPO sets ent_coef itself; give entropy_coef (the entropy bonus) and "
                             "kl_coef (the KL penalty) instead")
        for name, value in (("kl_coef", kl_coef), ("entropy_coef", entropy_coef)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        self.kl_coef, self.entropy_coef = float(kl_coef), float(entropy_coef)
        self._anchored = False
        super().__init__(policy, env, ent_coef=1.0, **kwargs)

    def _setup_model(self) -> None:
        super()._setup_model()
        self.anchor = copy.deepcopy(self.policy)
        self.anchor.set_training_mode(False)
        for p in self.anchor.parameters():
            p.requires_grad_(False)
        self.policy.evaluate_actions = _AnchoredEvaluate(self)

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        names, variables = super()._get_torch_save_params()
        return [*names, "anchor"], variables

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "anchor"]  # saved as tensors, never pickled

    def learn(self, *args: Any, **kwargs: Any) -> AnchoredMaskablePPO:
        if self.num_timesteps == 0 and not self._anchored:  # a fresh run: anchor to the weights it starts with
            self.anchor.load_state_dict(self.policy.state_dict())
        self._anchored = True
        return super().learn(*args, **kwargs)


class _AnchoredEvaluate:
    """``policy.evaluate_actions`` returning entropy_coef · H − kl_coef · KL(π ‖ π₀)."""

    def __init__(self, model: AnchoredMaskablePPO) -> None:
        self.model = model
        self.evaluate = model.policy.evaluate_actions  # the bound original

    def __call__(self, obs: Any, actions: th.Tensor, action_masks: Any = None) -> tuple[th.Tensor, th.Tensor, Any]:
        m = self.model
        values, log_prob, entropy = self.evaluate(obs, actions, action_masks=action_masks)
        logits = m.policy.get_distribution(obs).distribution.logits  # unmasked: masked_kl masks both alike
        with th.no_grad():
            ref = m.anchor.get_distribution(obs).distribution.logits
        kl = masked_kl(logits, ref, action_masks)
        return values, log_prob, m.entropy_coef * entropy - m.kl_coef * kl


_with_signature(AnchoredMaskablePPO.__init__, MaskablePPO.__init__, {"kl_coef": 0.1, "entropy_coef": 0.0},
                drop=("ent_coef",))
