"""Split residual vector quantiser: 1 semantic + (n_q - 1) acoustic codebooks over the same latent.

Both branches project the same latent (not each other's residual) to `codebook_dim`; inside a branch,
codebook i quantises what codebooks 0..i-1 left (nearest entry by L2). Decoding sums the looked-up
entries per branch and adds the two branches' output projections.
"""

from __future__ import annotations

import functools
import operator

import flax.linen as nn
import jax
import jax.numpy as jnp

from flmjax.mimi.config import MimiConfig
from flmjax.mimi.ops import UNSET, dense


class ResidualVQ(nn.Module):
    """One branch of `num_codebooks` codebooks, each [codebook_size, codebook_dim] (its own parameter,
    so that no step copies a slice out of a stacked array)."""

    config: MimiConfig
    num_codebooks: int

    def setup(self) -> None:
        c = self.config
        self.input_proj = self.param("input_proj", UNSET, (c.dimension, c.codebook_dim))
        self.output_proj = self.param("output_proj", UNSET, (c.codebook_dim, c.dimension))
        shape = (c.codebook_size, c.codebook_dim)
        self.codebooks = [self.param(f"codebook_{i}", UNSET, shape) for i in range(self.num_codebooks)]

    def encode(self, latent: jax.Array) -> jax.Array:
        """[B, T, dimension] -> codes [B, T, num_codebooks] (int32)."""
        residual = dense(latent, self.input_proj)
        codes = []
        for codebook in self.codebooks:
            # argmin |r - e|^2 = argmin |e|^2 - 2 r.e (|r|^2 is the same for every entry)
            distance = jnp.sum(codebook**2, axis=-1) - 2 * residual @ codebook.T
            code = jnp.argmin(distance, axis=-1).astype(jnp.int32)
            residual = residual - codebook[code]
            codes.append(code)
        return jnp.stack(codes, axis=-1)

    def decode(self, codes: jax.Array) -> jax.Array:
        """codes [B, T, num_codebooks] -> [B, T, dimension]."""
        quantized = functools.reduce(
            operator.add, (codebook[codes[..., i]] for i, codebook in enumerate(self.codebooks))
        )
        return dense(quantized, self.output_proj)


class SplitResidualVQ(nn.Module):
    """`n_q` codebooks: the semantic one, then `n_q - 1` acoustic ones (no acoustic branch if n_q is 1)."""

    config: MimiConfig
    n_q: int

    def setup(self) -> None:
        c = self.config
        self.semantic = ResidualVQ(c, c.n_q_semantic)
        if self.n_q > c.n_q_semantic:
            self.acoustic = ResidualVQ(c, self.n_q - c.n_q_semantic)

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
