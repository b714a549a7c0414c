#!/usr/bin/env python3
"""PyTorch + transformers peer of the bench (bench/peers/torch.ts runs it).

Reads one JSON job on stdin, prints one JSON result line on stdout; progress goes to
stderr. The job (all from the TS side):

    {"hfDir": str, "threads": int, "promptIds": [int], "decodeTokens": int,
     "logitsOut": str | null,          # where to write the prompt's last-token logits (f32 LE)
     "runs": 3,                        # timed runs per phase, after one warm-up
     "skipInference": false,           # only the router step (parity checks)
     "step": null | {"layers": [int], "batch": int, "seqLen": int,
                     "routersFile": str, "batchIds": [[int]],
                     "threshold": 0.5, "lambda": 1.0, "targetSkip": 0.25, "lr": 1e-3,
                     "weightDecay": 0.0, "maxGradNorm": 1.0,
                     "returnGrads": false}}      # the warm-up step's router gradients, for parity checks

What is measured (fp32, eval mode, attn_implementation='sdpa', torch.set_num_threads):
  prefill  one forward over the prompt with the KV cache on, logits of the last token only
           (logits_to_keep=1); tokens/s = prompt length / time; median of 3 after a warm-up.
  decode   after a prefill, `decodeTokens` greedy steps one token at a time with the cache;
           tokens/s = steps / time of the steps; median of 3 after a warm-up.
  step     one Router-Tuning step on the frozen model, the same math as lib/train/backprop.ts
           (token-level MindSkip attention routers, 'mod' attention semantics):
             h = input_layernorm(x);  s = σ(w·h);  g = 1[s ≥ τ] (forward), ∂g/∂s = 1 (STE)
             attention: a skipped token's key/value is hidden from the other tokens; the
               skipped token's own row attends to every key up to itself (ours: keep-kv row, so its STE
               signal is defined); one boolean SDPA mask does both
             x1 = x + g · o_proj(attn)
             loss = mean next-token CE + λ · max(0, ḡ − (1 − targetSkip)), ḡ over all routed
               layers and tokens (the 'global' capacity term, tune()'s default)
           AdamW on the router weights only (every model parameter has requires_grad False),
           gradient clipping at maxGradNorm; time of forward + backward + clip + optimizer
           step; median of 3 after a warm-up.
"""
import inspect
import json
import statistics
import sys
import time
import traceback


def log(msg):
    print(f"pytorch peer: {msg}", file=sys.stderr, flush=True)


RUNS = 3  # timed runs per phase (job "runs"), after one warm-up


def median_of_runs(run, n=None):
    """Median of n (default RUNS) timed runs after one warm-up (run() returns seconds)."""
    n = RUNS if n is None else n
    run()
    times = [run() for _ in range(n)]
    return statistics.median(times), times


def load_model(hf_dir, torch, transformers):
    from transformers import AutoModelForCausalLM

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    # transformers >= 4.56 names the dtype argument `dtype`; older ones `torch_dtype`
    dtype_kw = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
    model = AutoModelForCausalLM.from_pretrained(hf_dir, **{dtype_kw: torch.float32}, attn_implementation="sdpa")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def logits_kw(model):
    """The forward argument that computes logits for the last rows only, as this version names it."""
    params = inspect.signature(model.forward).parameters
    if "logits_to_keep" in params:
        return "logits_to_keep"
    if "num_logits_to_keep" in params:
        return "num_logits_to_keep"
    return None


def measure_prefill(model, torch, prompt, keep_kw, logits_out):
    kw = {keep_kw: 1} if keep_kw else {}

    def once():
        t0 = time.perf_counter()
        out = model(input_ids=prompt, use_cache=True, **kw)
        last = out.logits[:, -1]
        dt = time.perf_counter() - t0
        return dt, last

    with torch.inference_mode():
        _, last = once()  # also the warm-up
        if logits_out:
            last[0].float().contiguous().numpy().astype("<f4").tofile(logits_out)
        times = [once()[0] for _ in range(RUNS)]
    return statistics.median(times), times


def measure_decode(model, torch, prompt, steps, keep_kw):
    kw = {keep_kw: 1} if keep_kw else {}

    def once():
        out = model(input_ids=prompt, use_cache=True, **kw)
        cache = out.past_key_values
        tok = out.logits[:, -1].argmax(-1, keepdim=True)
        t0 = time.perf_counter()
        for _ in range(steps):
            out = model(input_ids=tok, past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            tok = out.logits[:, -1].argmax(-1, keepdim=True)
        return time.perf_counter() - t0

    with torch.inference_mode():
        return median_of_runs(once)


class RoutedAttention:
    """Forward hooks that turn a decoder layer's self_attn into a MindSkip token-routed one.

    The decoder layer (transformers' LlamaDecoderLayer) calls
    self_attn(hidden_states=input_layernorm(x), attention_mask=…, …) and adds the output to
    the residual. The pre-hook scores the normed tokens, keeps the STE gate, and replaces the
    attention mask; the post-hook multiplies the attention output (after o_proj) by the gate.
    """

    def __init__(self, torch, attn, weight, tau):
        self.torch = torch
        self.w = weight
        self.tau = tau
        self.gate = None  # [B, T] STE gate of the last forward (value: hard 0/1)
        self.hard = None
        self.handles = [
            attn.register_forward_pre_hook(self.pre, with_kwargs=True),
            attn.register_forward_hook(self.post, with_kwargs=True),
        ]

    def pre(self, module, args, kwargs):
        torch = self.torch
        h = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]  # [B, T, C]
        s = torch.sigmoid(h @ self.w)  # [B, T]
        hard = (s >= self.tau).to(s.dtype)
        # value exactly the hard gate, gradient ds (straight-through): g = hard + (s − sg(s))
        self.gate = hard + (s - s.detach())
        self.hard = hard
        keep = hard.bool()
        T = h.shape[1]
        causal = torch.ones(T, T, dtype=torch.bool, device=h.device).tril()
        # query i sees key j ≤ i iff token j executes (mod), or i itself is skipped (its row
        # is the keep-kv one, as in ours: a skipped row only feeds the STE signal, × g = 0)
        allowed = causal[None] & (keep[:, None, :] | ~keep[:, :, None])  # [B, Tq, Tk]
        kwargs = dict(kwargs)
        kwargs["attention_mask"] = allowed[:, None]  # [B, 1, Tq, Tk], True = attend
        return args, kwargs

    def post(self, module, args, kwargs, output):
        out = output[0] * self.gate[..., None]
        return (out, *output[1:])

    def remove(self):
        for hd in self.handles:
            hd.remove()


def measure_router_step(model, torch, step):
    from safetensors.torch import load_file

    layers = [int(l) for l in step["layers"]]
    B, T = int(step["batch"]), int(step["seqLen"])
    ids = torch.tensor(step["batchIds"], dtype=torch.long)
    if tuple(ids.shape) != (B, T):
        raise ValueError(f"batchIds: expected [{B}, {T}], received {list(ids.shape)}")
    tau = float(step.get("threshold", 0.5))
    lam = float(step.get("lambda", 1.0))
    cap = 1.0 - float(step.get("targetSkip", 0.25))
    init = load_file(step["routersFile"])
    C = model.config.hidden_size
    weights, routed = [], []
    decoder = model.model.layers
    for l in layers:
        name = f"router.{l}"
        if name not in init:
            raise ValueError(f"{step['routersFile']}: no tensor {name}")
        w = torch.nn.Parameter(init[name].to(torch.float32).reshape(C).clone())
        weights.append(w)
        routed.append(RoutedAttention(torch, decoder[l].self_attn, w, tau))
    opt = torch.optim.AdamW(weights, lr=float(step.get("lr", 1e-3)), betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=float(step.get("weightDecay", 0.0)))
    max_norm = float(step.get("maxGradNorm", 1.0))
    V = model.config.vocab_size
    info = {}

    def once():
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        logits = model(input_ids=ids, use_cache=False).logits  # [B, T, V]
        ce = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1))
        gbar = torch.cat([r.gate.reshape(-1) for r in routed]).mean()
        reg = lam * torch.clamp(gbar - cap, min=0.0)
        loss = ce + reg
        loss.backward()
        if "first" not in info:
            # the warm-up step, from the initial routers: what a parity check compares
            info["first"] = {"loss": loss.item(), "ce": ce.item(), "reg": float(reg.detach()),
                             "gradNorms": [float(w.grad.norm()) for w in weights]}
            if step.get("returnGrads"):
                info["first"]["grads"] = [w.grad.tolist() for w in weights]
        torch.nn.utils.clip_grad_norm_(weights, max_norm)
        opt.step()
        dt = time.perf_counter() - t0
        info.update(loss=loss.item(), ce=ce.item(), executedFraction=float(torch.cat([r.hard.reshape(-1) for r in routed]).mean()))
        info.setdefault("first", {}).setdefault("executedFraction", info["executedFraction"])
        return dt

    try:
        with torch.enable_grad():
            med, times = median_of_runs(once)
    finally:
        for r in routed:
            r.remove()
    return med, times, info


def main():
    global RUNS
    job = json.load(sys.stdin)
    RUNS = max(1, int(job.get("runs", 3)))
    result = {"ok": True, "errors": []}
    t_import = time.perf_counter()
    import torch
    import transformers

    threads = int(job.get("threads", 2))
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already set (interop pool started)
    result["torch"] = torch.__version__
    result["transformers"] = transformers.__version__
    result["threads"] = torch.get_num_threads()
    result["importSeconds"] = time.perf_counter() - t_import
    log(f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} threads")

    t0 = time.perf_counter()
    model = load_model(job["hfDir"], torch, transformers)
    result["loadSeconds"] = time.perf_counter() - t0
    keep_kw = logits_kw(model)
    result["logitsKeyword"] = keep_kw
    result["attnImplementation"] = getattr(model.config, "_attn_implementation", None)
    log(f"model loaded in {result['loadSeconds']:.1f} s ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters)")

    def phase(name, fn):
        """Runs one measurement; a failure is reported and the other phases still run."""
        try:
            fn()
        except Exception as e:  # noqa: BLE001
            result["errors"].append(f"{name}: {e!r}")
            traceback.print_exc(file=sys.stderr)

    prompt = torch.tensor([job["promptIds"]], dtype=torch.long)
    steps = int(job.get("decodeTokens", 32))

    def prefill():
        med, times = measure_prefill(model, torch, prompt, keep_kw, job.get("logitsOut"))
        result["prefillTokensPerSecond"] = prompt.shape[1] / med
        result["prefillSeconds"] = times
        log(f"prefill-{prompt.shape[1]}: {result['prefillTokensPerSecond']:.0f} tok/s")

    def decode():
        med, times = measure_decode(model, torch, prompt, steps, keep_kw)
        result["decodeTokensPerSecond"] = steps / med
        result["decodeSeconds"] = times
        log(f"decode ({steps} steps after {prompt.shape[1]}): {result['decodeTokensPerSecond']:.1f} tok/s")

    def router_step():
        log(f"router-tuning step (warm-up + {RUNS}) …")
        med, times, info = measure_router_step(model, torch, job["step"])
        result["routerStepSeconds"] = med
        result["routerStepRuns"] = times
        result["routerStepInfo"] = info
        log(f"router step: {med:.2f} s (loss {info['loss']:.3f}, executed {info['executedFraction']:.3f})")

    if not job.get("skipInference"):
        phase("prefill", prefill)
        phase("decode", decode)
    if job.get("step"):
        phase("router step", router_step)

    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - one JSON line even on failure
        traceback.print_exc(file=sys.stderr)
        print(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}), flush=True)
        sys.exit(1)
