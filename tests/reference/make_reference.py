#!/usr/bin/python3
"""Generate the reference fixtures for memtune's model tests.

Run with Debian's PyTorch (no transformers / safetensors packages needed):

    apt-get install python3-torch python3-numpy
    /usr/bin/python3 tests/reference/make_reference.py            # writes tests/fixtures/
    /usr/bin/python3 tests/reference/make_reference.py --out DIR  # writes DIR/ instead

It builds three small random Llama-family models, saves each as a Hugging Face
directory (config.json + hand-written safetensors), runs a float64 forward that follows
the Hugging Face transformers conventions, and records logits and next-token NLL in
reference.json.  It then builds two smaller models for training (tests/fixtures/train_*)
and records, for one packed and masked batch, the loss, the gradient of every parameter
(float64 autograd) and the losses of 10 torch.optim.AdamW steps.  See
tests/reference/README.md for what each fixture covers and for the exact JSON schemas.

Everything is deterministic: fixed seeds, numpy's PCG64 generator for weights and
prompts, single-threaded float64 torch, fixed JSON formatting.  Running the script twice
produces byte-identical files.
"""

import argparse
import json
import math
import os
import struct
import sys

import numpy as np
import torch

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

F64 = torch.float64
VOCAB_PREFIX = 64          # logits stored for every position for vocab ids [0, 64)
PROMPT_EXTRA = (11, 23)    # prompts are [1] + n random ids in [3, vocab), n from this tuple


# --------------------------------------------------------------------------------------
# Model definitions
# --------------------------------------------------------------------------------------

MODELS = [
    {
        "name": "gqa_tied",
        "seed": 1001,
        "storage": "F32",
        "config": {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": 64,
            "intermediate_size": 172,
            "num_hidden_layers": 2,
            "num_attention_heads": 8,
            "num_key_value_heads": 4,
            "vocab_size": 300,
            "max_position_embeddings": 256,
            "rms_norm_eps": 1e-05,
            "rope_theta": 10000.0,
            "rope_scaling": None,
            "tie_word_embeddings": True,
            "attention_bias": False,
            "mlp_bias": False,
            "hidden_act": "silu",
            "initializer_range": 0.02,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "torch_dtype": "float32",
        },
    },
    {
        "name": "llama3_untied",
        "seed": 2002,
        "storage": "BF16",
        "config": {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 32,
            "vocab_size": 300,
            "max_position_embeddings": 512,
            "rms_norm_eps": 1e-06,
            "rope_theta": 500000.0,
            "rope_scaling": {
                "factor": 8.0,
                "high_freq_factor": 4.0,
                "low_freq_factor": 1.0,
                "original_max_position_embeddings": 64,
                "rope_type": "llama3",
            },
            "tie_word_embeddings": False,
            "attention_bias": False,
            "mlp_bias": False,
            "hidden_act": "silu",
            "initializer_range": 0.02,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "torch_dtype": "bfloat16",
        },
    },
    {
        "name": "qwen2_bias",
        "seed": 3003,
        "storage": "F16",
        "config": {
            "architectures": ["Qwen2ForCausalLM"],
            "model_type": "qwen2",
            "hidden_size": 64,
            "intermediate_size": 160,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "vocab_size": 300,
            "max_position_embeddings": 32768,
            "rms_norm_eps": 1e-06,
            "rope_theta": 1000000.0,
            "rope_scaling": None,
            "tie_word_embeddings": True,
            "use_sliding_window": False,
            "sliding_window": 32768,
            "max_window_layers": 2,
            "hidden_act": "silu",
            "initializer_range": 0.02,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "torch_dtype": "float16",
        },
    },
]


def head_dim_of(cfg):
    return cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]


def has_qkv_bias(cfg):
    return cfg["model_type"] == "qwen2" or bool(cfg.get("attention_bias", False))


# --------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------
#
# Scales: with hidden 64, HF's N(0, 0.02) init makes every layer's contribution tiny
# (attention scores ~0.02, so attention is uniform and RoPE -- and its scaling -- barely
# move the logits).  To make the fixtures sensitive to bugs we use fan-in scaled weights
# instead: q/k gain 1.3 (attention scores of order 1-2, so softmax is peaked and position
# matters), v/o/gate/up/down gain 1, embeddings / lm_head std 0.25 (logits std ~2),
# norm weights 1 + 0.1*N(0,1), q/k/v biases 0.3*N(0,1).

def tensor_specs(cfg):
    """Ordered list of (hf_name, shape, kind, std)."""
    H = cfg["hidden_size"]
    I = cfg["intermediate_size"]
    nh = cfg["num_attention_heads"]
    nkv = cfg["num_key_value_heads"]
    hd = head_dim_of(cfg)
    V = cfg["vocab_size"]
    specs = [("model.embed_tokens.weight", (V, H), "w", 0.25)]
    for l in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % l
        specs += [
            (p + "input_layernorm.weight", (H,), "norm", 0.1),
            (p + "self_attn.q_proj.weight", (nh * hd, H), "w", 1.3 / math.sqrt(H)),
            (p + "self_attn.k_proj.weight", (nkv * hd, H), "w", 1.3 / math.sqrt(H)),
            (p + "self_attn.v_proj.weight", (nkv * hd, H), "w", 1.0 / math.sqrt(H)),
        ]
        if has_qkv_bias(cfg):
            specs += [
                (p + "self_attn.q_proj.bias", (nh * hd,), "w", 0.3),
                (p + "self_attn.k_proj.bias", (nkv * hd,), "w", 0.3),
                (p + "self_attn.v_proj.bias", (nkv * hd,), "w", 0.3),
            ]
        specs += [
            (p + "self_attn.o_proj.weight", (H, nh * hd), "w", 1.0 / math.sqrt(nh * hd)),
            (p + "post_attention_layernorm.weight", (H,), "norm", 0.1),
            (p + "mlp.gate_proj.weight", (I, H), "w", 1.0 / math.sqrt(H)),
            (p + "mlp.up_proj.weight", (I, H), "w", 1.0 / math.sqrt(H)),
            (p + "mlp.down_proj.weight", (H, I), "w", 1.0 / math.sqrt(I)),
        ]
    specs.append(("model.norm.weight", (H,), "norm", 0.1))
    if not cfg["tie_word_embeddings"]:
        specs.append(("lm_head.weight", (V, H), "w", 0.25))
    return specs


def bf16_round(a32):
    """float32 array -> (uint16 bf16 bits, float32 values), round to nearest even."""
    bits = np.ascontiguousarray(a32, dtype="<f4").view("<u4").astype(np.uint64)
    rb = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2")
    back = (rb.astype("<u4") << 16).view("<f4")
    return rb, back


def make_weights(model):
    """Returns {name: (float64 torch tensor of the stored values, raw little-endian bytes)}."""
    cfg = model["config"]
    rng = np.random.default_rng(model["seed"])
    out = {}
    for name, shape, kind, std in tensor_specs(cfg):
        z = rng.standard_normal(shape)
        a = (1.0 + std * z) if kind == "norm" else std * z
        a32 = a.astype("<f4")
        st = model["storage"]
        if st == "F32":
            raw, vals = a32.tobytes(), a32.astype(np.float64)
        elif st == "BF16":
            bits, back = bf16_round(a32)
            # cross-check the hand rounding against torch's float32 -> bfloat16 cast
            tb = torch.from_numpy(a32.copy()).to(torch.bfloat16).to(torch.float32).numpy()
            assert np.array_equal(tb, back), name
            raw, vals = bits.tobytes(), back.astype(np.float64)
        elif st == "F16":
            h = a32.astype("<f2")
            assert np.all(np.isfinite(h))
            raw, vals = h.tobytes(), h.astype(np.float64)
        else:
            raise ValueError(st)
        out[name] = (torch.from_numpy(np.ascontiguousarray(vals)), raw)
    return out


# --------------------------------------------------------------------------------------
# safetensors writing (and reading back, to check the writer)
# --------------------------------------------------------------------------------------

def write_safetensors(path, names, weights, dtype):
    header = {"__metadata__": {"format": "pt"}}
    blobs = []
    off = 0
    for n in names:
        t, raw = weights[n]
        header[n] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    hj = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hj += b" " * ((8 - len(hj) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for b in blobs:
            f.write(b)
    return off


def read_safetensors(path):
    npdt = {"F32": "<f4", "F16": "<f2"}
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    assert n % 8 == 0
    header = json.loads(data[8:8 + n].decode("utf-8"))
    body = data[8 + n:]
    out = {}
    end_max = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        end_max = max(end_max, e)
        raw = body[b:e]
        if info["dtype"] == "BF16":
            a = (np.frombuffer(raw, "<u2").astype("<u4") << 16).view("<f4")
        else:
            a = np.frombuffer(raw, npdt[info["dtype"]])
        out[name] = torch.from_numpy(a.astype(np.float64).reshape(info["shape"]))
    assert end_max == len(body), path
    return out


# --------------------------------------------------------------------------------------
# RoPE
# --------------------------------------------------------------------------------------

def inv_freq_default(cfg):
    d = head_dim_of(cfg)
    return 1.0 / (cfg["rope_theta"] ** (torch.arange(0, d, 2, dtype=F64) / d))


def inv_freq_of(cfg, use_scaling=True):
    """HF transformers _compute_default_rope_parameters / _compute_llama3_parameters."""
    inv = inv_freq_default(cfg)
    rs = cfg.get("rope_scaling")
    if not use_scaling or rs is None:
        return inv
    rtype = rs.get("rope_type", rs.get("type"))
    assert rtype == "llama3", rtype
    factor = rs["factor"]
    low = rs["low_freq_factor"]
    high = rs["high_freq_factor"]
    old = rs["original_max_position_embeddings"]
    low_freq_wavelen = old / low
    high_freq_wavelen = old / high
    wavelen = 2 * math.pi / inv
    inv_l = torch.where(wavelen > low_freq_wavelen, inv / factor, inv)
    smooth = (old / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * inv_l / factor + smooth * inv_l
    medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
    return torch.where(medium, smoothed, inv_l)


def inv_freq_scalar(cfg, use_scaling=True):
    """Same thing, written independently with Python scalars (for the cross-check)."""
    d = head_dim_of(cfg)
    rs = cfg.get("rope_scaling") if use_scaling else None
    res = []
    for i in range(d // 2):
        f = 1.0 / (cfg["rope_theta"] ** (2.0 * i / d))
        if rs is not None:
            wl = 2 * math.pi / f
            lo_wl = rs["original_max_position_embeddings"] / rs["low_freq_factor"]
            hi_wl = rs["original_max_position_embeddings"] / rs["high_freq_factor"]
            if wl < hi_wl:
                pass                                  # high frequency: unchanged
            elif wl > lo_wl:
                f = f / rs["factor"]                  # low frequency: interpolated
            else:                                     # medium: blend
                s = (rs["original_max_position_embeddings"] / wl - rs["low_freq_factor"]) / (
                    rs["high_freq_factor"] - rs["low_freq_factor"])
                f = (1 - s) * f / rs["factor"] + s * f
        res.append(f)
    return res


def rope_bands(cfg):
    """Counts of (high, medium, low) frequency pairs under llama3 scaling."""
    rs = cfg["rope_scaling"]
    inv = inv_freq_default(cfg)
    wl = 2 * math.pi / inv
    hi_wl = rs["original_max_position_embeddings"] / rs["high_freq_factor"]
    lo_wl = rs["original_max_position_embeddings"] / rs["low_freq_factor"]
    n_hi = int((wl < hi_wl).sum())
    n_lo = int((wl > lo_wl).sum())
    return n_hi, len(inv) - n_hi - n_lo, n_lo


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


# --------------------------------------------------------------------------------------
# Forward, vectorised (the reference)
# --------------------------------------------------------------------------------------

def rmsnorm(x, w, eps):
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * w


def forward(W, cfg, tokens, use_scaling=True, use_bias=True):
    """float64 logits [T, vocab] for one sequence (HF Llama / Qwen2 semantics)."""
    H = cfg["hidden_size"]
    nh = cfg["num_attention_heads"]
    nkv = cfg["num_key_value_heads"]
    hd = head_dim_of(cfg)
    eps = cfg["rms_norm_eps"]
    T = len(tokens)
    ids = torch.tensor(tokens, dtype=torch.long)

    x = W["model.embed_tokens.weight"][ids]                       # [T, H]
    inv = inv_freq_of(cfg, use_scaling)
    ang = torch.arange(T, dtype=F64)[:, None] * inv[None, :]      # [T, hd/2]
    emb = torch.cat((ang, ang), dim=-1)                           # [T, hd]
    cos, sin = emb.cos(), emb.sin()
    causal = torch.ones(T, T, dtype=torch.bool).tril()

    for l in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % l
        h = rmsnorm(x, W[p + "input_layernorm.weight"], eps)

        def proj(n):
            y = h @ W[p + "self_attn.%s_proj.weight" % n].T
            if use_bias and has_qkv_bias(cfg):
                y = y + W[p + "self_attn.%s_proj.bias" % n]
            return y

        q = proj("q").view(T, nh, hd).transpose(0, 1)             # [nh, T, hd]
        k = proj("k").view(T, nkv, hd).transpose(0, 1)            # [nkv, T, hd]
        v = proj("v").view(T, nkv, hd).transpose(0, 1)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = nh // nkv                                           # HF repeat_kv
        k = k.repeat_interleave(rep, dim=0)
        v = v.repeat_interleave(rep, dim=0)
        s = (q @ k.transpose(1, 2)) / math.sqrt(hd)               # [nh, T, T]
        s = s.masked_fill(~causal, float("-inf"))
        a = torch.softmax(s, dim=-1) @ v                          # [nh, T, hd]
        a = a.transpose(0, 1).reshape(T, nh * hd)
        x = x + a @ W[p + "self_attn.o_proj.weight"].T

        h = rmsnorm(x, W[p + "post_attention_layernorm.weight"], eps)
        g = h @ W[p + "mlp.gate_proj.weight"].T
        u = h @ W[p + "mlp.up_proj.weight"].T
        x = x + (torch.nn.functional.silu(g) * u) @ W[p + "mlp.down_proj.weight"].T

    x = rmsnorm(x, W["model.norm.weight"], eps)
    head = W["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else W["lm_head.weight"]
    return x @ head.T


# --------------------------------------------------------------------------------------
# Forward, explicit loops in numpy (independent cross-check of GQA, RoPE, attention)
# --------------------------------------------------------------------------------------

def forward_loops(W, cfg, tokens, use_scaling=True):
    Wn = {k: v.numpy() for k, v in W.items()}
    nh = cfg["num_attention_heads"]
    nkv = cfg["num_key_value_heads"]
    hd = head_dim_of(cfg)
    half = hd // 2
    eps = cfg["rms_norm_eps"]
    T = len(tokens)
    freqs = inv_freq_scalar(cfg, use_scaling)

    def norm(vec, w):
        ms = sum(float(t) * float(t) for t in vec) / len(vec)
        return vec / math.sqrt(ms + eps) * w

    def rope(vec, pos):  # vec: [hd], pairs (i, i + hd/2)
        out = vec.copy()
        for i in range(half):
            c, s = math.cos(pos * freqs[i]), math.sin(pos * freqs[i])
            a, b = vec[i], vec[i + half]
            out[i] = a * c - b * s
            out[i + half] = b * c + a * s
        return out

    xs = [Wn["model.embed_tokens.weight"][t].copy() for t in tokens]
    for l in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % l
        Q, K, Vv = [], [], []
        for t in range(T):
            h = norm(xs[t], Wn[p + "input_layernorm.weight"])
            q = Wn[p + "self_attn.q_proj.weight"] @ h
            k = Wn[p + "self_attn.k_proj.weight"] @ h
            v = Wn[p + "self_attn.v_proj.weight"] @ h
            if has_qkv_bias(cfg):
                q = q + Wn[p + "self_attn.q_proj.bias"]
                k = k + Wn[p + "self_attn.k_proj.bias"]
                v = v + Wn[p + "self_attn.v_proj.bias"]
            Q.append([rope(q[i * hd:(i + 1) * hd], t) for i in range(nh)])
            K.append([rope(k[j * hd:(j + 1) * hd], t) for j in range(nkv)])
            Vv.append([v[j * hd:(j + 1) * hd] for j in range(nkv)])
        new = []
        for t in range(T):
            heads = []
            for i in range(nh):
                j = i // (nh // nkv)          # the KV head that query head i reads
                sc = [float(np.dot(Q[t][i], K[u][j])) / math.sqrt(hd) for u in range(t + 1)]
                m = max(sc)
                e = [math.exp(s - m) for s in sc]
                z = sum(e)
                o = np.zeros(hd)
                for u in range(t + 1):
                    o += (e[u] / z) * Vv[u][j]
                heads.append(o)
            a = np.concatenate(heads)
            x = xs[t] + Wn[p + "self_attn.o_proj.weight"] @ a
            h = norm(x, Wn[p + "post_attention_layernorm.weight"])
            g = Wn[p + "mlp.gate_proj.weight"] @ h
            u_ = Wn[p + "mlp.up_proj.weight"] @ h
            act = np.array([gg / (1.0 + math.exp(-gg)) for gg in g]) * u_
            new.append(x + Wn[p + "mlp.down_proj.weight"] @ act)
        xs = new
    head = Wn["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else Wn["lm_head.weight"]
    rows = [head @ norm(x, Wn["model.norm.weight"]) for x in xs]
    return torch.from_numpy(np.stack(rows))


# --------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------

def num(x):
    """float64 -> JSON number with 9 significant digits."""
    x = float(x)
    assert math.isfinite(x)
    return float("%.9g" % x)


def dump(obj, indent=0):
    """Small deterministic JSON emitter: dicts indented, number lists on one line."""
    pad = "  " * indent
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = ['%s  %s: %s' % (pad, json.dumps(k), dump(v, indent + 1)) for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list) and obj and isinstance(obj[0], (dict, list)):
        items = ["%s  %s" % (pad, dump(v, indent + 1)) for v in obj]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return json.dumps(obj, separators=(",", ":"))


def make_prompts(model):
    rng = np.random.default_rng(model["seed"] + 7)
    V = model["config"]["vocab_size"]
    return [[1] + [int(t) for t in rng.integers(3, V, size=n)] for n in PROMPT_EXTRA]


def prompt_record(tokens, logits):
    T, V = logits.shape
    lse = torch.logsumexp(logits, dim=-1)
    tgt = [float(logits[t, tokens[t + 1]]) for t in range(T - 1)]
    nll = [float(lse[t]) - tgt[t] for t in range(T - 1)]
    return {
        "tokens": list(tokens),
        "logits_prefix": [[num(v) for v in logits[t, :VOCAB_PREFIX].tolist()] for t in range(T)],
        "logits_last": [num(v) for v in logits[T - 1].tolist()],
        "logsumexp": [num(v) for v in lse.tolist()],
        "argmax": [int(i) for i in logits.argmax(-1).tolist()],
        "target_logit": [num(v) for v in tgt],
        "nll": [num(v) for v in nll],
        "mean_nll": num(sum(nll) / len(nll)),
    }


def write_text(path, text):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def max_abs(a, b):
    return float((a - b).abs().max())


def build(model, outdir, log):
    cfg = model["config"]
    name = model["name"]
    W_all = make_weights(model)
    W = {k: v[0] for k, v in W_all.items()}
    names = sorted(W_all)
    nparams = sum(t.numel() for t in W.values())
    d = os.path.join(outdir, name)
    os.makedirs(d, exist_ok=True)
    cfg_text = json.dumps(cfg, indent=2) + "\n"
    write_text(os.path.join(d, "config.json"), cfg_text)
    st_path = os.path.join(d, "model.safetensors")
    write_safetensors(st_path, names, W_all, model["storage"])

    # the file must decode to exactly the weights the reference uses
    back = read_safetensors(st_path)
    assert sorted(back) == names
    for n in names:
        assert torch.equal(back[n], W[n]), n

    prompts = make_prompts(model)
    logits = [forward(W, cfg, p) for p in prompts]

    # (a) vectorised forward (repeat_interleave GQA, rotate_half RoPE, torch.where llama3)
    #     == explicit per-head / per-position loops with scalar RoPE and scalar llama3 code
    for p, lg in zip(prompts, logits):
        diff = max_abs(lg, forward_loops(W, cfg, p))
        log("  %s T=%d  |vectorised - loops| = %.3g" % (name, len(p), diff))
        assert diff < 1e-10, diff
    for p, lg in zip(prompts, logits):
        log("  %s T=%d  logits std %.3f  max |logit| %.3f" % (name, len(p), float(lg.std()),
                                                               float(lg.abs().max())))

    # (b) llama3 rope scaling must change the logits
    if cfg.get("rope_scaling"):
        n_hi, n_med, n_lo = rope_bands(cfg)
        log("  %s rope pairs: %d high-freq (unchanged), %d medium (smoothed), %d low (/factor)"
            % (name, n_hi, n_med, n_lo))
        assert n_hi > 0 and n_med > 0 and n_lo > 0
        assert max_abs(inv_freq_of(cfg), torch.tensor(inv_freq_scalar(cfg), dtype=F64)) < 1e-15
        for p, lg in zip(prompts, logits):
            un = forward(W, cfg, p, use_scaling=False)
            assert max_abs(un, forward_loops(W, cfg, p, use_scaling=False)) < 1e-10
            diff = max_abs(lg, un)
            log("  %s T=%d  |scaled - unscaled rope| = %.4g" % (name, len(p), diff))
            assert diff > 1e-3, diff

    # (c) the q/k/v bias must change the logits
    if has_qkv_bias(cfg):
        for p, lg in zip(prompts, logits):
            diff = max_abs(lg, forward(W, cfg, p, use_bias=False))
            log("  %s T=%d  |with bias - without bias| = %.4g" % (name, len(p), diff))
            assert diff > 1e-3, diff

    # norm weights must matter too (they are random around 1)
    Wn1 = dict(W)
    for n in names:
        if n.endswith("layernorm.weight") or n == "model.norm.weight":
            Wn1[n] = torch.ones_like(W[n])
    diff = max_abs(logits[1], forward(Wn1, cfg, prompts[1]))
    log("  %s |norm weights - all-ones norms| = %.4g" % (name, diff))
    assert diff > 1e-3

    ref = {
        "model": name,
        "generator": "tests/reference/make_reference.py",
        "weights_dtype": model["storage"],
        "compute_dtype": "float64",
        "num_params": nparams,
        "vocab_size": cfg["vocab_size"],
        "logits_prefix_vocab": VOCAB_PREFIX,
        "prompts": [prompt_record(p, lg) for p, lg in zip(prompts, logits)],
    }
    write_text(os.path.join(d, "reference.json"), dump(ref) + "\n")
    log("  %s: %d params, %s, prompts T=%s, mean_nll %s" % (
        name, nparams, model["storage"], [len(p) for p in prompts],
        [r["mean_nll"] for r in ref["prompts"]]))
    return W_all, names, cfg_text, logits, prompts


def build_sharded(model, W_all, names, cfg_text, logits, prompts, outdir, log):
    """Same weights as gqa_tied, split across two safetensors files with an index."""
    d = os.path.join(outdir, model["name"] + "_sharded")
    os.makedirs(d, exist_ok=True)
    write_text(os.path.join(d, "config.json"), cfg_text)
    total = sum(len(W_all[n][1]) for n in names)
    first, acc = [], 0
    for n in names:                      # greedy in name order: a layer straddles the files
        if acc + len(W_all[n][1]) > total // 2 and first:
            break
        first.append(n)
        acc += len(W_all[n][1])
    second = names[len(first):]
    files = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    wmap = {}
    for fn, part in zip(files, (first, second)):
        write_safetensors(os.path.join(d, fn), part, W_all, model["storage"])
        for n in part:
            wmap[n] = fn
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(wmap.items()))}
    write_text(os.path.join(d, "model.safetensors.index.json"), json.dumps(index, indent=2) + "\n")

    # reading the shards back must give the same weights and the same logits
    W = {}
    for fn in files:
        W.update(read_safetensors(os.path.join(d, fn)))
    assert sorted(W) == names
    for p, lg in zip(prompts, logits):
        assert torch.equal(forward(W, model["config"], p), lg)
    log("  %s_sharded: %d + %d tensors (split inside %s)" % (
        model["name"], len(first), len(second), first[-1].rsplit(".", 2)[0]))


# --------------------------------------------------------------------------------------
# Training references (tests/fixtures/train_*): loss, every gradient, 10 AdamW steps
# --------------------------------------------------------------------------------------
#
# Two small models (F32, so the C engine loads exactly the weights used here) on one fixed
# packed batch: B = 2 rows of T = 16 tokens, each row several documents back to back
# (positions restart at 0, attention never crosses a document), the first targets of each
# document masked as a prompt would be (-100) and the last token of each document without a
# target (-1). The loss is the mean NLL over the target tokens.  AdamW is torch.optim.AdamW
# with one parameter group: weight decay applies to every parameter (norms and biases too).

TRAIN_B, TRAIN_T = 2, 16
TRAIN_DOC_LENGTHS = ((5, 7, 4), (9, 7))   # per row; each row sums to TRAIN_T
TRAIN_ADAMW = {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.1}
TRAIN_STEPS = 10

TRAIN_MODELS = [
    {
        # Llama 3.2-like: GQA, tied head, explicit head_dim (4 * 16 != 32), llama3 scaling
        # (head_dim 16, theta 1e4, original_max 64: 1 high-, 2 medium-, 5 low-freq pairs)
        "name": "train_llama3_tied",
        "seed": 4004,
        "storage": "F32",
        "config": {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": 32,
            "intermediate_size": 40,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "vocab_size": 64,
            "max_position_embeddings": 256,
            "rms_norm_eps": 1e-05,
            "rope_theta": 10000.0,
            "rope_scaling": {
                "factor": 8.0,
                "high_freq_factor": 4.0,
                "low_freq_factor": 1.0,
                "original_max_position_embeddings": 64,
                "rope_type": "llama3",
            },
            "tie_word_embeddings": True,
            "attention_bias": False,
            "mlp_bias": False,
            "hidden_act": "silu",
            "initializer_range": 0.02,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "torch_dtype": "float32",
        },
    },
    {
        # Qwen2-like: q/k/v biases, untied head, GQA 4/2 (head_dim 8)
        "name": "train_qwen2_untied",
        "seed": 5005,
        "storage": "F32",
        "config": {
            "architectures": ["Qwen2ForCausalLM"],
            "model_type": "qwen2",
            "hidden_size": 32,
            "intermediate_size": 40,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "vocab_size": 64,
            "max_position_embeddings": 32768,
            "rms_norm_eps": 1e-06,
            "rope_theta": 1000000.0,
            "rope_scaling": None,
            "tie_word_embeddings": False,
            "use_sliding_window": False,
            "sliding_window": 32768,
            "max_window_layers": 2,
            "hidden_act": "silu",
            "initializer_range": 0.02,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "torch_dtype": "float32",
        },
    },
]


def make_train_batch(model):
    """Packed batch: inputs, targets, positions, document ids, each [B][T] lists."""
    rng = np.random.default_rng(model["seed"] + 11)
    V = model["config"]["vocab_size"]
    rows = {"inputs": [], "targets": [], "positions": [], "doc": []}
    for r, lengths in enumerate(TRAIN_DOC_LENGTHS):
        assert sum(lengths) == TRAIN_T
        inp, tgt, pos, doc = [], [], [], []
        for d, n in enumerate(lengths):
            toks = [1] + [int(t) for t in rng.integers(3, V, size=n - 2)] + [2]   # BOS .. EOS
            prompt = 2 if n >= 6 else 1                  # targets of the "prompt" are masked
            for i in range(n):
                inp.append(toks[i])
                if i + 1 == n:
                    tgt.append(-1)                      # nothing follows inside the document
                elif i < prompt:
                    tgt.append(-100)
                else:
                    tgt.append(toks[i + 1])
                pos.append(i)
                doc.append(10 * r + d)
        for k, v in zip(("inputs", "targets", "positions", "doc"), (inp, tgt, pos, doc)):
            rows[k].append(v)
    return rows


def forward_batch(W, cfg, batch, use_scaling=True, lora=None):
    """float64 logits [B, T, vocab] of a packed batch: per-token positions for RoPE and a
    causal mask restricted to each token's own document.  lora: optional
    {(layer, "q_proj"|...|"down_proj"): (A [r, in], B [out, r], scale)}; each adapted linear
    layer then computes x @ W^T + scale * (x @ A^T) @ B^T, as PEFT's LoRA Linear does in
    eval mode (dropout off)."""
    nh = cfg["num_attention_heads"]
    nkv = cfg["num_key_value_heads"]
    hd = head_dim_of(cfg)
    eps = cfg["rms_norm_eps"]
    ids = torch.tensor(batch["inputs"], dtype=torch.long)
    B, T = ids.shape
    pos = torch.tensor(batch["positions"], dtype=F64)
    doc = torch.tensor(batch["doc"], dtype=torch.long)
    mask = torch.ones(T, T, dtype=torch.bool).tril()[None] & (doc[:, :, None] == doc[:, None, :])
    ang = pos[:, :, None] * inv_freq_of(cfg, use_scaling)[None, None, :]   # [B, T, hd/2]
    emb = torch.cat((ang, ang), dim=-1)[:, None]                            # [B, 1, T, hd]
    cos, sin = emb.cos(), emb.sin()

    x = W["model.embed_tokens.weight"][ids]                                 # [B, T, H]
    for l in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % l
        h = rmsnorm(x, W[p + "input_layernorm.weight"], eps)

        def lin(inp, module, parent):
            y = inp @ W[p + "%s.%s.weight" % (parent, module)].T
            if lora is not None and (l, module) in lora:
                A, Bm, scale = lora[(l, module)]
                y = y + scale * ((inp @ A.T) @ Bm.T)
            return y

        def proj(n, heads):
            y = lin(h, "%s_proj" % n, "self_attn")
            if has_qkv_bias(cfg):
                y = y + W[p + "self_attn.%s_proj.bias" % n]
            return y.view(B, T, heads, hd).transpose(1, 2)                 # [B, heads, T, hd]

        q, k, v = proj("q", nh), proj("k", nkv), proj("v", nkv)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(nh // nkv, dim=1)
        v = v.repeat_interleave(nh // nkv, dim=1)
        sc = (q @ k.transpose(2, 3)) / math.sqrt(hd)
        sc = sc.masked_fill(~mask[:, None], float("-inf"))
        a = (torch.softmax(sc, dim=-1) @ v).transpose(1, 2).reshape(B, T, nh * hd)
        x = x + lin(a, "o_proj", "self_attn")
        h = rmsnorm(x, W[p + "post_attention_layernorm.weight"], eps)
        g = lin(h, "gate_proj", "mlp")
        u = lin(h, "up_proj", "mlp")
        x = x + lin(torch.nn.functional.silu(g) * u, "down_proj", "mlp")
    x = rmsnorm(x, W["model.norm.weight"], eps)
    head = W["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else W["lm_head.weight"]
    return x @ head.T


def train_loss(W, cfg, batch, use_scaling=True, lora=None):
    """(mean NLL over targets >= 0, NLL sum, target count)."""
    logits = forward_batch(W, cfg, batch, use_scaling, lora)
    tgt = torch.tensor(batch["targets"], dtype=torch.long)
    keep = tgt >= 0
    logp = torch.log_softmax(logits, dim=-1)
    nll = -logp[keep].gather(1, tgt[keep][:, None]).squeeze(1)
    return nll.sum() / keep.sum(), nll.sum(), int(keep.sum())


def build_train(model, outdir, log):
    cfg = model["config"]
    name = model["name"]
    W_all = make_weights(model)
    names = sorted(W_all)
    order = [n for n, _, _, _ in tensor_specs(cfg)]          # model order for the JSON
    d = os.path.join(outdir, name)
    os.makedirs(d, exist_ok=True)
    write_text(os.path.join(d, "config.json"), json.dumps(cfg, indent=2) + "\n")
    st_path = os.path.join(d, "model.safetensors")
    write_safetensors(st_path, names, W_all, model["storage"])
    back = read_safetensors(st_path)
    for n in names:
        assert torch.equal(back[n], W_all[n][0]), n
    batch = make_train_batch(model)

    def fresh():
        return {n: W_all[n][0].clone().requires_grad_(True) for n in names}

    # (a) the packed batch equals each document run alone through the reference forward
    W = fresh()
    with torch.no_grad():
        lg = forward_batch(W, cfg, batch)
        worst = 0.0
        for r in range(TRAIN_B):
            start = 0
            for n in TRAIN_DOC_LENGTHS[r]:
                alone = forward(W, cfg, batch["inputs"][r][start:start + n])
                worst = max(worst, max_abs(lg[r, start:start + n], alone))
                start += n
    log("  %s |packed batch - documents alone| = %.3g" % (name, worst))
    assert worst < 1e-10, worst

    # (b) loss and every gradient
    loss, nll_sum, count = train_loss(W, cfg, batch)
    loss.backward()
    grads = {n: W[n].grad.detach().clone() for n in names}

    # (c) autograd against central differences on a few parameters of every tensor
    frng = np.random.default_rng(model["seed"] + 13)
    worst = 0.0
    with torch.no_grad():
        for n in names:
            flat = W[n].view(-1)
            gmax = float(grads[n].abs().max())
            for j in frng.integers(0, flat.numel(), size=3):
                keep = float(flat[j])
                flat[j] = keep + 1e-6
                up = float(train_loss(W, cfg, batch)[0])
                flat[j] = keep - 1e-6
                down = float(train_loss(W, cfg, batch)[0])
                flat[j] = keep
                worst = max(worst, abs((up - down) / 2e-6 - float(grads[n].view(-1)[j])) / gmax)
    log("  %s autograd vs finite differences: max rel err %.3g" % (name, worst))
    assert worst < 1e-6, worst

    # (d) llama3 scaling must move the loss even at positions < 16
    if cfg.get("rope_scaling"):
        n_hi, n_med, n_lo = rope_bands(cfg)
        assert n_hi > 0 and n_med > 0 and n_lo > 0
        with torch.no_grad():
            diff = abs(float(loss) - float(train_loss(W, cfg, batch, use_scaling=False)[0]))
        log("  %s rope pairs %d/%d/%d, |loss scaled - unscaled| = %.3g" % (name, n_hi, n_med, n_lo, diff))
        assert diff > 1e-6, diff

    # (e) AdamW: losses[i] is the loss before update i; loss_after follows the last update
    W = fresh()
    opt = torch.optim.AdamW([W[n] for n in names], lr=TRAIN_ADAMW["lr"],
                            betas=tuple(TRAIN_ADAMW["betas"]), eps=TRAIN_ADAMW["eps"],
                            weight_decay=TRAIN_ADAMW["weight_decay"])
    losses = []
    for _ in range(TRAIN_STEPS):
        opt.zero_grad()
        l = train_loss(W, cfg, batch)[0]
        losses.append(float(l))
        l.backward()
        opt.step()
    with torch.no_grad():
        after = float(train_loss(W, cfg, batch)[0])
    assert after < losses[0]

    ref = {
        "model": name,
        "generator": "tests/reference/make_reference.py",
        "weights_dtype": model["storage"],
        "compute_dtype": "float64",
        "num_params": sum(W_all[n][0].numel() for n in names),
        "batch": {"B": TRAIN_B, "T": TRAIN_T, "inputs": batch["inputs"],
                  "targets": batch["targets"], "positions": batch["positions"],
                  "doc": batch["doc"]},
        "n_targets": count,
        "nll_sum": num(nll_sum),
        "loss": num(loss),
        "grads": {n: [num(v) for v in grads[n].reshape(-1).tolist()] for n in order},
        "adamw": dict(TRAIN_ADAMW, steps=TRAIN_STEPS, weight_decay_applies_to="all parameters"),
        "adamw_losses": [num(v) for v in losses],
        "loss_after_adamw": num(after),
    }
    write_text(os.path.join(d, "reference.json"), dump(ref) + "\n")
    log("  %s: %d params, %d targets, loss %.6f, after %d AdamW steps %.6f" % (
        name, ref["num_params"], count, float(loss), TRAIN_STEPS, after))


# --------------------------------------------------------------------------------------
# LoRA references: PEFT adapter directories "written by another tool"
# --------------------------------------------------------------------------------------
#
# Each adapter is for the train_llama3_tied base and is written exactly as Hugging Face
# PEFT's save_pretrained writes a LoRA adapter: adapter_config.json with PEFT's keys and
# adapter_model.safetensors with tensors named
# base_model.model.model.layers.N.<self_attn|mlp>.<module>.lora_<A|B>.weight, A [r, in] and
# B [out, r], rows in Hugging Face's rotate-half RoPE order.  B is random (not PEFT's zero
# init) so that the gradients of A and the adapter's effect on the logits are not zero.

LORA_PARENT = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn",
               "o_proj": "self_attn", "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}

LORA_ADAPTERS = [
    {"name": "lora_peft_all", "seed": 6006, "r": 4, "lora_alpha": 8, "use_rslora": False,
     "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
     "layers_to_transform": None},
    {"name": "lora_peft_qv_layer1", "seed": 7007, "r": 2, "lora_alpha": 3, "use_rslora": True,
     "target_modules": ["v_proj", "q_proj"], "layers_to_transform": [1]},
]


def lora_site_shape(cfg, module):
    H, I = cfg["hidden_size"], cfg["intermediate_size"]
    qd = cfg["num_attention_heads"] * head_dim_of(cfg)
    kvd = cfg["num_key_value_heads"] * head_dim_of(cfg)
    return {"q_proj": (H, qd), "k_proj": (H, kvd), "v_proj": (H, kvd), "o_proj": (qd, H),
            "gate_proj": (H, I), "up_proj": (H, I), "down_proj": (I, H)}[module]


def peft_config(spec):
    """adapter_config.json as PEFT (0.12-0.13) writes it, keys sorted."""
    return {
        "alpha_pattern": {}, "auto_mapping": None, "base_model_name_or_path": "train_llama3_tied",
        "bias": "none", "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True,
        "layer_replication": None, "layers_pattern": None,
        "layers_to_transform": spec["layers_to_transform"], "loftq_config": {},
        "lora_alpha": spec["lora_alpha"], "lora_dropout": 0.05, "megatron_config": None,
        "megatron_core": "megatron.core", "modules_to_save": None, "peft_type": "LORA",
        "r": spec["r"], "rank_pattern": {}, "revision": None,
        "target_modules": spec["target_modules"], "task_type": "CAUSAL_LM", "use_dora": False,
        "use_rslora": spec["use_rslora"],
    }


def build_lora(spec, base, outdir, log):
    cfg = base["config"]
    W_all = make_weights(base)
    W = {n: W_all[n][0] for n in W_all}
    rng = np.random.default_rng(spec["seed"])
    r = spec["r"]
    scale = spec["lora_alpha"] / (math.sqrt(r) if spec["use_rslora"] else r)
    layers = spec["layers_to_transform"] or list(range(cfg["num_hidden_layers"]))
    tensors, lora = {}, {}
    for l in layers:
        for module in sorted(spec["target_modules"]):
            fan_in, fan_out = lora_site_shape(cfg, module)
            prefix = "base_model.model.model.layers.%d.%s.%s." % (l, LORA_PARENT[module], module)
            a = (rng.uniform(-1, 1, (r, fan_in)) / math.sqrt(fan_in)).astype("<f4")
            b = (0.5 * rng.standard_normal((fan_out, r)) / math.sqrt(r)).astype("<f4")
            for key, arr in (("lora_A", a), ("lora_B", b)):
                tensors[prefix + key + ".weight"] = (torch.from_numpy(arr.astype(np.float64)), arr.tobytes())
            lora[(l, module)] = (tensors[prefix + "lora_A.weight"][0].clone(),
                                 tensors[prefix + "lora_B.weight"][0].clone(), scale)
    d = os.path.join(outdir, spec["name"])
    os.makedirs(d, exist_ok=True)
    write_text(os.path.join(d, "adapter_config.json"), json.dumps(peft_config(spec), indent=2, sort_keys=True) + "\n")
    names = sorted(tensors)
    st_path = os.path.join(d, "adapter_model.safetensors")
    write_safetensors(st_path, names, tensors, "F32")
    back = read_safetensors(st_path)
    for n in names:
        assert torch.equal(back[n], tensors[n][0]), n
    batch = make_train_batch(base)

    # (a) merged weights W + scale * B @ A give the same logits (what a merge must preserve)
    with torch.no_grad():
        logits = forward_batch(W, cfg, batch, lora=lora)
        Wm = dict(W)
        for (l, module), (A, Bm, sc) in lora.items():
            key = "model.layers.%d.%s.%s.weight" % (l, LORA_PARENT[module], module)
            Wm[key] = W[key] + sc * (Bm @ A)
        merged = forward_batch(Wm, cfg, batch)
        base_logits = forward_batch(W, cfg, batch)
    log("  %s |unmerged - merged| = %.3g, |adapter - base| = %.3g" % (
        spec["name"], max_abs(logits, merged), max_abs(logits, base_logits)))
    assert max_abs(logits, merged) < 1e-10
    assert max_abs(logits, base_logits) > 0.1

    # (b) loss and the gradient of every A and B (base frozen: no base gradients)
    params = {}
    for key, (A, Bm, sc) in lora.items():
        params[key] = (A.clone().requires_grad_(True), Bm.clone().requires_grad_(True), sc)
    loss, nll_sum, count = train_loss(W, cfg, batch, lora=params)
    loss.backward()
    grads = {}
    for (l, module), (A, Bm, _) in params.items():
        prefix = "base_model.model.model.layers.%d.%s.%s." % (l, LORA_PARENT[module], module)
        grads[prefix + "lora_A.weight"] = A.grad.detach().clone()
        grads[prefix + "lora_B.weight"] = Bm.grad.detach().clone()

    # (c) autograd against central differences on a few elements of every A and B
    frng = np.random.default_rng(spec["seed"] + 1)
    worst = 0.0
    with torch.no_grad():
        for (l, module), (A, Bm, _) in params.items():
            for which, t in (("lora_A", A), ("lora_B", Bm)):
                g = grads["base_model.model.model.layers.%d.%s.%s.%s.weight" % (l, LORA_PARENT[module], module, which)]
                flat = t.view(-1)
                for j in frng.integers(0, flat.numel(), size=3):
                    keep = float(flat[j])
                    flat[j] = keep + 1e-6
                    up = float(train_loss(W, cfg, batch, lora=params)[0])
                    flat[j] = keep - 1e-6
                    down = float(train_loss(W, cfg, batch, lora=params)[0])
                    flat[j] = keep
                    worst = max(worst, abs((up - down) / 2e-6 - float(g.view(-1)[j])) / float(g.abs().max()))
    log("  %s adapter autograd vs finite differences: max rel err %.3g" % (spec["name"], worst))
    assert worst < 1e-6, worst

    ref = {
        "adapter": spec["name"],
        "base_model": base["name"],
        "generator": "tests/reference/make_reference.py",
        "compute_dtype": "float64",
        "scale": num(scale),
        "batch": {"B": TRAIN_B, "T": TRAIN_T, "inputs": batch["inputs"],
                  "targets": batch["targets"], "positions": batch["positions"],
                  "doc": batch["doc"]},
        "n_targets": count,
        "loss": num(loss),
        "logits": [[[num(v) for v in row] for row in seq] for seq in logits.tolist()],
        "grads": {n: [num(v) for v in grads[n].reshape(-1).tolist()] for n in names},
    }
    write_text(os.path.join(d, "reference.json"), dump(ref) + "\n")
    log("  %s: r=%d scale %.4f, %d tensors, loss %.6f" % (spec["name"], r, scale, len(names), float(loss)))


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(here, "..", "fixtures"),
                    help="output folder (default: tests/fixtures next to this script)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    outdir = os.path.normpath(args.out)
    log = (lambda s: None) if args.quiet else (lambda s: print(s, flush=True))
    log("torch %s, numpy %s -> %s" % (torch.__version__, np.__version__, outdir))
    for m in MODELS:
        log("model %s" % m["name"])
        res = build(m, outdir, log)
        if m["name"] == "gqa_tied":
            build_sharded(m, *res, outdir, log)
    for m in TRAIN_MODELS:
        log("training model %s" % m["name"])
        build_train(m, outdir, log)
    for spec in LORA_ADAPTERS:
        log("LoRA adapter %s" % spec["name"])
        build_lora(spec, TRAIN_MODELS[0], outdir, log)
    total = 0
    for root, _, fs in os.walk(outdir):
        for f in fs:
            total += os.path.getsize(os.path.join(root, f))
    log("total fixture bytes: %d" % total)
    return 0


if __name__ == "__main__":
    sys.exit(main())
