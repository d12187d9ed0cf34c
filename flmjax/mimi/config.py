"""Mimi's architecture numbers (kyutai's released codec), in one frozen dataclass."""

from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class MimiConfig:
    """Hyper-parameters of kyutai's Mimi; the defaults are the released codec's."""

    sample_rate: int = 24_000
    frame_rate: float = 12.5
    # SEANet convolutional encoder / decoder.
    dimension: int = 512  # latent width at the SEANet output (and transformer width)
    n_filters: int = 64
    ratios: tuple[int, ...] = (8, 6, 5, 4)  # decoder order; the encoder applies them reversed
    kernel_size: int = 7
    last_kernel_size: int = 3
    residual_kernel_size: int = 3
    compress: int = 2  # residual branch width = channels // compress
    # The 25 Hz transformers after the encoder and before the decoder.
    num_heads: int = 8
    num_layers: int = 8
    dim_feedforward: int = 2048
    context: int = 250  # attention span in 25 Hz steps, also the streaming KV ring size
    max_period: float = 10_000.0
    layer_scale_init: float = 0.01
    norm_eps: float = 1e-5
    # Split residual vector quantiser.
    codebook_dim: int = 256
    codebook_size: int = 2048
    total_codebooks: int = 32  # the weights file holds 1 semantic + 31 acoustic codebooks
    n_q_semantic: int = 1

    @property
    def hop_length(self) -> int:
        """Samples per SEANet latent step (960 = 40 ms)."""
        return math.prod(self.ratios)

    @property
    def encoder_frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def resample_stride(self) -> int:
        """Latent steps per codec frame (2: 25 Hz -> 12.5 Hz)."""
        stride = self.encoder_frame_rate / self.frame_rate
        if stride != int(stride):
            raise ValueError(f"encoder rate {self.encoder_frame_rate} Hz is not a multiple of {self.frame_rate} Hz")
        return int(stride)

    @property
    def frame_size(self) -> int:
        """Samples per codec frame (1920 = 80 ms)."""
        return self.hop_length * self.resample_stride

    @property
    def head_dim(self) -> int:
        return self.dimension // self.num_heads
