"""Causal 1-d convolutions with explicit streaming state, channel-last ([batch, time, channels]).

Every module here is a pure function of (input, state) -> (output, new state). The state holds what a
frame-by-frame run must remember from the previous call; feeding a whole signal with a fresh state
(`init_state`) is exactly the non-streaming computation, so batch and streaming share one code path.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from flmjax.mimi.ops import UNSET, dense

State = dict[str, jax.Array]


class CausalConv1d(nn.Module):
    """Conv1d padded on the left only, so output step t sees inputs up to t.

    The state keeps the last `kernel_size - stride` input steps (zeros at the start, or copies of the
    first input step with `replicate_padding`). Each call needs `T % stride == 0`.
    Kernel layout [kernel_size, in_features, features].
    """

    in_features: int
    features: int
    kernel_size: int
    stride: int = 1
    use_bias: bool = True
    replicate_padding: bool = False

    @property
    def context(self) -> int:
        return self.kernel_size - self.stride

    def init_state(self, batch_size: int) -> State:
        state: State = {}
        if self.context > 0:
            state["previous"] = jnp.zeros((batch_size, self.context, self.in_features), jnp.float32)
            if self.replicate_padding:
                state["first"] = jnp.ones((batch_size,), jnp.bool_)  # not fed yet: pad with its first sample
        return state

    @nn.compact
    def __call__(self, x: jax.Array, state: State) -> tuple[jax.Array, State]:
        if x.shape[1] % self.stride:
            raise ValueError(f"{self.name}: {x.shape[1]} input steps is not a multiple of the stride {self.stride}")
        kernel = self.param("kernel", UNSET, (self.kernel_size, self.in_features, self.features))
        new_state: State = {}
        if self.context > 0:
            previous = state["previous"]
            if self.replicate_padding:
                previous = jnp.where(state["first"][:, None, None], x[:, :1], previous)
                new_state["first"] = jnp.zeros_like(state["first"])
            x = jnp.concatenate([previous, x], axis=1)
            new_state["previous"] = x[:, x.shape[1] - self.context :]
        y = jax.lax.conv_general_dilated(x, kernel, (self.stride,), "VALID", dimension_numbers=("NWC", "WIO", "NWC"))
        if self.use_bias:
            y = y + self.param("bias", UNSET, (self.features,))
        return y, new_state


class CausalConvTranspose1d(nn.Module):
    """Transposed conv upsampling by `stride` with kernel 2 * stride, its overhang carried to the next call.

    Input step t writes 2 * stride outputs from t * stride: a head (its own output block) and a tail (the
    next block). Each call returns `T * stride` steps and keeps the last tail (bias removed) for the next
    call's head; non-streaming, this equals PyTorch's ConvTranspose1d with the right `stride` trimmed.
    Computed as one matmul per input step plus a shifted add. `depthwise` makes it channel-wise
    (groups = channels): kernel [kernel_size, channels]; otherwise kernel [in_features, kernel_size, features].
    """

    in_features: int
    features: int
    kernel_size: int
    stride: int
    use_bias: bool = True
    depthwise: bool = False

    def init_state(self, batch_size: int) -> State:
        return {"partial": jnp.zeros((batch_size, self.kernel_size - self.stride, self.features), jnp.float32)}

    @nn.compact
    def __call__(self, x: jax.Array, state: State) -> tuple[jax.Array, State]:
        if self.kernel_size != 2 * self.stride:
            raise ValueError(f"{self.name}: kernel {self.kernel_size} must be twice the stride {self.stride}")
        batch, steps, _ = x.shape
        if self.depthwise:
            kernel = self.param("kernel", UNSET, (self.kernel_size, self.features))
            taps = x[:, :, None, :] * kernel  # [B, T, K, C]
        else:
            kernel = self.param("kernel", UNSET, (self.in_features, self.kernel_size, self.features))
            taps = dense(x, kernel.reshape(self.in_features, -1)).reshape(batch, steps, self.kernel_size, self.features)
        head, tail = taps[:, :, : self.stride], taps[:, :, self.stride :]
        carried = jnp.concatenate([state["partial"][:, None], tail[:, :-1]], axis=1)  # tails of steps t - 1
        y = (head + carried).reshape(batch, steps * self.stride, self.features)
        if self.use_bias:
            y = y + self.param("bias", UNSET, (self.features,))
        return y, {"partial": tail[:, -1]}
