"""A PyTorch streaming step loop in the release's style, for tests and the inference benchmark.

Written from the spec (../shared/spec/flm-audio.md section 3): a token cache of 21 columns, the backbone
run incrementally with transformers' `DynamicCache` (which grows every frame), and the depformer re-run
from scratch over all previous codes for every one of the 8 codes, as the release's `forward_audio`
does. Two of the release's defects are fixed so it can serve as a reference: the depformer is called
with the arguments it takes, and audio ids 2048/2049 are masked at sampling time.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache

from flmjax.reference.flm_audio_torch import TorchFLMAudio

DELAYS = [0] + [0] + [1] * 7 + [0] + [1] * 7
TOKEN_CACHE_COLUMNS = 21


def penalize(logits: torch.Tensor, previous: torch.Tensor | None, penalty: float) -> torch.Tensor:
    """HF repetition penalty: logits [B, V], previous ids [B, W]."""
    if previous is None or penalty == 1.0:
        return logits
    seen = torch.gather(logits, 1, previous)
    return logits.scatter(1, previous, torch.where(seen < 0, seen * penalty, seen / penalty))


def sample_token(logits, greedy, temperature, top_p, top_k, generator=None) -> torch.Tensor:
    """logits [B, V] -> ids [B]: temperature, top-p (overrides top-k), top-k, or argmax."""
    if greedy or temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    if top_p > 0:
        sorted_probs = sorted_probs * ((sorted_probs.cumsum(-1) - sorted_probs) <= top_p)
    elif top_k > 0:
        sorted_probs = sorted_probs[:, :top_k]
    choice = torch.multinomial(sorted_probs / sorted_probs.sum(-1, keepdim=True), 1, generator=generator)
    return order.gather(1, choice)[:, 0]


class TorchStepLoop:
    """Streaming decoding of a batch with `TorchFLMAudio`; `step(user_codes [B, 8])` -> frame [B, 9] or None."""

    def __init__(self, model: TorchFLMAudio, config: dict, batch_size: int, greedy: bool = True, **sampling):
        self.model = model
        info = config["mm_token_info"]
        self.codebooks = config["aud_channel"]
        self.codebook_size = config["aud_vocab_size"] - 2
        self.start_token = info["aud_emp_token_id"]
        self.initial = torch.tensor([info["text_wait_token_id"]] + [info["aud_pad_token_id"]] * 2 * self.codebooks)
        self.greedy = greedy
        self.sampling = dict(
            text_temperature=0.01, text_top_p=0.9, text_top_k=1, text_penalty=1.03,
            audio_temperature=0.5, audio_top_p=0.9, audio_top_k=1, audio_penalty=1.2, window=50,
        )  # fmt: skip
        self.sampling.update(sampling)
        self.cache = torch.zeros((batch_size, 1 + 2 * self.codebooks, TOKEN_CACHE_COLUMNS), dtype=torch.long)
        self.past = DynamicCache()
        self.offset = 0
        self.text_history: list[torch.Tensor] = []
        self.audio_history: list[torch.Tensor] = []

    def _text(self, logits: torch.Tensor) -> torch.Tensor:
        s = self.sampling
        if not self.greedy and self.text_history:
            logits = penalize(logits, torch.stack(self.text_history, 1), s["text_penalty"])
        return sample_token(logits, self.greedy, s["text_temperature"], s["text_top_p"], s["text_top_k"])

    def _codes(self, hidden: torch.Tensor) -> torch.Tensor:
        """8 codes, re-running the depformer over [start, codes so far] for each one."""
        s = self.sampling
        depformer = self.model.aud_output_layers
        prev = torch.full((hidden.shape[0], 1), self.start_token, dtype=torch.long)
        for c in range(self.codebooks):
            logits = depformer(hidden, prev)[:, -1].clone()
            logits[:, self.codebook_size :] = -float("inf")
            if not self.greedy and c < 4 and self.audio_history:
                logits = penalize(logits, torch.stack([h[:, c] for h in self.audio_history], 1), s["audio_penalty"])
            code = sample_token(logits, self.greedy, s["audio_temperature"], s["audio_top_p"], s["audio_top_k"])
            prev = torch.cat([prev, code[:, None]], dim=1)
        return prev[:, 1:]

    @torch.no_grad()
    def step(self, user_codes: torch.Tensor) -> torch.Tensor | None:
        n, ring = self.codebooks, self.cache.shape[-1]
        for q in range(n):
            k = 1 + n + q
            self.cache[:, k, (self.offset + DELAYS[k]) % ring] = user_codes[:, q]
        pos = self.offset % ring
        for k, delay in enumerate(DELAYS):
            if (k <= n and self.offset == 0) or (k > n and self.offset < delay):
                self.cache[:, k, pos] = self.initial[k]
        column = self.cache[:, :, pos][:, None]  # [B, 1, 17]
        emb = self.model.model.embed_tokens(column) * self.model.input_mult
        out = self.model.model(inputs_embeds=emb, past_key_values=self.past, use_cache=True)
        self.past = out.past_key_values
        hidden = out.last_hidden_state[:, -1]
        text = self._text(self.model.lm_head(hidden) * self.model.text_scale)
        codes = self._codes(hidden)
        for history, new in ((self.text_history, text), (self.audio_history, codes)):
            history.append(new)
            if len(history) > self.sampling["window"]:
                history.pop(0)
        self.offset += 1
        pos = self.offset % ring
        self.cache[:, 0, pos] = text
        self.cache[:, 1 : 1 + n, pos] = codes
        if self.offset <= max(DELAYS):
            return None
        index = torch.tensor([(self.offset - 1 + d) % ring for d in DELAYS[: 1 + n]])
        return self.cache[:, torch.arange(1 + n), index]
