"""Split residual vector quantiser: 1 semantic + (n_q - 1) acoustic codebooks over the same latent.

Both branches project the same latent (not each other's residual) to `codebook_dim`; inside a branch,
codebook i quantises what codebooks 0..i-1 left (nearest entry by L2). Decoding sums the looked-up
entries per branch and adds the two branches' output projections.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from flmjax.mimi.config import MimiConfig
from flmjax.mimi.conv import UNSET


class ResidualVQ(nn.Module):
    """One branch: `stored` codebooks [stored, codebook_size, codebook_dim], the first `active` used."""

    config: MimiConfig
    stored: int
    active: int

    def setup(self) -> None:
        c = self.config
        self.input_proj = self.param("input_proj", UNSET, (c.dimension, c.codebook_dim))
        self.output_proj = self.param("output_proj", UNSET, (c.codebook_dim, c.dimension))
        self.codebooks = self.param("codebooks", UNSET, (self.stored, c.codebook_size, c.codebook_dim))

    def encode(self, latent: jax.Array) -> jax.Array:
        """[B, T, dimension] -> codes [B, T, active] (int32)."""
        residual = latent @ self.input_proj
        codes = []
        for i in range(self.active):
            codebook = self.codebooks[i]
            # argmin |r - e|^2 = argmin |e|^2 - 2 r.e (|r|^2 is the same for every entry)
            distance = jnp.sum(codebook**2, axis=-1) - 2 * residual @ codebook.T
            code = jnp.argmin(distance, axis=-1).astype(jnp.int32)
            residual = residual - codebook[code]
            codes.append(code)
        return jnp.stack(codes, axis=-1)

    def decode(self, codes: jax.Array) -> jax.Array:
        """codes [B, T, active] -> [B, T, dimension]."""
        quantized = sum(self.codebooks[i][codes[..., i]] for i in range(self.active))
        return quantized @ self.output_proj


class SplitResidualVQ(nn.Module):
    """`n_q` codebooks: the semantic one, then `n_q - 1` acoustic ones."""

    config: MimiConfig
    n_q: int

    def setup(self) -> None:
        c = self.config
        if not c.n_q_semantic <= self.n_q <= c.total_codebooks:
            raise ValueError(f"n_q must be in [{c.n_q_semantic}, {c.total_codebooks}], got {self.n_q}")
        self.semantic = ResidualVQ(c, c.n_q_semantic, c.n_q_semantic)
        self.acoustic = ResidualVQ(c, c.total_codebooks - c.n_q_semantic, self.n_q - c.n_q_semantic)

    def encode(self, latent: jax.Array) -> jax.Array:
        codes = self.semantic.encode(latent)
        if self.n_q > self.config.n_q_semantic:
            codes = jnp.concatenate([codes, self.acoustic.encode(latent)], axis=-1)
        return codes

    def decode(self, codes: jax.Array) -> jax.Array:
        split = self.config.n_q_semantic
        latent = self.semantic.decode(codes[..., :split])
        if self.n_q > split:
            latent = latent + self.acoustic.decode(codes[..., split:])
        return latent
