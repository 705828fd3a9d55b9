"""Decode CLI: print a model's completion of one chat prompt (only the completion, on stdout).

    python -m mtalign_jax.decode --model smollm2-135m-instruct \
        --prompt "What is the capital of France?" --max_new_tokens 16

--model is a preset name, an HF directory, a .gguf file or one of our workdirs. Defaults: greedy
(temperature 0), 128 new tokens. --head_weights 0.7,0.3 mixes a multi-head checkpoint's action
heads (one weight per head). --prm A,B [--prm_weights 0.7,0.3] switches to PRM-guided decoding
(`mtalign_jax.decoding.guided`): K=5 candidate steps sampled at temperature 1.0 and top-k 50 unless
--temperature / --top_k say otherwise; each step's candidate scores and chosen index go to stderr
as `step N: scores [...] -> i`. --prm names reward-model workdirs (or HF reward-model dirs);
--domain picks the step rule (math: blank lines; dialogue: sentences; turn: best-of-K turns).

    python -m mtalign_jax.decode --model smollm2-135m-instruct --prm workdirs/prm_math \
        --prompt "What is 12 * 7?" --max_new_tokens 256
"""
from __future__ import annotations

import argparse
import sys

NUM_CANDIDATES = 5  # the paper's K for guided decoding


def _floats(text: str, flag: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"{flag}: expected comma-separated numbers, got {text!r}")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m mtalign_jax.decode", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="preset name, HF dir, .gguf file or workdir")
    p.add_argument("--prompt", required=True, help="the user message")
    p.add_argument("--system", default=None, help="optional system message")
    p.add_argument("--head_weights", default=None, help="comma-separated, one per action head")
    p.add_argument("--max_new_tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=None,
                   help="0 = greedy (default; 1.0 with --prm)")
    p.add_argument("--top_k", type=int, default=None, help="0 = no limit (default; 50 with --prm)")
    p.add_argument("--top_p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prm", default=None, help="comma-separated PRM names/paths (guided decoding)")
    p.add_argument("--prm_weights", default=None, help="comma-separated, one per PRM")
    p.add_argument("--domain", default="math", choices=("math", "dialogue", "turn"),
                   help="guided decoding's step rule: math (blank lines), dialogue "
                        "(sentences), turn (best-of-K whole turns)")
    args = p.parse_args(argv)
    if args.max_new_tokens < 1:
        p.error(f"--max_new_tokens must be >= 1, got {args.max_new_tokens}")
    guided = bool(args.prm)
    if args.temperature is None:
        args.temperature = 1.0 if guided else 0.0
    if args.top_k is None:
        args.top_k = 50 if guided else 0
    if args.temperature < 0:
        p.error(f"--temperature must be >= 0, got {args.temperature}")
    if not 0.0 < args.top_p <= 1.0:
        p.error(f"--top_p must be in (0, 1], got {args.top_p}")
    args.head_weights = None if args.head_weights is None else _floats(
        args.head_weights, "--head_weights")
    args.prm = [x.strip() for x in args.prm.split(",") if x.strip()] if args.prm else None
    args.prm_weights = None if args.prm_weights is None else _floats(
        args.prm_weights, "--prm_weights")
    if args.prm_weights is not None:
        if not args.prm:
            p.error("--prm_weights needs --prm")
        if len(args.prm_weights) != len(args.prm):
            p.error(f"--prm_weights has {len(args.prm_weights)} entries for "
                    f"{len(args.prm)} PRM(s) in --prm")
    return args


def main(argv=None) -> str:
    args = parse_args(argv)

    import jax

    import mtalign_jax
    from mtalign_jax.decoding.sampling import generate

    model, params, tokenizer = mtalign_jax.load_pretrained(args.model)
    num_heads = params["heads"]["kernel"].shape[0]
    if args.head_weights is not None and len(args.head_weights) != num_heads:
        raise SystemExit(f"--head_weights has {len(args.head_weights)} entries but {args.model} "
                         f"has {num_heads} action head(s)")
    messages = ([{"role": "system", "content": args.system}] if args.system else [])
    messages.append({"role": "user", "content": args.prompt})
    prompt_ids = tokenizer.encode_chat(messages, add_generation_prompt=True)
    rng = jax.random.PRNGKey(args.seed)

    if args.prm:
        try:
            from mtalign_jax.decoding.guided import guided_generate
        except ImportError as e:
            raise SystemExit(f"--prm: PRM-guided decoding is not available ({e})")
        (out,) = guided_generate(
            model, params, tokenizer, [prompt_ids], prms=args.prm, prm_weights=args.prm_weights,
            guide_prompts=[messages if args.system else args.prompt], domain=args.domain,
            num_candidates=NUM_CANDIDATES, max_new_tokens=args.max_new_tokens,
            temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, rng=rng,
            head_weights=args.head_weights, log=lambda line: print(line, file=sys.stderr))
        text = out.text
    else:
        (result,) = generate(
            model, params, [prompt_ids], max_new_tokens=args.max_new_tokens, rng=rng,
            temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
            head_weights=args.head_weights, tokenizer=tokenizer)
        text = result.text
    print(text)
    return text


if __name__ == "__main__":
    main(sys.argv[1:])
