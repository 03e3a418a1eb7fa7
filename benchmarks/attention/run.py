"""The paper's claims about hsrgeom.attention, measured: ``python benchmarks/attention/run.py <name>``.

Each experiment prints its table and rewrites its own section of ``docs/attention.md`` (between
``<!-- begin:<name> -->`` and ``<!-- end:<name> -->``) and its plots under ``docs/img/``, so the
document is regenerated one experiment at a time. Run ``--help`` for the list and options.
(Not part of the installed package: these scripts need the source tree, and torch for the LLM ones.)
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the experiment modules beside this script

# name -> (module, one-line description)
EXPERIMENTS = {
    "sparsity": ("sparsity", "1. non-zeros per row of ReLU attention under the paper's Gaussian model vs n^(4/5)"),
    "decode": ("decode", "2. decode cost vs n: dense numpy vs relu_attention vs DecodeCache.attend"),
    "prefill": ("prefill", "3. prefill cost vs n: dense vs prefill (causal)"),
    "softmax-llm": ("llm", "4. top-r softmax error on Gemma 3 270M's captured Q, K, V (needs the [llm] extra)"),
    "fallback": ("fallback", "the dense fallback threshold of hsrgeom.attention.hf: torch sdpa vs DecodeCache.attend "
                             "per decoding step at Gemma 3 270M shapes (needs torch)"),
    "kernel": ("kernel", "one layer, one decoding step at Gemma 3 270M shapes: sdpa vs GEMV + top-r vs hsrgeom "
                         "top_r / top_p (needs torch)"),
    "peers": ("peers", "one layer, one decoding step at Gemma 3 270M shapes: sdpa, GEMV + top-r, hsrgeom, Quest-style "
                       "pages, faiss HNSW, SimHash sampling (needs torch and faiss-cpu)"),
    "generate-llm": ("llm", "5. generation with hsrgeom attention in Gemma 3 270M vs dense (needs the [llm] extra)"),
    "eval-tokenizer": ("eval", "evaluation kit: the GGUF vocabulary tokenized as llama.cpp does vs the transformers "
                               "tokenizer (needs the [llm] extra)"),
    "eval-passkey": ("eval", "evaluation kit: passkey retrieval at 1K-32K tokens, dense vs hsrgeom decoding in Gemma 3 "
                             "270M (needs the [llm] extra)"),
    "eval-ppl": ("eval", "evaluation kit: teacher-forced top-1 agreement and perplexity on long real text, dense vs "
                         "hsrgeom (needs the [llm] extra)"),
    "eval-fidelity": ("eval", "evaluation kit: per full-attention layer, kept keys, softmax mass and output error of "
                              "the hsrgeom settings on captured Q/K/V (needs the [llm] extra)"),
    "eval-speed": ("eval", "evaluation kit: decode tokens/s through generate() after long prompts, dense vs hsrgeom, "
                           "with the attention share of a step (needs the [llm] extra)"),
}


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in EXPERIMENTS:
        print(__doc__.strip() + "\n")
        for name, (_, text) in EXPERIMENTS.items():
            print(f"  {name:14s} {text}")
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    name = argv[0]
    module = importlib.import_module(EXPERIMENTS[name][0])  # a module beside this script
    parser = argparse.ArgumentParser(prog=f"python benchmarks/attention/run.py {name}",
                                     description=EXPERIMENTS[name][1], conflict_handler="resolve")
    parser.add_argument("--out", help="docs directory to write (default: the repository's docs/)")
    parser.add_argument("--quick", action="store_true", help="a small smoke run; writes nothing")
    parser.add_argument("--threads", type=int, default=0,
                        help="hsrgeom threads (default: all cores); numpy's BLAS follows OPENBLAS_NUM_THREADS "
                             "(an experiment may redefine this option, e.g. to set torch's threads too)")
    module.add_arguments(parser, name)
    args = parser.parse_args(argv[1:])
    if args.threads:
        import hsrgeom
        hsrgeom.set_num_threads(args.threads)
    module.run(args, name, argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
