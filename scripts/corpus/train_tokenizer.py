#!/usr/bin/env python3
"""Trains the embedded byte-level BPE tokenizer on data/corpus/train.txt (and nothing else).

    python3 scripts/corpus/train_tokenizer.py [--corpus data/corpus] [--out models/tokenizer] [--vocab-size 4096]

Writes (atomically) into --out:
  tokenizer.json             the Hugging Face `tokenizers` file (byte-level BPE, GPT-2 style
                             pre-tokenizer regex, add_prefix_space=False, ByteLevel decoder)
  tokenizer_config.json      transformers' PreTrainedTokenizerFast settings + a chat template
  tokenizer_training.json    how it was made: the train split's sha256 (from MANIFEST.json),
                             vocabulary size, and tokens / bytes-per-token of every split, which
                             test/corpus.test.ts checks the JS loader against

Vocabulary: 4096 ids in all = 2 special tokens (<|endoftext|> = 0, <|pad|> = 1) + the 256
byte symbols + 3838 merges. Deterministic: training runs single-threaded over a fixed file
and `tokenizers` breaks ties between equally frequent pairs by the pair itself; two runs give
byte-identical files (checked by --check-determinism).
"""
import argparse
import hashlib
import json
import os
import sys
import tempfile

# Single-threaded before `tokenizers` is imported, so word counting is order-independent
# anyway and no thread pool is started.
os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("RAYON_RS_NUM_CPUS", "1")
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import tokenizers  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # noqa: E402

SPECIAL_TOKENS = ["<|endoftext|>", "<|pad|>"]
SPLITS = ["train", "validation", "test"]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'] + ':\\n' + message['content'] + eos_token }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'assistant:\\n' }}{% endif %}"
)


def write_atomic(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def json_bytes(obj):
    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def train(train_file, vocab_size):
    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train([train_file], trainer=trainer)
    return tok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap.add_argument("--corpus", default=os.path.join(root, "data", "corpus"))
    ap.add_argument("--out", default=os.path.join(root, "models", "tokenizer"))
    ap.add_argument("--vocab-size", type=int, default=4096)
    ap.add_argument("--check-determinism", action="store_true", help="train twice and compare")
    args = ap.parse_args()

    manifest_path = os.path.join(args.corpus, "MANIFEST.json")
    with open(manifest_path, "rb") as f:
        manifest = json.load(f)
    train_file = os.path.join(args.corpus, "train.txt")
    with open(train_file, "rb") as f:
        train_bytes = f.read()
    train_sha = hashlib.sha256(train_bytes).hexdigest()
    if train_sha != manifest["splits"]["train"]["sha256"]:
        sys.exit(f"{train_file}: sha256 differs from {manifest_path}; rerun scripts/corpus/prepare.js")

    tok = train(train_file, args.vocab_size)
    tok_json = tok.to_str(pretty=True).encode("utf-8") + b"\n"
    if args.check_determinism:
        again = train(train_file, args.vocab_size).to_str(pretty=True).encode("utf-8") + b"\n"
        if again != tok_json:
            sys.exit("training is not deterministic: two runs gave different tokenizer.json")
        print("determinism: two trainings gave byte-identical tokenizer.json", file=sys.stderr)

    vocab = tok.get_vocab(with_added_tokens=True)
    if len(vocab) != args.vocab_size or max(vocab.values()) != args.vocab_size - 1:
        sys.exit(f"vocabulary has {len(vocab)} entries (max id {max(vocab.values())}), expected {args.vocab_size}")
    for i, t in enumerate(SPECIAL_TOKENS):
        if vocab.get(t) != i:
            sys.exit(f"{t} has id {vocab.get(t)}, expected {i}")

    stats = {}
    for split in SPLITS:
        with open(os.path.join(args.corpus, f"{split}.txt"), "rb") as f:
            raw = f.read()
        text = raw.decode("utf-8")
        n = len(tok.encode(text, add_special_tokens=False).ids)
        stats[split] = {"bytes": len(raw), "tokens": n, "bytesPerToken": round(len(raw) / n, 6)}
        print(f"{split:<10} {len(raw):>10} bytes {n:>9} tokens  {len(raw) / n:.4f} bytes/token")

    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": "<|endoftext|>",
        "pad_token": "<|pad|>",
        "unk_token": None,
        "model_max_length": 2048,
        "padding_side": "right",
        "clean_up_tokenization_spaces": False,
        "add_prefix_space": False,
        "added_tokens_decoder": {
            str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True}
            for i, t in enumerate(SPECIAL_TOKENS)
        },
        "chat_template": CHAT_TEMPLATE,
    }
    training = {
        "generator": "scripts/corpus/train_tokenizer.py",
        "tokenizersVersion": tokenizers.__version__,
        "model": "byte-level BPE",
        "vocabSize": args.vocab_size,
        "specialTokens": {t: i for i, t in enumerate(SPECIAL_TOKENS)},
        "merges": args.vocab_size - len(SPECIAL_TOKENS) - 256,
        "minFrequency": 2,
        "trainedOn": "data/corpus/train.txt",
        "trainSha256": train_sha,
        "countedAs": "each split file encoded whole, without special tokens; bytesPerToken = file bytes / tokens",
        "splits": stats,
    }
    write_atomic(os.path.join(args.out, "tokenizer.json"), tok_json)
    write_atomic(os.path.join(args.out, "tokenizer_config.json"), json_bytes(config))
    write_atomic(os.path.join(args.out, "tokenizer_training.json"), json_bytes(training))
    print(f"wrote {os.path.relpath(args.out)}/tokenizer.json, tokenizer_config.json, tokenizer_training.json", file=sys.stderr)


if __name__ == "__main__":
    main()
