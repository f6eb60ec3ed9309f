"""Builds the CLIP BPE tokenizer (49408 ids) from open_clip's bpe_simple_vocab_16e6.txt.gz.

The vocabulary is OpenAI's (MIT licence), shipped inside the open-clip-torch wheel.
vocab.json is built the way CLIP's SimpleTokenizer builds it: 256 byte characters,
the same with "</w>", the first 48894 merges joined, then <|startoftext|> and
<|endoftext|>. The result is what openai/clip-vit-large-patch14 ships, so SD1.x
text encoders and ours see the same ids.

    python3 tools/train/clip_tokenizer.py OUT_DIR [--bpe path/to/bpe_simple_vocab_16e6.txt.gz]
"""
import argparse
import gzip
import json
import os


def bytes_to_unicode():
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1))
          + list(range(ord("\xae"), ord("\xff") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def default_bpe_path():
    import open_clip  # only to find the file inside the wheel

    return os.path.join(os.path.dirname(open_clip.__file__), "bpe_simple_vocab_16e6.txt.gz")


def build_tokenizer_dir(out_dir, bpe_path=None):
    """Writes vocab.json, merges.txt and the tokenizer configs into out_dir; returns out_dir."""
    bpe_path = bpe_path or default_bpe_path()
    lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")
    merges = lines[1:49152 - 256 - 2 + 1]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408, len(vocab)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({t: i for i, t in enumerate(vocab)}, f, ensure_ascii=False)
    with open(os.path.join(out_dir, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    # SD1.x convention: pad with <|endoftext|> to 77 tokens.
    cfg = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "do_lower_case": True,
    }
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    with open(os.path.join(out_dir, "special_tokens_map.json"), "w") as f:
        json.dump({k: cfg[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")}, f, indent=1)
    return out_dir


def load_tokenizer(tok_dir):
    """CLIPTokenizer (fast) from a folder made by build_tokenizer_dir.

    Load through from_pretrained(folder): CLIPTokenizer(vocab_file=..., merges_file=...)
    silently builds a 3-token vocabulary in transformers 5.x.
    """
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(tok_dir)
    ids = tok("a photo of a cat").input_ids
    assert ids == [49406, 320, 1125, 539, 320, 2368, 49407], ids
    assert len(tok) == 49408, len(tok)
    return tok


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--bpe", default=None)
    a = ap.parse_args()
    build_tokenizer_dir(a.out_dir, a.bpe)
    t = load_tokenizer(a.out_dir)
    print("ok:", a.out_dir, len(t), t("a red circle on a blue background").input_ids)
