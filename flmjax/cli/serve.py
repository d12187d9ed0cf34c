"""Serve FLM-Audio over the release's websocket protocol (Moshi/FLM-Audio clients work unchanged).

    python launch/serve.py --checkpoint DIR --mimi MIMI.safetensors|random [--slots 8] \
        [--host 127.0.0.1] [--port 8990] [--token SECRET] [--ssl-cert CERT.pem --ssl-key KEY.pem]

Open http://HOST:PORT/ for the browser client (append ?token=SECRET when a token is set). `--slots`
conversations run at once, batched into one decoder step per frame. `--token` (or the environment
variable FLMJAX_SERVER_TOKEN) makes every request but the page carry ?token= or an `Authorization:
Bearer` header. Browsers give the microphone only to secure pages (https:// or localhost): from another
machine serve over HTTPS with `--ssl-cert/--ssl-key`. Operators: GET /api/status, /metrics, /healthz.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="HF-layout FLM-Audio directory, or an flmjax trainer checkpoint")
    p.add_argument("--lora", help="adapters-only file (launch/export.py --adapters-only) merged into --checkpoint")
    p.add_argument("--mimi", required=True, help="kyutai Mimi safetensors file, or 'random' (random weights: demos)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (0.0.0.0 exposes the server)")
    p.add_argument("--port", type=int, default=8990)
    p.add_argument("--slots", type=int, default=8, help="conversations at once (the decoder's batch)")
    p.add_argument("--token", default=os.environ.get("FLMJAX_SERVER_TOKEN"), help="access token required from clients")
    p.add_argument("--ssl-cert", help="PEM certificate (chain): serve HTTPS/WSS (needs --ssl-key)")
    p.add_argument("--ssl-key", help="PEM private key of --ssl-cert")
    p.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16"))
    p.add_argument(
        "--quantize",
        default="none",
        choices=("none", "int8"),
        help="int8: weight-only int8 matmul kernels (per-output-channel scales), activations in --dtype",
    )
    p.add_argument("--window", type=int, default=None, help="KV cache frames (default: max_position_embeddings)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--greedy", action="store_true", help="argmax decoding by default (settings can change it)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("serve")
    from aiohttp import web

    from flmjax import FLMAudio
    from flmjax.errors import FlmjaxError
    from flmjax.infer.sampling import SamplingSettings
    from flmjax.infer.server import ChatServer, PathOnlyAccessLogger, server_ssl_context
    from flmjax.infer.session import Session
    from flmjax.mimi import Mimi

    try:
        if (args.ssl_cert is None) != (args.ssl_key is None):
            raise FlmjaxError("--ssl-cert and --ssl-key go together (a certificate and its private key)")
        ssl_context = server_ssl_context(args.ssl_cert, args.ssl_key) if args.ssl_cert else None
        if args.mimi != "random" and not os.path.isfile(args.mimi):
            raise FileNotFoundError(f"{args.mimi}: no such Mimi weights file")
        settings = SamplingSettings(seed=args.seed)
        settings = settings.greedy_deterministic() if args.greedy else settings
        model = FLMAudio.from_pretrained(args.checkpoint, dtype=args.dtype, quantize=args.quantize, lora=args.lora)
        mimi = Mimi.random(seed=0) if args.mimi == "random" else Mimi.from_pretrained(args.mimi)
        if args.mimi == "random":
            log.warning("Mimi has RANDOM weights: the audio means nothing (demo/test only)")
        session = Session(model, mimi, batch_size=args.slots, settings=settings, window=args.window)
        server = ChatServer(session, settings, access_token=args.token)
    except (OSError, ValueError) as e:
        print(f"serve: error: {e}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    session.warm_up()
    log.info("compiled the frame program in %.1f s", time.perf_counter() - start)
    log.info(
        "serving %d slots at %s://%s:%d/ (token %s)",
        args.slots,
        "https" if ssl_context else "http",
        args.host,
        args.port,
        "required" if args.token else "off",
    )
    web.run_app(
        server.app(),
        host=args.host,
        port=args.port,
        ssl_context=ssl_context,
        print=None,
        access_log_class=PathOnlyAccessLogger,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
