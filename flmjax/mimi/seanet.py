"""SEANet convolutional encoder (24 kHz waveform -> 25 Hz latent) and decoder (latent -> waveform).

Channel-last [batch, time, channels]; every module maps (x, state) -> (y, state), see `conv.py`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from flmjax.mimi.config import MimiConfig
from flmjax.mimi.conv import CausalConv1d, CausalConvTranspose1d
from flmjax.mimi.ops import elu


class ResidualUnit(nn.Module):
    """x + conv_k1(ELU(conv_k3(ELU(x)))), the inner width reduced by `compress`."""

    channels: int
    kernel_size: int
    compress: int

    def setup(self) -> None:
        hidden = self.channels // self.compress
        self.conv_in = CausalConv1d(self.channels, hidden, self.kernel_size)
        self.conv_out = CausalConv1d(hidden, self.channels, 1)

    def init_state(self, batch_size: int) -> dict[str, Any]:
        return {"conv_in": self.conv_in.init_state(batch_size), "conv_out": self.conv_out.init_state(batch_size)}

    def __call__(self, x: jax.Array, state: dict[str, Any]) -> tuple[jax.Array, dict[str, Any]]:
        h, conv_in = self.conv_in(elu(x), state["conv_in"])
        h, conv_out = self.conv_out(elu(h), state["conv_out"])
        return x + h, {"conv_in": conv_in, "conv_out": conv_out}


class EncoderStage(nn.Module):
    """Residual unit, ELU, then a strided conv (kernel 2 * ratio) that doubles the channels."""

    channels: int
    ratio: int
    config: MimiConfig

    def setup(self) -> None:
        c = self.config
        self.residual = ResidualUnit(self.channels, c.residual_kernel_size, c.compress)
        self.strided_conv = CausalConv1d(self.channels, 2 * self.channels, 2 * self.ratio, stride=self.ratio)

    def init_state(self, batch_size: int) -> dict[str, Any]:
        return {
            "residual": self.residual.init_state(batch_size),
            "strided_conv": self.strided_conv.init_state(batch_size),
        }

    def __call__(self, x: jax.Array, state: dict[str, Any]) -> tuple[jax.Array, dict[str, Any]]:
        x, residual = self.residual(x, state["residual"])
        x, strided_conv = self.strided_conv(elu(x), state["strided_conv"])
        return x, {"residual": residual, "strided_conv": strided_conv}


class DecoderStage(nn.Module):
    """ELU, a transposed conv (kernel 2 * ratio) that halves the channels, then a residual unit."""

    channels: int  # input channels
    ratio: int
    config: MimiConfig

    def setup(self) -> None:
        c = self.config
        out = self.channels // 2
        self.transposed_conv = CausalConvTranspose1d(self.channels, out, 2 * self.ratio, self.ratio)
        self.residual = ResidualUnit(out, c.residual_kernel_size, c.compress)

    def init_state(self, batch_size: int) -> dict[str, Any]:
        return {
            "transposed_conv": self.transposed_conv.init_state(batch_size),
            "residual": self.residual.init_state(batch_size),
        }

    def __call__(self, x: jax.Array, state: dict[str, Any]) -> tuple[jax.Array, dict[str, Any]]:
        x, transposed_conv = self.transposed_conv(elu(x), state["transposed_conv"])
        x, residual = self.residual(x, state["residual"])
        return x, {"transposed_conv": transposed_conv, "residual": residual}


class _SEANet(nn.Module):
    """input conv -> stages -> ELU -> output conv; subclasses build the three in `setup`."""

    config: MimiConfig

    def init_state(self, batch_size: int) -> dict[str, Any]:
        return {
            "input_conv": self.input_conv.init_state(batch_size),
            "stages": [stage.init_state(batch_size) for stage in self.stages],
            "output_conv": self.output_conv.init_state(batch_size),
        }

    def __call__(self, x: jax.Array, state: dict[str, Any]) -> tuple[jax.Array, dict[str, Any]]:
        x, input_conv = self.input_conv(x, state["input_conv"])
        stages = []
        for stage, stage_state in zip(self.stages, state["stages"]):
            x, stage_state = stage(x, stage_state)
            stages.append(stage_state)
        x, output_conv = self.output_conv(elu(x), state["output_conv"])
        return x, {"input_conv": input_conv, "stages": stages, "output_conv": output_conv}


class SEANetEncoder(_SEANet):
    """[B, T, 1] waveform -> [B, T / hop_length, dimension]."""

    def setup(self) -> None:
        c = self.config
        self.input_conv = CausalConv1d(1, c.n_filters, c.kernel_size)
        channels = [c.n_filters * 2**i for i in range(len(c.ratios))]
        self.stages = [EncoderStage(ch, r, c) for ch, r in zip(channels, reversed(c.ratios))]
        self.output_conv = CausalConv1d(2 * channels[-1], c.dimension, c.last_kernel_size)


class SEANetDecoder(_SEANet):
    """[B, T, dimension] latent -> [B, T * hop_length, 1] waveform."""

    def setup(self) -> None:
        c = self.config
        top = c.n_filters * 2 ** len(c.ratios)
        self.input_conv = CausalConv1d(c.dimension, top, c.kernel_size)
        self.stages = [DecoderStage(top // 2**i, r, c) for i, r in enumerate(c.ratios)]
        self.output_conv = CausalConv1d(c.n_filters, 1, c.last_kernel_size)
