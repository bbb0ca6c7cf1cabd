"""Per-device memory and FLOPs of a train step on meshes you do not have, from an ahead-of-time compile.

  python tools/simulate_mesh.py --model bert_large --seq 512 --batch 256 --mesh 8x1x1,64x1x1,256x4x1

--model is a recipe in configs/ (bert_base, bert_large, gpt2_small, gpt_1b, ...) or a path to a
config file; each --mesh entry is DATAxFSDPxTENSOR. The step is compiled for that many fake CPU
devices (nothing is allocated at full size); see flaxlm/simulate.py for what each figure means
and how far to trust it. Prints a table, or one JSON object per mesh with --json.
"""

import argparse
import importlib.util
import json
import math
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]


def parse_mesh(text: str) -> tuple[int, int, int]:
    try:
        shape = tuple(int(x) for x in text.lower().split("x"))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"mesh {text!r} is not DATAxFSDPxTENSOR, e.g. 8x1x1 or 16x4x2")
    return shape


def load_config(model: str):
    path = pathlib.Path(model)
    if not path.suffix:
        path = REPO / "configs" / f"{model}.py"
    if not path.exists():
        names = ", ".join(sorted(p.stem for p in (REPO / "configs").glob("*.py")))
        raise SystemExit(f"simulate_mesh.py: error: no config {path}; --model is one of {names} or a file")
    spec = importlib.util.spec_from_file_location("simulated_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def gib(x: float) -> str:
    return f"{x / 2**30:.2f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="configs/ name (bert_large) or a config file")
    parser.add_argument("--seq", type=int, required=True, help="tokens per sequence")
    parser.add_argument("--batch", type=int, required=True, help="global batch, in sequences")
    parser.add_argument(
        "--mesh",
        required=True,
        type=lambda s: [parse_mesh(m) for m in s.split(",")],
        help="comma-separated DATAxFSDPxTENSOR shapes",
    )
    parser.add_argument("--objective", default=None, help="default: the config's")
    parser.add_argument("--remat", action="store_true", help="recompute blocks in the backward pass")
    parser.add_argument("--json", action="store_true", help="one JSON object per mesh instead of a table")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(REPO))
    from flaxlm import simulate

    # Before JAX starts its CPU backend: as many fake devices as the largest mesh needs.
    simulate.request_host_devices(max(math.prod(m) for m in args.mesh))
    from flaxlm.errors import FlaxlmError

    config = load_config(args.model)
    model = config.model.to_dict()
    if args.remat:
        model["remat"] = True
    objective = args.objective or config.objective
    if not args.json:
        print(
            f"{args.model}: batch {args.batch} x seq {args.seq}, objective {objective}; GiB and TFLOP "
            "per device per step (XLA CPU compile; see flaxlm/simulate.py)"
        )
        print(
            f"{'mesh':>10} {'params':>7} {'opt':>7} {'temp':>7} {'peak':>7} {'TFLOP':>8} "
            f"{'6ND TFLOP':>9} {'compile s':>9}"
        )
    for mesh in args.mesh:
        start = time.perf_counter()
        try:
            r = simulate.simulate(model, mesh, args.batch, args.seq, objective=objective)
        except FlaxlmError as e:
            r = {"mesh": "x".join(map(str, mesh)), "error": " ".join(str(e).split())}
        r["compile_s"] = round(time.perf_counter() - start, 1)
        r["model"] = args.model
        if args.json:
            print(json.dumps(r), flush=True)
        elif "error" in r:
            print(f"{r['mesh']:>10} error: {r['error']}", flush=True)
        else:
            print(
                f"{r['mesh']:>10} {gib(r['param_bytes']):>7} {gib(r['opt_state_bytes']):>7} "
                f"{gib(r['temp_bytes']):>7} {gib(r['peak_bytes']):>7} {r['flops'] / 1e12:>8.3f} "
                f"{r['model_flops'] / 1e12:>9.3f} {r['compile_s']:>9}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
