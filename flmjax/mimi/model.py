"""The Mimi codec as one Flax module: batch encode/decode and the per-frame streaming steps.

Data flow (channel-last inside): waveform -> SEANet encoder (25 Hz) -> encoder transformer ->
strided conv (12.5 Hz) -> split RVQ codes; codes -> RVQ lookup -> channel-wise transposed conv (25 Hz)
-> decoder transformer -> SEANet decoder -> waveform. The streaming state is an explicit pytree
{"encode": {...}, "decode": {...}} whose every leaf has the stream (batch) axis first.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from flmjax.mimi.config import MimiConfig
from flmjax.mimi.conv import CausalConv1d, CausalConvTranspose1d
from flmjax.mimi.quantizer import SplitResidualVQ
from flmjax.mimi.seanet import SEANetDecoder, SEANetEncoder
from flmjax.mimi.transformer import Transformer

StreamState = dict[str, Any]


class MimiModel(nn.Module):
    config: MimiConfig
    n_q: int = 8

    def setup(self) -> None:
        c = self.config
        stride = c.resample_stride
        self.encoder = SEANetEncoder(c)
        self.encoder_transformer = Transformer(c)
        # Learned 25 Hz -> 12.5 Hz conv; its causal padding repeats the first step, as kyutai's does.
        self.downsample = CausalConv1d(
            c.dimension, c.dimension, 2 * stride, stride=stride, use_bias=False, replicate_padding=True
        )
        self.quantizer = SplitResidualVQ(c, self.n_q)
        self.upsample = CausalConvTranspose1d(
            c.dimension, c.dimension, 2 * stride, stride, use_bias=False, depthwise=True
        )
        self.decoder_transformer = Transformer(c)
        self.decoder = SEANetDecoder(c)

    # --- streaming state -------------------------------------------------------------------------------

    def init_encode_state(self, batch_size: int) -> StreamState:
        return {
            "encoder": self.encoder.init_state(batch_size),
            "encoder_transformer": self.encoder_transformer.init_state(batch_size),
            "downsample": self.downsample.init_state(batch_size),
        }

    def init_decode_state(self, batch_size: int) -> StreamState:
        return {
            "upsample": self.upsample.init_state(batch_size),
            "decoder_transformer": self.decoder_transformer.init_state(batch_size),
            "decoder": self.decoder.init_state(batch_size),
        }

    def init_state(self, batch_size: int) -> StreamState:
        return {"encode": self.init_encode_state(batch_size), "decode": self.init_decode_state(batch_size)}

    # --- whole signals ---------------------------------------------------------------------------------

    def latent(self, pcm: jax.Array) -> jax.Array:
        """pcm [B, 1, N] (N a multiple of frame_size) -> what the quantizer quantizes [B, N / frame_size, dimension]."""
        batch = pcm.shape[0]
        x, _ = self.encoder(pcm.transpose(0, 2, 1), self.encoder.init_state(batch))
        x = self.encoder_transformer(x)
        x, _ = self.downsample(x, self.downsample.init_state(batch))
        return x

    def encode(self, pcm: jax.Array) -> jax.Array:
        """pcm [B, 1, N] (N a multiple of frame_size) -> codes [B, n_q, N / frame_size] int32."""
        return self.quantizer.encode(self.latent(pcm)).transpose(0, 2, 1)

    def decode(self, codes: jax.Array) -> jax.Array:
        """codes [B, n_q, F] -> pcm [B, 1, F * frame_size]."""
        batch = codes.shape[0]
        x = self.quantizer.decode(codes.transpose(0, 2, 1))
        x, _ = self.upsample(x, self.upsample.init_state(batch))
        x = self.decoder_transformer(x)
        x, _ = self.decoder(x, self.decoder.init_state(batch))
        return x.transpose(0, 2, 1)

    # --- streaming steps -------------------------------------------------------------------------------

    def encode_frames(self, state: StreamState, pcm: jax.Array) -> tuple[StreamState, jax.Array]:
        """Encode-side state, pcm [B, 1, k * frame_size] -> (new state, codes [B, n_q, k])."""
        size = self.config.frame_size
        if pcm.shape[-1] == 0 or pcm.shape[-1] % size:
            raise ValueError(
                f"Mimi streams whole 80 ms frames: got {pcm.shape[-1]} samples, not a positive multiple of {size} "
                "(buffer the audio into frames first)"
            )
        x, encoder = self.encoder(pcm.transpose(0, 2, 1), state["encoder"])
        x, encoder_transformer = self.encoder_transformer.step(x, state["encoder_transformer"])
        x, downsample = self.downsample(x, state["downsample"])
        new_state = {"encoder": encoder, "encoder_transformer": encoder_transformer, "downsample": downsample}
        return new_state, self.quantizer.encode(x).transpose(0, 2, 1)

    def decode_frames(self, state: StreamState, codes: jax.Array) -> tuple[StreamState, jax.Array]:
        """Decode-side state, codes [B, n_q, k] -> (new state, pcm [B, 1, k * frame_size])."""
        x = self.quantizer.decode(codes.transpose(0, 2, 1))
        x, upsample = self.upsample(x, state["upsample"])
        x, decoder_transformer = self.decoder_transformer.step(x, state["decoder_transformer"])
        x, decoder = self.decoder(x, state["decoder"])
        new_state = {"upsample": upsample, "decoder_transformer": decoder_transformer, "decoder": decoder}
        return new_state, x.transpose(0, 2, 1)

    def initialize(self, pcm: jax.Array) -> jax.Array:
        """Touches every parameter (for `init`, which only serves to list their shapes)."""
        return self.decode(self.encode(pcm))
