"""CPU latency and memory of the binarized BERT against the usual CPU baselines, in one process.

For each model head (`encoder` = `BertModel`-style, `mlm` = `...ForMaskedLM`; `mlm-masked` = the same masked-LM models
where ours compute the vocabulary logits at one masked position per sequence only, `logits_positions` as the
`BinaryBertFillMaskPipeline` passes them, while the baselines compute every position as transformers' fill-mask
pipeline and exported graphs do) and each batch size it times one forward
pass (token ids of length `--seq-len`, attention mask of ones) of these variants:

    torch-fp32            transformers `BertModel` / `BertForMaskedLM`, eval, sdpa attention
    torch-bf16-autocast   the same under `torch.autocast("cpu", dtype=torch.bfloat16)`
    torch-int8-dynamic    `torch.ao.quantization.quantize_dynamic` of the nn.Linear layers (int8 weights and activations)
    ort-fp32              the FP32 model exported with `torch.onnx.export(dynamo=True)`, run by ONNX Runtime (CPU EP)
    ort-int8              that ONNX model after `onnxruntime.quantization.quantize_dynamic` (QInt8 weights)
    ours-W1A1             hf_binary_bert packed checkpoint, 1-bit weights, 1-bit activations (BiT elastic, binarized
                          softmax), 1-bit embeddings, on the native encoder runtime (`hf_binary_bert.runtime`)
    ours-W1A1-biattn      the same with BiBERT's Bi-Attention, on the native runtime
    ours-W1A8             1-bit weights, 8-bit activations, 1-bit embeddings, on the native runtime
    ours-W1A32-int8       1-bit weights, float activations run as int8 (`float_activations="int8"`), 16-bit embeddings,
                          on the native runtime
    ours-W1A1-eager       ours-W1A1 on the per-Linear kernels called from PyTorch's eager forward
                          (`set_inference_kernel("eager")`: the path before the native runtime)
    ours-W1A1-reference   W1A1 on the pure-PyTorch reference kernels (slow; `--reference-runs` timed runs)

Our masked-LM rows run the decoder (hidden → 30522-token vocabulary, full precision in the checkpoint) on the int8
kernel (`set_inference_kernel(mlm_head="int8")`), except the reference row, which keeps it in float32.

All models have random weights (the geometry is what matters for latency; our activation quantizers are calibrated
on one random batch before saving): BERT-base by default, a tiny one with `--small`. Input shapes (`--shapes`):
`BxT` is B sequences of T tokens; `BxTm` is B sequences of mixed lengths spread evenly from 8 to T tokens, padded to
T (half the tokens padding at B=8, T=128: our runtime does not compute them). A line per shape compares our W1A1
Linears' binary multiply-accumulates per second with the machine's floor (`hf_binary_bert.kernels.popcount_rate`):
the XOR + popcount rate on L1-resident data and, on AVX2, the nibble-table lookup bound of the W1A1 GEMM's own
instruction mix (tables in registers), whichever is higher; on the `avx512_amx` path another compares the W1 × u8 rows'
multiply-accumulates per second with the AMX tiles' rate on L1-resident data (`popcount_rate(kind="amx")`). Each forward is timed with `time.perf_counter` under `torch.inference_mode()` after `--warmup` untimed
runs, in interleaved rounds (one forward of every variant per round, so a drift of the machine's speed hits all rows
alike; a mixed-length shape and its padded shape share their rounds, so their ratio is measured side by side too; before each timed forward the script waits until the process's worker threads have gone idle — at least 50 ms, then until the process uses under 10 % of a core over 20 ms, at most 1 s — because ONNX Runtime's threads keep spinning after a run for longer than 50 ms on some machines and slowed whichever row came next); the table shows the median of `--runs` timed runs, the speed-up over torch-fp32 and over ort-int8 (the ratio
of the medians). Unless `--skip-memory`, every variant is loaded again in a fresh subprocess that reports its resident
memory (VmRSS, and the peak VmHWM) above the RSS right after `import torch, transformers`: after loading the saved model
the way a user would, after one batch-1 forward, and the peak after a batch-8 forward. A variant whose optional package (or kernel) is missing is shown as
"skipped: <reason>". ONNX rows need the `bench` extra: `pip install -e ".[bench]"`.

    python benchmarks/latency.py                                   # the real benchmark (minutes; run on a quiet machine)
    python benchmarks/latency.py --small --runs 3 --warmup 1       # quick check of the script
    python benchmarks/latency.py --heads encoder --shapes 1x128 --variants torch-fp32,ours-W1A1 --json out.json
"""

import argparse
import contextlib
import gc
import io
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import torch
import transformers
from machine import cpu_model_and_flags  # benchmarks/, on sys.path as the script's folder
from markdown_output import write_markdown

VARIANTS = ["torch-fp32", "torch-bf16-autocast", "torch-int8-dynamic", "ort-fp32", "ort-int8",
            "ours-W1A1", "ours-W1A1-biattn", "ours-W1A8", "ours-W1A32-int8", "ours-W1A1-eager", "ours-W1A1-reference"]
# ours variant -> (activation_bits, embedding_bits, attention_type, set_inference_kernel positional and keyword
# arguments or None)
OURS = {
    "ours-W1A1": (1, 1, "softmax", None),
    "ours-W1A1-biattn": (1, 1, "bi_attention", None),
    "ours-W1A8": (8, 1, "softmax", None),
    "ours-W1A32-int8": (32, 16, "softmax", (("auto",), {"float_activations": "int8"})),
    "ours-W1A1-eager": (1, 1, "softmax", (("eager",), {})),
    "ours-W1A1-reference": (1, 1, "softmax", (("reference",), {})),
}
GEOMETRY_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
BASE = dict(zip(GEOMETRY_KEYS, (30522, 768, 12, 12, 3072)))
SMALL = dict(zip(GEOMETRY_KEYS, (1000, 128, 2, 2, 512)))
CPU_FLAGS = ["avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_vpopcntdq", "amx_bf16",
             "amx_int8"]
# OpenMP settings that change how the kernels' and PyTorch's threads wait and where they run (one libgomp serves both);
# printed with every report, because on a small VM they decide what a forward after an idle wait costs
# (docs/inference.md, "Threads after an idle wait")
OPENMP_ENV = ("OMP_NUM_THREADS", "OMP_PROC_BIND", "OMP_PLACES", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT",
              "GOMP_CPU_AFFINITY", "KMP_AFFINITY", "KMP_BLOCKTIME")


def geometry(small):
    return dict(SMALL if small else BASE, max_position_embeddings=512)


def artifact_key(variant):
    """Which saved file a variant loads (several variants share one)."""
    if variant in OURS:
        return "ours-A{}-E{}-{}".format(*OURS[variant][:3])
    return {"ort-fp32": "onnx-fp32", "ort-int8": "onnx-int8"}.get(variant, "torch")


def torch_classes(head):
    from transformers import BertForMaskedLM, BertModel

    return BertModel if head == "encoder" else BertForMaskedLM


def ours_classes(head):
    from hf_binary_bert import BinaryBertForMaskedLM, BinaryBertModel

    return BinaryBertModel if head == "encoder" else BinaryBertForMaskedLM


# ----------------------------------------------------------------------------------------------- building artifacts
def build_artifact(key, head, geo, seq_len, folder, done):
    """Save one model to `folder`, the way it will be loaded (torch dir, .onnx file, packed hf_binary_bert dir)."""
    path = os.path.join(folder, head, key)
    torch.manual_seed(0)
    if key == "torch":
        from transformers import BertConfig

        torch_classes(head)(BertConfig(**geo)).eval().save_pretrained(path)
    elif key == "onnx-fp32":
        model = torch_classes(head).from_pretrained(done["torch"], attn_implementation="sdpa").eval()
        ids = torch.randint(0, geo["vocab_size"], (2, seq_len))
        batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq", max=geo["max_position_embeddings"])
        path += ".onnx"
        # torch >= 2.9 exports with torch.export + onnxscript (dynamo=True is the default; the legacy TorchScript
        # exporter still exists behind dynamo=False but is deprecated and fails on transformers 5's BertModel).
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" notes
            torch.onnx.export(model, (), path, kwargs={"input_ids": ids, "attention_mask": torch.ones_like(ids)},
                              input_names=["input_ids", "attention_mask"], dynamo=True, external_data=False,
                              dynamic_shapes={"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}})
    elif key == "onnx-int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        path += ".onnx"
        # (ORT's recommended quant_pre_process fails on dynamo-exported graphs: incomplete symbolic shape inference)
        logging.getLogger().setLevel(logging.ERROR)  # its "consider pre-processing" warning
        quantize_dynamic(done["onnx-fp32"], path, weight_type=QuantType.QInt8)
    else:  # ours-A{a}-E{e}-{attention}
        from hf_binary_bert import BinaryBertConfig

        _, a, e, attention = key.split("-")
        cfg = BinaryBertConfig(**geo, weight_scale="learned_offset", scale_granularity="head",
                               activation_bits=int(a[1:]), activation_quantizer="elastic", embedding_bits=int(e[1:]),
                               attention_type=attention, tie_word_embeddings=False,
                               binarized_embeddings=["word", "position", "token_type"])
        model = ours_classes(head)(cfg)
        calibration = torch.randint(0, geo["vocab_size"], (2, seq_len))
        model.train()(input_ids=calibration)  # a training-mode forward calibrates the activation quantizers
        model.eval().save_pretrained(path)  # the packed checkpoint, 1 bit per binarized weight
    return path


def build_artifacts(variants, head, geo, seq_len, folder):
    """{key: path or Exception}; a failed key (missing package, API not there yet) skips the variants that need it."""
    depends = {"onnx-int8": "onnx-fp32", "onnx-fp32": "torch"}
    needed = {artifact_key(v) for v in variants}
    for key in ("onnx-int8", "onnx-fp32"):
        if key in needed:
            needed.add(depends[key])
    done = {}
    for key in sorted(needed, key=lambda k: (k != "torch", k != "onnx-fp32", k)):  # dependencies first
        try:
            if isinstance(done.get(depends.get(key)), Exception):
                raise done[depends[key]]
            done[key] = build_artifact(key, head, geo, seq_len, folder, done)
        except Exception as exc:  # noqa: BLE001 - any failure just skips the rows
            done[key] = exc
    return done


# ----------------------------------------------------------------------------------------------- loading and running
def load(variant, head, path, threads):
    """Load a saved variant as a user would and return `forward(input_ids, attention_mask)`."""
    if variant.startswith("ort"):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        return lambda ids, mask: session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
    if variant in OURS:
        model = ours_classes(head).from_pretrained(path).eval()  # default attention: the model picks its own
        if OURS[variant][3] is not None:
            args, kwargs = OURS[variant][3]
            model.set_inference_kernel(*args, **kwargs)
        if head in ("mlm", "mlm-masked") and variant != "ours-W1A1-reference":
            model.set_inference_kernel(mlm_head="int8")  # the 30k-vocabulary decoder on the int8 kernel
        if head == "mlm-masked":
            def forward_masked(ids, mask):  # one [MASK] per sequence, in the middle
                positions = torch.zeros(ids.shape, dtype=torch.bool)
                positions[:, ids.shape[1] // 2] = True
                return model(input_ids=ids, attention_mask=mask, logits_positions=positions)

            return forward_masked
        return lambda ids, mask: model(input_ids=ids, attention_mask=mask)
    model = torch_classes(head).from_pretrained(path, attn_implementation="sdpa").eval()
    if variant == "torch-bf16-autocast":
        def forward(ids, mask):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return model(input_ids=ids, attention_mask=mask)

        return forward
    if variant == "torch-int8-dynamic":
        # torch 2.13 still ships torch.ao.quantization.quantize_dynamic (x86/fbgemm engine) but marks it deprecated in
        # favour of torchao's `quantize_(model, Int8DynamicActivationInt8WeightConfig())`; we use the torch one so the
        # baseline needs no extra package.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    return lambda ids, mask: model(input_ids=ids, attention_mask=mask)


def settle(minimum=0.05, window=0.02, idle_share=0.1, limit=1.0):
    """Wait until this process's threads have stopped using the CPU: `minimum` seconds, then until the process's CPU
    time grows by less than `idle_share` of one core over a `window` (or `limit` seconds have passed). Returns the
    seconds waited. ONNX Runtime's intra-op threads spin after a run (its default, `allow_spinning`), on some machines
    for longer than 50 ms; without this the row timed after an ONNX Runtime row ran while those threads still held
    the cores (seen on an AVX2 AMD EPYC: the row after ort-int8 took 1.2-1.6x its time in another position)."""
    start = time.perf_counter()
    time.sleep(minimum)
    while time.perf_counter() - start < limit:
        cpu = time.process_time()
        time.sleep(window)
        if time.process_time() - cpu < idle_share * window:
            break
    return time.perf_counter() - start


def parse_shape(spec):
    """"BxT" or "BxTm" (mixed lengths) → (batch, seq_len, mixed)."""
    batch, _, rest = spec.partition("x")
    return int(batch), int(rest.rstrip("m")), rest.endswith("m")


def make_inputs(batch, seq_len, vocab_size, mixed=False):
    """Token ids [batch, seq_len] and the attention mask; `mixed`: lengths spread evenly from min(8, T) to T."""
    generator = torch.Generator().manual_seed(batch)
    ids = torch.randint(0, vocab_size, (batch, seq_len), generator=generator)
    mask = torch.ones_like(ids)
    if mixed:
        lengths = torch.linspace(min(8, seq_len), seq_len, batch).round().long()
        mask = (torch.arange(seq_len) < lengths.unsqueeze(1)).long()
    return ids, mask


def linear_macs(geo, tokens):
    """Binary multiply-accumulates of the encoder's binarized Linears for `tokens` real tokens."""
    h, i = geo["hidden_size"], geo["intermediate_size"]
    return tokens * geo["num_hidden_layers"] * (4 * h * h + 2 * h * i)


# ----------------------------------------------------------------------------------------------- memory (subprocess)
def proc_status_mb():
    fields = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0]) * 1024 / 1e6  # kB -> MB (10^6 bytes)
    return fields


def import_libraries(variant):
    """Import what loading `variant` needs (transformers' model classes are imported lazily)."""
    if variant.startswith("ort"):
        import onnxruntime  # noqa: F401
    elif variant in OURS:
        ours_classes("encoder")
    else:
        torch_classes("encoder")


def memory_child(spec):
    """Runs in a fresh interpreter: `torch` and `transformers` are imported (module top), nothing else yet."""
    base = proc_status_mb()
    torch.set_num_threads(spec["threads"])
    import_libraries(spec["variant"])
    imported = proc_status_mb()
    forward = load(spec["variant"], spec["head"], spec["path"], spec["threads"])
    loaded = proc_status_mb()
    with torch.inference_mode():
        forward(*make_inputs(1, spec["seq_len"], spec["vocab_size"]))
    after = proc_status_mb()
    with torch.inference_mode():
        forward(*make_inputs(8, spec["seq_len"], spec["vocab_size"]))
    after_b8 = proc_status_mb()
    print(json.dumps({"baseline_mb": base["VmRSS"], "imports_mb": imported["VmRSS"] - base["VmRSS"],
                      "load_mb": loaded["VmRSS"] - base["VmRSS"], "forward_mb": after["VmRSS"] - base["VmRSS"],
                      "peak_mb": after["VmHWM"] - base["VmRSS"], "peak_b8_mb": after_b8["VmHWM"] - base["VmRSS"]}))


def measure_memory(spec):
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--memory-child", json.dumps(spec)],
                          check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"]
        return {"skipped": lines[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------- reporting
def openmp_env() -> str:
    """The OPENMP_ENV variables set in this process, as `NAME=value` joined by spaces, or "none set"."""
    return " ".join(f"{name}={os.environ[name]}" for name in OPENMP_ENV if name in os.environ) or "none set"


def environment(threads):
    info = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "threads": threads, "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}
    info["cpu"], flags = cpu_model_and_flags()
    info["openmp_env"] = openmp_env()
    if flags:
        info["cpu_flags"] = {flag: flag in flags for flag in CPU_FLAGS}
    for package in ("onnxruntime", "onnxscript", "hf_binary_bert"):
        try:
            info[package] = __import__(package).__version__
        except Exception as exc:  # noqa: BLE001
            info[package] = f"unavailable ({type(exc).__name__})"
    try:
        from hf_binary_bert.kernels import cpu_features

        info["hf_binary_bert_cpu_features"] = cpu_features()
    except Exception as exc:  # noqa: BLE001 - the kernels module may not exist yet
        info["hf_binary_bert_cpu_features"] = f"unavailable ({type(exc).__name__}: {exc})"
    return info


def environment_header(threads):
    """The machine lines the A/B scripts (isa_ab.py, build_ab.py) open their reports with: CPU, the kernels' CPU
    features, torch / transformers versions and the thread count."""
    env = environment(threads)
    return [f"cpu: {env.get('cpu')}", f"hf_binary_bert_cpu_features: {env.get('hf_binary_bert_cpu_features')}",
            f"torch {env['torch']}, transformers {env['transformers']}, {threads} threads",
            f"OpenMP environment: {env['openmp_env']}"]


def skip_reason(exc):
    return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"[:160]


def print_table(title, columns, rows):
    """Print and return a markdown table; `columns` maps a header to a row key (numbers print with 2 decimals, a
    skipped row its reason)."""
    lines = [f"{title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [f"{row[k]:.2f}" if isinstance(row.get(k), float) else str(row.get(k, "")) for k in columns.values()]
        if "skipped" in row:
            first = next(i for i, k in enumerate(columns.values()) if k not in ("head", "batch", "variant"))
            cells = cells[:first] + [f"skipped: {row['skipped']}"] + [""] * (len(cells) - first - 1)
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    print("\n" + table)
    return table


def shape_groups(shapes):
    """The shapes timed together in one set of rounds: a mixed-length shape `BxTm` with its padded `BxT` when both
    are asked for (their ratio is a target, so a drift of the machine's speed between them must not move it), every
    other shape alone; in the order given."""
    groups, grouped = [], set()
    for shape in shapes:
        if shape in grouped:
            continue
        batch, seq, mixed = parse_shape(shape)
        partner = f"{batch}x{seq}" if mixed else f"{batch}x{seq}m"
        group = [shape, partner] if partner in shapes and partner not in grouped else [shape]
        grouped.update(group)
        groups.append(sorted(group, key=lambda s: s.endswith("m")))  # the padded shape first
    return groups


def time_head(head, variants, artifacts, shapes, geo, args):
    """Latency rows of one head: every variant is loaded once, then, per group of input shapes (`shape_groups`),
    warmed up and timed in interleaved rounds (one forward of each variant on each shape of the group per round), so
    that drifts of the machine's speed hit all rows of a group alike; then the ratios of the medians."""
    rows, forwards = [], {}
    for variant in variants:
        path = artifacts[artifact_key(variant)]
        try:
            if isinstance(path, Exception):
                raise path
            forwards[variant] = load(variant, head, path, args.threads)
        except Exception as exc:  # noqa: BLE001 - a missing package or API skips the rows
            rows += [{"head": head, "batch": b, "variant": variant, "skipped": skip_reason(exc)} for b in shapes]
            print(f"{head} {variant}: skipped: {skip_reason(exc)}", flush=True)
    for group in shape_groups(shapes):
        inputs = {b: make_inputs(*parse_shape(b)[:2], geo["vocab_size"], parse_shape(b)[2]) for b in group}
        times, failed = {(b, v): [] for b in group for v in forwards}, {}
        with torch.inference_mode():
            for batch in group:
                for variant, forward in forwards.items():
                    try:
                        for _ in range(min(args.warmup, 1) if variant.endswith("reference") else args.warmup):
                            forward(*inputs[batch])
                    except Exception as exc:  # noqa: BLE001
                        failed[batch, variant] = skip_reason(exc)
            for round_ in range(args.runs):
                for batch in group:
                    for variant, forward in forwards.items():
                        if (batch, variant) in failed or (variant.endswith("reference")
                                                          and round_ >= args.reference_runs):
                            continue
                        settle()  # the previous row's worker threads (ONNX Runtime spins) go idle first
                        start = time.perf_counter()
                        forward(*inputs[batch])
                        times[batch, variant].append((time.perf_counter() - start) * 1e3)
        for batch in group:
            for variant in forwards:
                row = {"head": head, "batch": batch, "variant": variant}
                if (batch, variant) in failed:
                    row["skipped"] = failed[batch, variant]
                else:
                    row.update(runs=len(times[batch, variant]), median_ms=statistics.median(times[batch, variant]),
                               times_ms=times[batch, variant])
                rows.append(row)
                print(f"{head} b={batch} {variant}: " + (f"skipped: {row['skipped']}" if "skipped" in row else
                                                         f"{row['median_ms']:.2f} ms"), flush=True)
    forwards.clear()
    gc.collect()
    for row in rows:
        medians = {r["variant"]: r.get("median_ms") for r in rows if r["batch"] == row["batch"]}
        for base, key in (("torch-fp32", "speedup_vs_torch_fp32"), ("ort-int8", "speedup_vs_ort_int8"),
                          ("torch-int8-dynamic", "speedup_vs_torch_int8")):
            if medians.get(base) and row.get("median_ms"):
                row[key] = medians[base] / row["median_ms"]
    return rows


def rate_lines(rows, geo, popcount_rate, u8_rate=None):
    """Lines comparing our W1A1 rows' Linear multiply-accumulate rate with the machine's measured binary MAC floor
    (`popcount_rate`: the higher of XOR + popcount and, on AVX2, the nibble-table lookup bound), the W1 × u8 rows'
    with the AMX tile rate where that path runs (`u8_rate`), and the mixed-length shapes' time with the padded
    shape's."""
    lines = []
    for row in rows:
        binary = row["variant"] in ("ours-W1A1", "ours-W1A1-biattn")
        u8 = bool(u8_rate) and row["variant"] in ("ours-W1A8", "ours-W1A32-int8")
        if not row.get("median_ms") or not (binary or u8):
            continue
        batch, seq, mixed = parse_shape(row["batch"])
        macs = linear_macs(geo, int(make_inputs(batch, seq, geo["vocab_size"], mixed)[1].sum()))  # real tokens only
        rate = macs / row["median_ms"] / 1e6  # G MAC/s over the whole forward
        if binary:
            line = (f"{row['head']} {row['batch']} {row['variant']}: the binarized Linears' {macs / 1e9:.2f} "
                    f"G binary MACs at {rate:.1f} G MAC/s over the whole forward")
            if popcount_rate:
                line += (f" = {rate / popcount_rate:.2f} of the machine's binary MAC floor ({popcount_rate:.0f} G/s, "
                         f"the higher rate above, all threads): the Linears alone take at least "
                         f"{macs / popcount_rate / 1e6:.1f} ms at that rate")
            lines.append(line)
        if u8:
            lines.append(f"{row['head']} {row['batch']} {row['variant']}: the W1 × u8 Linears' {macs / 1e9:.2f} G MACs "
                         f"at {rate:.1f} G MAC/s over the whole forward = {rate / u8_rate:.2f} of the AMX tile rate "
                         f"({u8_rate:.0f} G/s, all threads): the Linears alone take at least "
                         f"{macs / u8_rate / 1e6:.1f} ms at that rate")
    for row in rows:
        batch, seq, mixed = parse_shape(row["batch"])
        padded = next((r for r in rows if r["head"] == row["head"] and r["variant"] == row["variant"]
                       and r["batch"] == f"{batch}x{seq}"), None)
        if mixed and padded and row.get("median_ms") and padded.get("median_ms"):
            lines.append(f"{row['head']} {row['variant']}: mixed lengths {row['batch']} take "
                         f"{row['median_ms'] / padded['median_ms']:.2f}x the padded {padded['batch']} time")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="tiny geometry for a quick check (not BERT-base)")
    parser.add_argument("--shapes", default="1x128,8x128,1x32,8x128m",
                        help="input shapes: BxT (B sequences of T tokens) or BxTm (mixed lengths from 8 to T)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads and ORT intra_op_num_threads")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--reference-runs", type=int, default=3, help="timed runs of the slow reference kernels")
    parser.add_argument("--heads", default="encoder,mlm")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--json", metavar="PATH", help="also write environment and results as JSON")
    parser.add_argument("--markdown", metavar="PATH", help="also write the environment and the tables as markdown "
                                                           "(docs/benchmarks.md includes such a file)")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--isa", help="run hf_binary_bert's kernels on this instruction-set path (kernels.set_isa), "
                                      "e.g. avx2 on an AVX-512 CPU; PyTorch and ONNX Runtime keep their own")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    if args.memory_child:
        return memory_child(json.loads(args.memory_child))

    heads, variants = args.heads.split(","), args.variants.split(",")
    shapes = args.shapes.split(",")
    for shape in shapes:
        try:
            parse_shape(shape)
        except ValueError:
            parser.error(f"bad shape {shape!r}: use BxT or BxTm, e.g. 8x128m")
    seq_len = max(parse_shape(shape)[1] for shape in shapes)
    unknown = [h for h in heads if h not in ("encoder", "mlm", "mlm-masked")] + [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown heads/variants: {unknown}; variants are {VARIANTS}")
    torch.set_num_threads(args.threads)
    geo = geometry(args.small)
    env = environment(args.threads)
    header = []
    for key, value in env.items():
        if key == "cpu_flags":
            value = " ".join(flag if present else f"no-{flag}" for flag, present in value.items())
        header.append(f"{key}: {value}")
    if args.isa:
        from hf_binary_bert.kernels import set_isa, supported_isas

        try:
            best = set_isa(args.isa)
        except ValueError as exc:
            parser.error(f"--isa: {exc}")
        if best != args.isa:
            header.append(f"hf_binary_bert kernels forced to {args.isa} with --isa (this CPU's own path: {best}); "
                          f"PyTorch and ONNX Runtime use their own code for this CPU, so the ratios are not those "
                          f"of a CPU that has only {args.isa} (supported here: {', '.join(supported_isas())})")
    try:
        from hf_binary_bert.kernels import get_isa, popcount_rate

        popcount, u8_rate = popcount_rate(args.threads), None
        line = (f"hf_binary_bert instruction set: {get_isa()}; XOR+popcount rate: {popcount:.0f} G bit ops/s "
                f"({args.threads} threads, L1-resident data)")
        if get_isa() in ("avx2", "avx512"):  # the W1A1 GEMM's nibble-table lookups (its bound may be the higher)
            table = popcount_rate(args.threads, kind="table")
            line += f"; nibble-table lookup bound: {table:.0f} G binary MACs/s (tables in registers)"
            popcount = max(popcount, table)
        if get_isa() == "avx512_amx":  # the W1 × u8 GEMMs' floor on that path: AMX tdpbusd on L1-resident tiles
            u8_rate = popcount_rate(args.threads, kind="amx")
            line += f"; AMX tile rate (W1 × u8): {u8_rate:.0f} G u8 MACs/s"
        header.append(line)
    except Exception as exc:  # noqa: BLE001 - an older build without popcount_rate
        popcount = u8_rate = None
        header.append(f"hf_binary_bert instruction set / popcount rate unavailable ({skip_reason(exc)})")
    header.append(f"geometry: {geo}, shapes {shapes}, warmup {args.warmup}, "
                  f"runs {args.runs}")
    print("\n".join(header))

    latency, memory = [], []
    with tempfile.TemporaryDirectory(prefix="hf_binary_bert_bench_") as folder:
        for head in heads:
            artifacts = build_artifacts(variants, "mlm" if head == "mlm-masked" else head, geo, seq_len, folder)
            latency += time_head(head, variants, artifacts, shapes, geo, args)
            if not args.skip_memory and head != "mlm-masked":  # the same models as the mlm head
                for variant in variants:
                    path = artifacts[artifact_key(variant)]
                    result = {"skipped": skip_reason(path)} if isinstance(path, Exception) else \
                        measure_memory({"variant": variant, "head": head, "path": path, "threads": args.threads,
                                        "seq_len": seq_len, "vocab_size": geo["vocab_size"]})
                    memory.append({"head": head, "variant": variant, **result})
                    print(f"{head} {variant} memory: {result}", flush=True)

    tables = [print_table("Median ms per forward; x = speed-up (ratio of the medians)",
                          {"head": "head", "batch": "batch", "variant": "variant", "median ms": "median_ms",
                           "x vs torch-fp32": "speedup_vs_torch_fp32", "x vs ort-int8": "speedup_vs_ort_int8",
                           "x vs torch-int8-dynamic": "speedup_vs_torch_int8", "runs": "runs"}, latency)]
    lines = rate_lines(latency, geo, popcount, u8_rate)
    if lines:
        print("\n".join(lines))
        tables.append("\n".join(f"- {line}" for line in lines) + "\n")
    if memory:
        tables.append(print_table(
            "MB (10^6 bytes) of RSS above the RSS right after `import torch, transformers`, fresh process",
            {"head": "head", "variant": "variant", "imports": "imports_mb", "after load": "load_mb",
             "after forward (batch 1)": "forward_mb", "peak (VmHWM) batch 1": "peak_mb",
             "peak (VmHWM) after batch 8": "peak_b8_mb"}, memory))
    if args.markdown:
        write_markdown(args.markdown, __file__, argv, "```text\n" + "\n".join(header) + "\n```\n\n" + "\n".join(tables))
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"environment": env, "geometry": geo, "args": vars(args), "latency": latency, "memory": memory},
                      out, indent=2, default=str)


if __name__ == "__main__":
    main()
