#!/usr/bin/env python3
"""Reference logits of the embedded models (models/dense, models/moe) computed by
Hugging Face transformers, for the test that checks our engine loads them identically.

    python3 scripts/golden/embedded_logits.py   # writes test/fixtures/embedded/<name>.json
"""
import base64
import json
import os

import numpy as np
import torch
import transformers

PROMPT = "Call me Ishmael. Some years ago, never mind how long precisely, the President said"


def main():
    out_dir = os.path.join("test", "fixtures", "embedded")
    os.makedirs(out_dir, exist_ok=True)
    for name in ["dense", "moe"]:
        path = os.path.join("models", name)
        if not os.path.exists(os.path.join(path, "config.json")):
            print(f"{name}: not built, skipped")
            continue
        tok = transformers.AutoTokenizer.from_pretrained(path)
        model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        ids = tok(PROMPT, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].float().numpy()
        data = {"model": name, "prompt": PROMPT, "ids": ids, "shape": list(logits.shape),
                "logits": base64.b64encode(np.ascontiguousarray(logits, dtype="<f4").tobytes()).decode(),
                "transformers": transformers.__version__, "torch": torch.__version__}
        with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
            json.dump(data, f)
        print(f"{name}: {len(ids)} tokens, logits {logits.shape}")


if __name__ == "__main__":
    main()
