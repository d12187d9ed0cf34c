"""An independent PyTorch FLM-Audio, written from the spec (../shared/spec/flm-audio.md section 1), for the
tests and the inference benchmark.

The backbone is transformers' own `Qwen2Model` (decoder layers, RoPE, final norm) fed the summed stream
embeddings; the depformer is spelled out here in the release's module names, so that `load_state_dict`
with strict checking proves a flmjax export carries exactly the release's tensor names and shapes.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import Qwen2Config, Qwen2Model


class StreamEmbeddings(nn.Module):
    def __init__(self, vocab: int, audio_vocab: int, codebooks: int, hidden: int):
        super().__init__()
        self.text_embeddings = nn.Embedding(vocab, hidden)
        self.aud_speak_embeddings = nn.ModuleList(nn.Embedding(audio_vocab, hidden) for _ in range(codebooks))
        self.aud_listen_embeddings = nn.ModuleList(nn.Embedding(audio_vocab, hidden) for _ in range(codebooks))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        n = len(self.aud_speak_embeddings)
        emb = self.text_embeddings(tokens[..., 0])
        for c in range(n):
            emb = emb + (
                self.aud_speak_embeddings[c](tokens[..., 1 + c]) + self.aud_listen_embeddings[c](tokens[..., 1 + n + c])
            )
        return emb


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        x32 = x.float()
        return self.weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x):
        return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


class DepAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.c_attn = nn.Linear(dim, 3 * dim, bias=False)
        self.c_proj = nn.Linear(dim, dim, bias=False)

    def forward(self, x):
        n, p, d = x.shape
        q, k, v = self.c_attn(x).split(d, dim=2)
        q, k, v = (t.view(n, p, self.heads, d // self.heads).transpose(1, 2) for t in (q, k, v))
        y = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).reshape(n, p, d))


class DepBlock(nn.Module):
    def __init__(self, dim: int, heads: int, positions: int, eps: float):
        super().__init__()
        self.ln_1 = RMSNorm(dim, eps)
        self.attn = DepAttention(dim, heads)
        self.ln_2 = RMSNorm(dim, eps)
        self.mlps = nn.ModuleList(SwiGLU(dim, int(8 * dim / 3)) for _ in range(positions))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        y = self.ln_2(x)
        return x + torch.cat([self.mlps[c](y[:, c : c + 1]) for c in range(x.shape[1])], dim=1)


class DepTransformer(nn.Module):
    """The depformer's `transformer` (the release's names: wtes, wpe, h, ln_f), typed attributes for the caller."""

    def __init__(self, dim: int, layers: int, heads: int, positions: int, vocab: int, eps: float):
        super().__init__()
        self.wtes = nn.ModuleList(nn.Embedding(vocab, dim) for _ in range(positions))
        self.wpe = nn.Embedding(positions, dim)
        self.h = nn.ModuleList(DepBlock(dim, heads, positions, eps) for _ in range(layers))
        self.ln_f = RMSNorm(dim, eps)


class Depformer(nn.Module):
    def __init__(self, main_dim: int, dim: int, layers: int, heads: int, positions: int, vocab: int, eps: float = 1e-6):
        super().__init__()
        self.positions = positions
        self.linear_in = nn.Linear(main_dim, dim * positions, bias=False)
        self.transformer = DepTransformer(dim, layers, heads, positions, vocab, eps)
        self.lm_heads = nn.ModuleList(nn.Linear(dim, vocab, bias=False) for _ in range(positions))

    def forward(self, hidden: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        """hidden [N, E], prev [N, P] (P <= positions) -> logits [N, P, vocab]."""
        p = prev.shape[1]
        t = self.transformer
        x = torch.stack([t.wtes[c](prev[:, c]) for c in range(p)], dim=1)
        x = x + t.wpe.weight[:p]
        x = x + self.linear_in(hidden).view(hidden.shape[0], self.positions, -1)[:, :p]
        for block in t.h:
            x = block(x)
        x = t.ln_f(x)
        return torch.stack([self.lm_heads[c](x[:, c]) for c in range(p)], dim=1)


class TorchFLMAudio(nn.Module):
    """State-dict names equal the release's HF layout."""

    def __init__(self, cfg: dict):
        super().__init__()
        qwen = Qwen2Config(
            vocab_size=cfg["vocab_size"],
            hidden_size=cfg["hidden_size"],
            intermediate_size=cfg["intermediate_size"],
            num_hidden_layers=cfg["num_hidden_layers"],
            num_attention_heads=cfg["num_attention_heads"],
            num_key_value_heads=cfg["num_key_value_heads"],
            rms_norm_eps=cfg["rms_norm_eps"],
            rope_parameters={"rope_type": "default", "rope_theta": cfg["rope_theta"]},
            max_position_embeddings=cfg["max_position_embeddings"],
            # PreTrainedConfig takes it through __post_init__(**kwargs); the @strict dataclass's fields omit it.
            attn_implementation="eager",  # type: ignore[call-arg]
        )
        assert cfg["head_dim"] == cfg["hidden_size"] // cfg["num_attention_heads"]
        self.model = Qwen2Model(qwen)
        # The summed stream embeddings in place of the text-only table (the release's `model.embed_tokens.*`).
        self.model.set_input_embeddings(
            StreamEmbeddings(cfg["vocab_size"], cfg["aud_vocab_size"], cfg["aud_channel"], cfg["hidden_size"])
        )
        self.lm_head = nn.Linear(cfg["hidden_size"], cfg["vocab_size"], bias=False)
        dep = cfg["aud_depthgpt"]
        self.aud_output_layers = Depformer(
            cfg["hidden_size"], dep["n_embd"], dep["n_layer"], dep["n_head"], cfg["aud_channel"], cfg["aud_vocab_size"]
        )
        self.text_scale = cfg["output_mult"] / cfg["mup_scale_factor"] if cfg["use_mup"] else 1.0
        self.input_mult = cfg["input_mult"] if cfg["use_mup"] else 1.0
        self.start_token = cfg["mm_token_info"]["aud_emp_token_id"]

    def forward(self, tokens: torch.Tensor):
        """tokens [B, T+1, 17] -> text logits [B, T, V], audio logits [B, T, K, A] (teacher-forced)."""
        inputs = tokens[:, :-1]
        b, t = inputs.shape[:2]
        emb = self.model.embed_tokens(inputs) * self.input_mult
        hidden = self.model(inputs_embeds=emb).last_hidden_state
        text = self.lm_head(hidden) * self.text_scale
        k = len(self.aud_output_layers.lm_heads)
        target = tokens[:, 1:, 1 : 1 + k]
        prev = torch.cat([torch.full_like(target[..., :1], self.start_token), target[..., :-1]], dim=-1)
        audio = self.aud_output_layers(hidden.reshape(b * t, -1), prev.reshape(b * t, k))
        return text, audio.reshape(b, t, k, -1)
