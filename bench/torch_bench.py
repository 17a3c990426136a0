#!/usr/bin/python3
"""PyTorch eager baseline for bench/run: the same models, batches and step definitions as
bench/bench_decode.c and bench/bench_train.c, timed the same way.

Run with Debian's torch (/usr/bin/python3); bench/run sets OMP_WAIT_POLICY=PASSIVE,
OMP_NUM_THREADS and OPENBLAS_NUM_THREADS to the thread count (see ../shared/assets/NOTES.md).

    torch_bench.py decode MODEL [--threads 2] [--prompt 16] [--new 128] [--min-seconds 3] [--min-reps 3]
    torch_bench.py train  MODEL [--threads 2] [--batch 4] [--seq 128] [--warmup 2] [--steps 5] [--lora R]
    (either with --lockstep: one unit of work per stdin command, see bench/lockstep.py)

MODEL is a Hugging Face directory (config.json + model.safetensors, F32/BF16/F16) or a
llama2.c .bin (v0 header; q/k rows are permuted to the rotate-half layout HF uses).
The model is a plain eager Llama written like Hugging Face transformers' LlamaForCausalLM
(nn.Linear projections, RMSNorm, rotate-half RoPE, repeat_interleave GQA, masked softmax
attention, SwiGLU MLP, tied head). Decoding uses a preallocated KV cache and computes only
the last position's logits, as memtune does. Prints one JSON line on stdout.
"""

import argparse
import json
import math
import os
import resource
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


RSS_AFTER_IMPORT = rss_mb()


# ---------------------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------------------

class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        var = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(var + self.eps))


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.nh, self.nkv, self.hd = c["n_heads"], c["n_kv_heads"], c["head_dim"]
        D = c["dim"]
        self.q_proj = nn.Linear(D, self.nh * self.hd, bias=c["bias"])
        self.k_proj = nn.Linear(D, self.nkv * self.hd, bias=c["bias"])
        self.v_proj = nn.Linear(D, self.nkv * self.hd, bias=c["bias"])
        self.o_proj = nn.Linear(self.nh * self.hd, D, bias=False)

    def forward(self, x, cos, sin, mask, cache=None, pos=0):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.nh, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.nkv, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.nkv, self.hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if cache is not None:                      # [2, B, nkv, ctx, hd], preallocated
            cache[0, :, :, pos:pos + T] = k
            cache[1, :, :, pos:pos + T] = v
            k = cache[0, :, :, :pos + T]
            v = cache[1, :, :, :pos + T]
        rep = self.nh // self.nkv
        if rep > 1:
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        s = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(self.hd)
        if mask is not None:
            s = s + mask
        p = torch.softmax(s, dim=-1)
        y = torch.matmul(p, v).transpose(1, 2).reshape(B, T, self.nh * self.hd)
        return self.o_proj(y)


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.gate_proj = nn.Linear(c["dim"], c["hidden"], bias=False)
        self.up_proj = nn.Linear(c["dim"], c["hidden"], bias=False)
        self.down_proj = nn.Linear(c["hidden"], c["dim"], bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.input_layernorm = RMSNorm(c["dim"], c["eps"])
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RMSNorm(c["dim"], c["eps"])
        self.mlp = MLP(c)

    def forward(self, x, cos, sin, mask, cache=None, pos=0):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, pos)
        return x + self.mlp(self.post_attention_layernorm(x))


class Llama(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.embed_tokens = nn.Embedding(c["vocab"], c["dim"])
        self.layers = nn.ModuleList([Layer(c) for _ in range(c["n_layers"])])
        self.norm = RMSNorm(c["dim"], c["eps"])
        self.lm_head = nn.Linear(c["dim"], c["vocab"], bias=False)
        if c["tied"]:
            self.lm_head.weight = self.embed_tokens.weight
        hd = c["head_dim"]
        inv = 1.0 / (c["theta"] ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
        ang = torch.arange(c["ctx"], dtype=torch.float64)[:, None] * inv[None, :]
        emb = torch.cat((ang, ang), dim=-1)
        self.register_buffer("cos", emb.cos().float(), persistent=False)
        self.register_buffer("sin", emb.sin().float(), persistent=False)

    def forward(self, ids, pos=0, cache=None, last_only=False):
        B, T = ids.shape
        x = self.embed_tokens(ids)
        cos, sin = self.cos[pos:pos + T], self.sin[pos:pos + T]
        mask = None
        if T > 1:
            n_keys = pos + T
            i = torch.arange(T)[:, None] + pos
            j = torch.arange(n_keys)[None, :]
            mask = torch.zeros(T, n_keys).masked_fill(j > i, float("-inf"))
        for l, layer in enumerate(self.layers):
            x = layer(x, cos, sin, mask, None if cache is None else cache[l], pos)
        if last_only:
            x = x[:, -1:]
        return self.lm_head(self.norm(x))


# ---------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------

NP_DTYPES = {"F32": "<f4", "F16": "<f2"}


def load_hf(path):
    with open(os.path.join(path, "config.json")) as f:
        hc = json.load(f)
    nh = hc["num_attention_heads"]
    c = {
        "dim": hc["hidden_size"], "hidden": hc["intermediate_size"],
        "n_layers": hc["num_hidden_layers"], "n_heads": nh,
        "n_kv_heads": hc.get("num_key_value_heads") or nh,
        "head_dim": hc.get("head_dim") or hc["hidden_size"] // nh,
        "vocab": hc["vocab_size"], "ctx": hc.get("max_position_embeddings", 2048),
        "eps": hc.get("rms_norm_eps", 1e-5), "theta": hc.get("rope_theta", 10000.0),
        "tied": bool(hc.get("tie_word_embeddings", False)),
        "bias": hc.get("model_type") == "qwen2" or bool(hc.get("attention_bias", False)),
    }
    if hc.get("rope_scaling"):
        raise SystemExit("torch_bench: rope_scaling is not implemented here")
    model = Llama(c)
    params = dict(model.named_parameters())
    st = os.path.join(path, "model.safetensors")
    with open(st, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        base = 8 + n
        for name, info in header.items():
            if name == "__metadata__":
                continue
            key = name[len("model."):] if name.startswith("model.") else name
            if key not in params:
                raise SystemExit("torch_bench: unexpected tensor %s" % name)
            p = params[key]
            b, e = info["data_offsets"]
            f.seek(base + b)
            raw = bytearray(e - b)          # writable, so torch.from_numpy does not warn
            f.readinto(raw)
            if info["dtype"] == "BF16":
                a = (np.frombuffer(raw, "<u2").astype("<u4") << 16).view("<f4")
            else:
                a = np.frombuffer(raw, NP_DTYPES[info["dtype"]]).astype("<f4", copy=False)
            with torch.no_grad():
                p.copy_(torch.from_numpy(a.reshape(info["shape"])))
            del raw, a
    return model


def permute_rotate_half(w, n_heads):
    """llama2.c / Meta interleaved-pair rows -> HF rotate-half rows (HF's convert script)."""
    d1, d2 = w.shape
    return w.view(n_heads, d1 // n_heads // 2, 2, d2).transpose(1, 2).reshape(d1, d2)


def load_llama2c(path):
    with open(path, "rb") as f:
        data = f.read()
    dim, hidden, L, nh, nkv, vocab, ctx = struct.unpack("<7i", data[:28])
    tied = vocab > 0
    vocab = abs(vocab)
    hd = dim // nh
    c = {"dim": dim, "hidden": hidden, "n_layers": L, "n_heads": nh, "n_kv_heads": nkv,
         "head_dim": hd, "vocab": vocab, "ctx": ctx, "eps": 1e-5, "theta": 10000.0,
         "tied": tied, "bias": False}
    w = np.frombuffer(data, "<f4", offset=28)
    off = [0]

    def take(*shape):
        n = int(np.prod(shape))
        a = torch.from_numpy(w[off[0]:off[0] + n].copy()).view(*shape)
        off[0] += n
        return a

    model = Llama(c)
    kvd = nkv * hd
    with torch.no_grad():
        model.embed_tokens.weight.copy_(take(vocab, dim))
        for name, shape in [("att_norm", (L, dim)), ("wq", (L, dim, dim)), ("wk", (L, kvd, dim)),
                            ("wv", (L, kvd, dim)), ("wo", (L, dim, dim)), ("ffn_norm", (L, dim)),
                            ("w1", (L, hidden, dim)), ("w2", (L, dim, hidden)), ("w3", (L, hidden, dim))]:
            t = take(*shape)
            for l, layer in enumerate(model.layers):
                a, m = layer.self_attn, layer.mlp
                dst = {"att_norm": layer.input_layernorm.weight, "wq": a.q_proj.weight,
                       "wk": a.k_proj.weight, "wv": a.v_proj.weight, "wo": a.o_proj.weight,
                       "ffn_norm": layer.post_attention_layernorm.weight, "w1": m.gate_proj.weight,
                       "w2": m.down_proj.weight, "w3": m.up_proj.weight}[name]
                src = t[l]
                if name == "wq":
                    src = permute_rotate_half(src, nh)
                elif name == "wk":
                    src = permute_rotate_half(src, nkv)
                dst.copy_(src)
        model.norm.weight.copy_(take(dim))
        take(ctx, hd // 2)   # freq_cis_real
        take(ctx, hd // 2)   # freq_cis_imag
        if not tied:
            model.lm_head.weight.copy_(take(vocab, dim))
    del data, w
    return model


def load(path):
    return load_hf(path) if os.path.isdir(path) else load_llama2c(path)


def n_params(model):
    return sum(p.numel() for p in model.parameters())  # shared (tied) weights counted once


# ---------------------------------------------------------------------------------------
# benchmarks
# ---------------------------------------------------------------------------------------

def units(a):
    """The sequence of work units: yields True for a timed unit, False for a warm-up.
    Standalone: `warmup` untimed then timed ones until `more()` says stop. Lockstep
    (--lockstep, driven by bench/lockstep.py): one unit per stdin command ("warm", "go"),
    until "end"; each unit is answered with "ok SECONDS" on stdout by done()."""
    if a.lockstep:
        print("ready", flush=True)
        for line in sys.stdin:
            if line.startswith("end"):
                return
            yield not line.startswith("warm")
    else:
        for _ in range(a.warmup):
            yield False
        while True:
            yield True


def done(a, seconds):
    if a.lockstep:
        print("ok %.6f" % seconds, flush=True)


def bench_decode(a):
    t0 = time.perf_counter()
    model = load(a.model).eval()
    t_load = time.perf_counter() - t0
    c = model.c
    V, P, N = c["vocab"], a.prompt, a.new
    prompt = [1] + [(37 * i + 11) % (V - 3) + 3 for i in range(1, P)]
    cache = torch.zeros(c["n_layers"], 2, 1, c["n_kv_heads"], P + N, c["head_dim"])
    dec, pre = [], []
    ids = []
    a.warmup = 1
    with torch.inference_mode():
        t_start = None
        for timed in units(a):
            t0 = time.perf_counter()
            logits = model(torch.tensor([prompt]), 0, cache, last_only=True)
            t1 = time.perf_counter()
            ids = []
            n_gen = N if timed or N <= 16 else 16   # a short warm-up, as bench_decode.c
            for i in range(n_gen):
                nxt = int(torch.argmax(logits[0, -1]))
                ids.append(nxt)
                if i + 1 < n_gen:
                    logits = model(torch.tensor([[nxt]]), P + i, cache, last_only=True)
            t2 = time.perf_counter()
            done(a, t2 - t0)
            if not timed:
                continue
            if t_start is None:
                t_start = t0
            dec.append((N - 1) / (t2 - t1))
            pre.append(P / (t1 - t0))
            if not a.lockstep and len(dec) >= a.min_reps and time.perf_counter() - t_start >= a.min_seconds:
                break
    return {"engine": "torch", "bench": "decode", "model": a.model, "params": n_params(model),
            "threads": a.threads, "prompt": P, "new": N, "reps": len(dec),
            "decode_tok_s": round(float(np.median(dec)), 3), "best_decode_tok_s": round(max(dec), 3),
            "prefill_tok_s": round(float(np.median(pre)), 3), "load_s": round(t_load, 3),
            "rss_after_import_mb": round(RSS_AFTER_IMPORT, 1), "peak_rss_mb": round(rss_mb(), 1),
            "ids": ids}


class LoRALinear(nn.Module):
    """PEFT's LoRA Linear, written out: y = base(x) + scale * B(A(x)), base frozen, A
    kaiming-uniform (a = sqrt(5)), B zero, scale = alpha / r."""

    def __init__(self, base, r, alpha):
        super().__init__()
        self.base = base
        self.base.weight.requires_grad_(False)
        self.lora_A = nn.Linear(base.in_features, r, bias=False)
        self.lora_B = nn.Linear(r, base.out_features, bias=False)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        self.scale = alpha / r

    def forward(self, x):
        return self.base(x) + self.scale * self.lora_B(self.lora_A(x))


def add_lora(model, r, alpha):
    """Freezes every parameter and wraps q/k/v/o/gate/up/down of every layer."""
    for p in model.parameters():
        p.requires_grad_(False)
    for layer in model.layers:
        for parent, names in ((layer.self_attn, ("q_proj", "k_proj", "v_proj", "o_proj")),
                              (layer.mlp, ("gate_proj", "up_proj", "down_proj"))):
            for n in names:
                setattr(parent, n, LoRALinear(getattr(parent, n), r, alpha))
    return [p for p in model.parameters() if p.requires_grad]


def bench_train(a):
    model = load(a.model).train()
    c = model.c
    V, B, T = c["vocab"], a.batch, a.seq
    n_all = n_params(model)
    trained = add_lora(model, a.lora, 2.0 * a.lora) if a.lora else list(model.parameters())
    opt = torch.optim.AdamW(trained, lr=1e-4, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=0.01)
    g = torch.Generator().manual_seed(1)
    times, losses = [], []
    n_warm = 0
    for step, timed in enumerate(units(a)):
        seq = torch.randint(0, V, (B, T + 1), generator=g)
        inputs, targets = seq[:, :-1].contiguous(), seq[:, 1:].contiguous()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        logits = model(inputs)
        loss = F.cross_entropy(logits.view(-1, V), targets.view(-1))
        loss.backward()
        opt.step()
        dt = time.perf_counter() - t0
        done(a, dt)
        losses.append(float(loss))
        if timed:
            times.append(dt)
        else:
            n_warm += 1
        print("torch step %d: %.3f s, loss %.4f" % (step, dt, float(loss)), file=sys.stderr)
        if not a.lockstep and len(times) >= a.steps:
            break
    med = float(np.median(times))
    return {"engine": "torch", "bench": "train", "method": "lora" if a.lora else "full",
            "trainable": sum(p.numel() for p in trained), "model": a.model, "params": n_all,
            "threads": a.threads, "B": B, "T": T, "warmup": n_warm, "steps": len(times),
            "step_s": round(med, 4), "best_step_s": round(min(times), 4),
            "tok_s": round(B * T / med, 3), "first_loss": round(losses[0], 5),
            "last_loss": round(losses[-1], 5), "rss_after_import_mb": round(RSS_AFTER_IMPORT, 1),
            "peak_rss_mb": round(rss_mb(), 1)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["decode", "train"])
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", type=int, default=16)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--min-seconds", type=float, default=3.0)
    ap.add_argument("--min-reps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--lora", type=int, default=0,
                    help="train: rank-R LoRA (alpha 2R) on every projection, base frozen")
    ap.add_argument("--lockstep", action="store_true",
                    help="take one unit of work per stdin command (see bench/lockstep.py)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    res = bench_decode(a) if a.mode == "decode" else bench_train(a)
    res["torch_version"] = torch.__version__
    res["torch_threads"] = torch.get_num_threads()
    res["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY", "")
    print(json.dumps(res, separators=(",", ":")))


if __name__ == "__main__":
    main()
