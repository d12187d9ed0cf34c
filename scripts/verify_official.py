"""Check a flmjax export against the official FLM-Audio PyTorch code (not part of the test suite:
the official code is not ours to ship; bring your own checkout of github.com/cofe-ai/flm-audio).

Step 1, in flmjax's environment: write a random small checkpoint, inputs and flmjax's logits.
    python scripts/verify_official.py export OUT_DIR [--config tiny]
Step 2, in an environment with the official code's requirements (torch, transformers 4.51):
    python scripts/verify_official.py check OUT_DIR --flm-audio-repo PATH
It loads OUT_DIR/checkpoint with `FLMAudioForCausalLM.from_pretrained`, runs the text head and the
depformer (`aud_output_layers`) teacher-forced, and prints the largest differences from flmjax.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np


def export(out_dir: str, config: str) -> None:
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_default_matmul_precision", "highest")
    from flmjax import FLMAudio
    from flmjax.config import get_model_config

    cfg = get_model_config(config, initializer_range=0.2)
    model = FLMAudio.init(cfg, seed=0)
    model.save_pretrained(os.path.join(out_dir, "checkpoint"))
    rng = np.random.default_rng(0)
    tokens = np.empty((2, 17, 17), np.int32)
    tokens[..., 0] = rng.integers(0, cfg.vocab_size, tokens.shape[:2])
    tokens[..., 1:] = rng.integers(0, 2048, (*tokens.shape[:2], 16))
    text, audio = model.forward(jnp.asarray(tokens))
    np.savez(os.path.join(out_dir, "flmjax_logits.npz"), tokens=tokens, text=np.asarray(text), audio=np.asarray(audio))
    print(f"wrote {out_dir}/checkpoint and flmjax_logits.npz")


def check(out_dir: str, repo: str) -> int:
    import importlib
    import types

    import torch

    # Import the official modeling files as a package without running its __init__ (which pulls in
    # the server, Mimi and the hub).
    package = types.ModuleType("flm_official")
    package.__path__ = [os.path.join(repo, "flmaudio", "models")]
    sys.modules["flm_official"] = package
    modeling_flmaudio = importlib.import_module("flm_official.modeling_flmaudio")

    model = modeling_flmaudio.FLMAudioForCausalLM.from_pretrained(
        os.path.join(out_dir, "checkpoint"), torch_dtype=torch.float32
    )
    model.eval()
    ref = np.load(os.path.join(out_dir, "flmjax_logits.npz"))
    tokens = torch.from_numpy(ref["tokens"]).long()
    inputs, k = tokens[:, :-1], model.config.aud_channel
    with torch.no_grad():
        out = model(
            input_ids=inputs[..., 0], speak_ids=inputs[..., 1 : 1 + k], listen_ids=inputs[..., 1 + k :], use_cache=False
        )
        hidden = out.hidden_states  # the release returns the final-normed last hidden state here
        b, t = inputs.shape[:2]
        target = tokens[:, 1:, 1 : 1 + k].reshape(b * t, k)
        audio = model.aud_output_layers(hidden.reshape(b * t, -1), target[:, :-1]).reshape(b, t, k, -1)
    text_err = np.abs(out.logits.numpy() - ref["text"]).max() / np.abs(ref["text"]).max()
    audio_err = np.abs(audio.numpy() - ref["audio"]).max() / np.abs(ref["audio"]).max()
    print(f"official vs flmjax, relative max error: text {text_err:.2e}, audio {audio_err:.2e}")
    return 0 if max(text_err, audio_err) < 1e-5 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=("export", "check"))
    parser.add_argument("out_dir")
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--flm-audio-repo")
    args = parser.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    if args.step == "export":
        export(args.out_dir, args.config)
        return 0
    if not args.flm_audio_repo:
        parser.error("check needs --flm-audio-repo")
    return check(args.out_dir, args.flm_audio_repo)


if __name__ == "__main__":
    sys.exit(main())
