#!/usr/bin/env python3
"""Golden fixtures: tiny random checkpoints of every supported family, saved by
Hugging Face transformers, with their reference logits.

Run from the repo root (torch + transformers from pip's local index, see README):
    python3 scripts/golden/make_fixtures.py [--out test/fixtures/models]

Writes, per family, a folder with config.json, model.safetensors, tokenizer.json,
tokenizer_config.json and golden.json (prompts, logits as base64 little-endian float32,
the transformers/torch versions). Deterministic: fixed seeds.
"""
import argparse
import base64
import json
import os
import shutil

import numpy as np
import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers

VOCAB = 300
COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    rms_norm_eps=1e-6,
    rope_theta=10000.0,
    bos_token_id=1,
    eos_token_id=2,
    tie_word_embeddings=False,
)

FAMILIES = {
    "llama": dict(cls="LlamaForCausalLM", cfg="LlamaConfig", extra=dict(
        rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                          original_max_position_embeddings=64),
        tie_word_embeddings=True)),
    "mistral": dict(cls="MistralForCausalLM", cfg="MistralConfig", extra=dict(sliding_window=8, head_dim=16),
                    legacy_keys=True),
    "qwen2": dict(cls="Qwen2ForCausalLM", cfg="Qwen2Config", extra=dict()),
    "qwen3": dict(cls="Qwen3ForCausalLM", cfg="Qwen3Config", extra=dict(head_dim=24)),
    "mixtral": dict(cls="MixtralForCausalLM", cfg="MixtralConfig", extra=dict(
        num_local_experts=4, num_experts_per_tok=2)),
    "olmoe": dict(cls="OlmoeForCausalLM", cfg="OlmoeConfig", extra=dict(
        num_experts=4, num_experts_per_tok=2, norm_topk_prob=False, clip_qkv=1.5)),
    "qwen2_moe": dict(cls="Qwen2MoeForCausalLM", cfg="Qwen2MoeConfig", extra=dict(
        num_experts=4, num_experts_per_tok=2, moe_intermediate_size=48, shared_expert_intermediate_size=80,
        norm_topk_prob=False, decoder_sparse_step=1, mlp_only_layers=[])),
    "qwen3_moe": dict(cls="Qwen3MoeForCausalLM", cfg="Qwen3MoeConfig", extra=dict(
        num_experts=4, num_experts_per_tok=2, moe_intermediate_size=48, norm_topk_prob=True,
        decoder_sparse_step=1, mlp_only_layers=[], head_dim=16), fused_copy=True),
}

PROMPTS = [
    [1, 17, 42, 99, 7],
    [1, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 150, 3, 4, 77, 21, 33],  # longer than the sliding window
    [1, 299],
]

CORPUS = ("the quick brown fox jumps over the lazy dog. a router decides which layers run. "
          "call me ishmael. some years ago, never mind how long precisely. ") * 20


def make_tokenizer(path):
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([CORPUS], trainer)
    tok.save(os.path.join(path, "tokenizer.json"))
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>",
                   "tokenizer_class": "PreTrainedTokenizerFast",
                   "chat_template": "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                                    "{% if add_generation_prompt %}<s>assistant: {% endif %}"}, f, indent=1)


def b64(arr):
    return base64.b64encode(np.ascontiguousarray(arr, dtype="<f4").tobytes()).decode()


def make_family(name, spec, out_root, dtype):
    torch.manual_seed(1234)
    cfg_cls = getattr(transformers, spec["cfg"])
    model_cls = getattr(transformers, spec["cls"])
    kwargs = dict(COMMON)
    kwargs.update(spec["extra"])
    config = cfg_cls(**kwargs)
    config._attn_implementation = "eager"
    model = model_cls(config).eval()
    # Random init is tiny by default (std 0.02): widen it so the logits have structure.
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif p.dim() >= 2:
                p.copy_(torch.randn_like(p) * (1.0 / p.shape[-1] ** 0.5))
            else:
                p.copy_(0.1 * torch.randn_like(p))
    tag = name if dtype == "float32" else f"{name}-bf16"
    path = os.path.join(out_root, tag)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    if dtype == "bfloat16":
        model = model.to(torch.bfloat16)
    model.save_pretrained(path, safe_serialization=True)
    make_tokenizer(path)
    if spec.get("legacy_keys"):
        # transformers 4.x wrote rope_theta / rope_scaling at the top level: most published
        # checkpoints carry those keys, so one fixture uses them.
        cfg_path = os.path.join(path, "config.json")
        with open(cfg_path) as f:
            cfg = json.load(f)
        rope = cfg.pop("rope_parameters")
        cfg["rope_theta"] = rope.pop("rope_theta")
        if rope.get("rope_type", "default") != "default":
            cfg["rope_scaling"] = rope
        with open(cfg_path, "w") as f:
            json.dump(cfg, f, indent=2)
    if spec.get("fused_copy"):
        # transformers 5.x holds experts fused in memory (experts.gate_up_proj [E, 2I, C],
        # experts.down_proj [E, C, I]); checkpoints saved without the per-expert conversion
        # carry that layout. A second folder stores the same model that way.
        fused = path + "-fused"
        shutil.rmtree(fused, ignore_errors=True)
        shutil.copytree(path, fused)
        os.remove(os.path.join(fused, "model.safetensors"))
        from safetensors.torch import save_file
        sd = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight" or not config.tie_word_embeddings}
        assert any("gate_up_proj" in k for k in sd), "expected fused expert weights in memory"
        save_file(sd, os.path.join(fused, "model.safetensors"), metadata={"format": "pt"})
    if dtype == "bfloat16":
        # The reference for a bf16 checkpoint is that checkpoint loaded in float32 by
        # transformers (casting the in-memory model would also round its rotary buffers).
        model = model_cls.from_pretrained(path, dtype=torch.float32).eval()
        model.config._attn_implementation = "eager"
    model = model.float()
    golden = {"family": name, "dtype": dtype, "transformers": transformers.__version__, "torch": torch.__version__,
              "vocab": VOCAB, "prompts": []}
    with torch.no_grad():
        for ids in PROMPTS:
            logits = model(torch.tensor([ids])).logits[0].float().numpy()
            golden["prompts"].append({"ids": ids, "shape": list(logits.shape), "logits": b64(logits)})
        # batched with left padding: the second prompt padded to the first's length
        a, b = PROMPTS[1], PROMPTS[0]
        pad = len(a) - len(b)
        ids = torch.tensor([a, [0] * pad + b])
        mask = torch.tensor([[1] * len(a), [0] * pad + [1] * len(b)])
        out = model(ids, attention_mask=mask).logits.float().numpy()
        golden["leftPadded"] = {"ids": ids.tolist(), "mask": mask.tolist(), "shape": list(out.shape),
                                "logits": b64(out)}
        gen = model.generate(torch.tensor([PROMPTS[0]]), max_new_tokens=8, do_sample=False,
                             pad_token_id=0, eos_token_id=None)
        golden["greedy"] = {"ids": PROMPTS[0], "maxNewTokens": 8, "tokens": gen[0].tolist()[len(PROMPTS[0]):]}
    tok = transformers.AutoTokenizer.from_pretrained(path)
    texts = ["the quick brown fox", "Call me Ishmael.  Some years ago…", "routers decide: skip or run?\n"]
    golden["tokenization"] = [{"text": t, "ids": tok(t, add_special_tokens=False)["input_ids"]} for t in texts]
    messages = [{"role": "user", "content": "hello there"}, {"role": "assistant", "content": "hi"}]
    golden["chat"] = {"messages": messages,
                      "text": tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)}
    with open(os.path.join(path, "golden.json"), "w") as f:
        json.dump(golden, f)
    if spec.get("fused_copy"):
        with open(os.path.join(path + "-fused", "golden.json"), "w") as f:
            json.dump(golden, f)
        os.remove(os.path.join(path + "-fused", "generation_config.json")) if os.path.exists(os.path.join(path + "-fused", "generation_config.json")) else None
    size = sum(os.path.getsize(os.path.join(path, x)) for x in os.listdir(path))
    print(f"{tag}: {size / 1024:.0f} KiB, params {sum(p.numel() for p in model.parameters())}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="test/fixtures/models")
    ap.add_argument("--only", default=None)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for name, spec in FAMILIES.items():
        if args.only and name not in args.only.split(","):
            continue
        make_family(name, spec, args.out, "float32")
    if not args.only or "llama" in args.only:
        make_family("llama", FAMILIES["llama"], args.out, "bfloat16")


if __name__ == "__main__":
    main()
