"""What XLA compiles flaxlm's train step into, by op type: no timing, so the same on any loaded machine.

  python tools/step_cost.py --model gpt2_small --seq 256 --batch 8
  python tools/step_cost.py --model gpt2_small --seq 256 --batch 8 --set train.loss_chunk_size=32

Takes tools/benchmark.py's options (the same step at the same shapes: flaxlm's product train step,
`Runner.train_step`, on one device) and compiles it once, without running it. Prints JSON lines:

- "cost": XLA's `cost_analysis()` of the compiled step (flops, bytes accessed, transcendentals) and
  its `memory_analysis()` in bytes: temp (XLA's scratch buffers: the activations kept for the
  backward pass and every intermediate), argument, output, alias (donated state updated in place).
  temp_bytes is the step's peak memory beyond the train state and the batch.
- one "op_type" line per category of the optimised HLO's ops (fusions counted as one op, as they
  run; a fusion with a dot inside is a matmul): ops, matmul FLOPs (2 x output x contracted size;
  ops in a loop body once per iteration), and output bytes (what the op writes). Ops inside a
  lax.cond's branches (the step's finite-update cond) are categories of their own, "cond branch:
  ...": only one branch runs, the update on a finite step, the copy of the state on a skipped one.
- "largest": the ten largest arrays the step writes, with the op that writes them.

Then a Markdown table of the categories on stderr.
"""

import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchmark  # noqa: E402

BYTES = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s16": 2, "u16": 2}
BYTES.update({"f32": 4, "s32": 4, "u32": 4, "f64": 8, "s64": 8, "u64": 8})
SHAPE = re.compile(r"\b(pred|[subf]\d+|bf16)\[([\d,]*)\]")
INSTRUCTION = re.compile(r"\s*(?:ROOT )?%?(\S+) = (.*?) ([a-z][a-z0-9\-]*)\((.*)$")
FREE = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast", "after-all", "partition-id"}
CONTROL = {"while", "conditional", "call"}


def shapes(text: str) -> list[tuple[str, list[int]]]:
    return [(t, [int(d) for d in dims.split(",") if d]) for t, dims in SHAPE.findall(text)]


def nbytes(text: str) -> int:
    total = 0
    for t, dims in shapes(text):
        n = BYTES.get(t, 4)
        for d in dims:
            n *= d
        total += n
    return total


def dot_flops(type_text: str, rest: str, types: dict[str, str]) -> int:
    """2 x output elements x contracted size of one dot instruction (types: its computation's
    instruction name -> type, for the operands' shapes)."""
    out = shapes(type_text)[0][1]
    lhs = shapes(types[re.match(r"\s*%?([\w.\-]+)", rest).group(1)])[0][1]
    m = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", rest)
    contracted = 1
    for i in (int(x) for x in m.group(1).split(",") if x) if m else ():
        contracted *= lhs[i]
    size = 1
    for d in out:
        size *= d
    return 2 * size * contracted


def computations(hlo: str) -> dict[str, list[str]]:
    comps, name = {}, None
    for line in hlo.splitlines():
        m = re.match(r"(?:ENTRY )?%?(\S+) .*\{\s*$", line)
        if m and not line.startswith(" "):
            name = m.group(1)
            comps[name] = []
        elif name and line.startswith(" "):
            comps[name].append(line)
    return comps


def types_of(lines: list[str]) -> dict[str, str]:
    return {m.group(1): m.group(2) for m in map(INSTRUCTION.match, lines) if m}


def trip_count(rest: str) -> int:
    m = re.search(r'"known_trip_count":\{"n":"(\d+)"', rest)
    return int(m.group(1)) if m else 1


def breakdown(hlo: str):
    """({category: {ops, matmul_flops, output_bytes}}, [(bytes, op, category, type)] of every op)."""
    comps = computations(hlo)
    entry = re.search(r"^ENTRY %?(\S+)", hlo, re.M).group(1)
    cats: dict[str, dict] = {}
    arrays = []

    def fusion_dots(name):
        flops, types = 0, types_of(comps.get(name, []))
        for line in comps.get(name, []):
            m = INSTRUCTION.match(line)
            if m and m.group(3) == "dot":
                flops += dot_flops(m.group(2), m.group(4), types)
            elif m and m.group(3) == "fusion":
                flops += fusion_dots(re.search(r"calls=%?([\w.\-]+)", m.group(4)).group(1))
        return flops

    def visit(name, times, prefix=""):
        types = types_of(comps.get(name, []))
        for line in comps.get(name, []):
            m = INSTRUCTION.match(line)
            if not m:
                continue
            op_name, type_text, opcode, rest = m.groups()
            if opcode in FREE:
                continue
            if opcode == "conditional":  # one branch runs: its ops are marked as a branch's
                branches = re.search(r"branch_computations=\{([^}]*)\}", rest)
                names = re.findall(r"%?([\w.\-]+)", branches.group(1)) if branches else []
                names += re.findall(r"(?:true|false)_computation=%?([\w.\-]+)", rest)
                for called in names:
                    visit(called, times, "cond branch: ")
                continue
            if opcode in CONTROL:
                called = re.search(r"(?:body|to_apply|calls)=%?([\w.\-]+)", rest)
                visit(called.group(1), times * (trip_count(rest) if opcode == "while" else 1), prefix)
                continue
            flops = 0
            if opcode == "dot":
                cat, flops = "matmul (dot)", dot_flops(type_text, rest, types)
            elif opcode == "fusion":
                flops = fusion_dots(re.search(r"calls=%?([\w.\-]+)", rest).group(1))
                kind = re.search(r"kind=k(\w+)", rest).group(1)
                cat = (
                    "matmul (fused dot)"
                    if flops
                    else {
                        "Loop": "elementwise fusion",
                        "Input": "reduction fusion",
                        "Output": "output fusion",
                    }.get(kind, "YNNPACK fusion (no dot)" if "__ynn_fusion" in rest else f"{kind} fusion")
                )
            elif opcode.startswith("rng") or opcode == "custom-call" and "threefry" in rest:
                cat = "random bits"
            elif opcode in ("copy", "transpose"):
                cat = "copy / transpose"
            elif opcode in ("reduce", "reduce-window", "all-reduce"):
                cat = "reduce"
            elif opcode in (
                "dynamic-slice",
                "dynamic-update-slice",
                "slice",
                "concatenate",
                "pad",
                "gather",
                "scatter",
            ):
                cat = "slice / gather / scatter"
            elif opcode == "custom-call":
                cat = "custom-call " + (re.search(r'custom_call_target="([^"]+)"', rest) or [None, "?"])[1]
            else:
                cat = "other (" + opcode + ")"
            out = nbytes(type_text)
            cat = prefix + cat
            c = cats.setdefault(cat, {"ops": 0, "matmul_flops": 0, "output_bytes": 0})
            c["ops"] += times
            c["matmul_flops"] += flops * times
            c["output_bytes"] += out * times
            arrays.append((out, op_name, cat, type_text.split("{")[0]))

    visit(entry, 1)
    return cats, sorted(arrays, reverse=True)


def compile_step(args):
    """(config, the compiled train step) of tools/benchmark.py's flaxlm worker, never run."""
    config = benchmark.bench_config(args)
    step = benchmark.FlaxlmStep(config, args, data=False)
    lowered = step.runner.lower_train_step(step.state, step.runner.put_batch(step.batch), step.rng)
    return config, lowered.compile()


def main():
    args = benchmark.parse_args()
    config, compiled = compile_step(args)
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    mem = compiled.memory_analysis()
    row = {
        "what": "cost",
        "model": args.model,
        "seq": args.seq,
        "batch": args.batch,
        "dtype": args.dtype,
        "loss_chunk_size": config.train.loss_chunk_size,
        "flops": cost.get("flops"),
        "bytes_accessed": cost.get("bytes accessed"),
        "transcendentals": cost.get("transcendentals"),
        "temp_bytes": mem.temp_size_in_bytes,
        "argument_bytes": mem.argument_size_in_bytes,
        "output_bytes": mem.output_size_in_bytes,
        "alias_bytes": mem.alias_size_in_bytes,
        "generated_code_bytes": mem.generated_code_size_in_bytes,
    }
    print(json.dumps(row), flush=True)
    cats, arrays = breakdown(compiled.as_text())
    total_flops = sum(c["matmul_flops"] for c in cats.values()) or 1
    total_bytes = sum(c["output_bytes"] for c in cats.values()) or 1
    lines = [
        "| op type | ops | matmul GFLOP | output GB | share of output bytes |",
        "|---|---:|---:|---:|---:|",
    ]
    for cat, c in sorted(cats.items(), key=lambda kv: -kv[1]["output_bytes"]):
        print(json.dumps({"what": "op_type", "category": cat, **c}), flush=True)
        lines.append(
            f"| {cat} | {c['ops']:,} | {c['matmul_flops'] / 1e9:,.1f} | {c['output_bytes'] / 1e9:.2f} | "
            f"{100 * c['output_bytes'] / total_bytes:.1f}% |"
        )
    for size, op, cat, type_text in arrays[:10]:
        print(json.dumps({"what": "largest", "bytes": size, "op": op, "category": cat, "type": type_text}))
    lines.append(
        f"\nmatmul {total_flops / 1e9:,.1f} GFLOP; XLA cost_analysis {row['flops'] / 1e9:,.1f} GFLOP, "
        f"{row['bytes_accessed'] / 1e9:,.2f} GB accessed; temp {row['temp_bytes'] / 2**30:.2f} GiB"
    )
    print("\n".join(lines), file=sys.stderr)


if __name__ == "__main__":
    main()
