"""Builds the real-export test fixtures: small Hugging Face architectures made from configs with
random weights (nothing is downloaded), exported the way users export them, with references.

For each architecture (BERT, DistilBERT, MPNet, XLM-RoBERTa) an encoder (`last_hidden_state`) and a
sequence classifier (`logits`) are exported with torch.onnx.export (the TorchScript exporter,
opset 17, dynamic batch and sequence axes) into tests/fixtures/exports/<name>/: model.onnx,
tokenizer.json (a tokenizer of the architecture's kind, trained here on a small corpus),
config.json (save_pretrained's) and reference.json: the texts, the token ids the Python tokenizer
gives, and onnxruntime's outputs on them. versions.json records the versions used.

Run through scripts/export-fixtures.sh (it makes the virtual environment).
"""
import json
import os
import sys

import numpy as np
import onnxruntime
import tokenizers
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

OUT = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/exports"
CORPUS = [
    "the delivery was fast and the support team was very helpful",
    "I love this product, it works great and the price was fair",
    "terrible quality, it arrived broken and the refund took weeks",
    "is it good? yes it is, and the shop answered every question",
    "le colis est arrivé en retard mais le produit est excellent",
    "das Paket kam schnell an und die Qualität ist sehr gut",
    "東京 の 天気 は 晴れ です",
    "ok 👍 great service, would buy again",
] * 4
TEXTS = [
    "I love this product, the delivery was fast",
    "terrible, slow delivery and a broken item",
    "ok",
    "das Paket kam schnell an",
    " ".join(["the support team was very helpful"] * 40),  # past every model's length: truncated
]
PAIR = ("is it good?", "yes it is, and the delivery was fast")
MAX_POSITIONS = 64


def wordpiece(cls="[CLS]", sep="[SEP]", specials=("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"), lowercase=True):
    tok = Tokenizer(models.WordPiece(unk_token=specials[1]))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=400, special_tokens=list(specials)))
    c, s = tok.token_to_id(cls), tok.token_to_id(sep)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B:1 {sep}:1", special_tokens=[(cls, c), (sep, s)]
    )
    return tok


def mpnet_tokenizer():
    # MPNet: WordPiece with RoBERTa-style specials, <s> A </s></s> B </s> for pairs.
    tok = wordpiece("<s>", "</s>", ("<s>", "<pad>", "</s>", "<unk>", "<mask>"))
    tok.model = models.WordPiece(vocab=tok.get_vocab(), unk_token="<unk>")
    tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")))
    return tok


def sentencepiece_tokenizer():
    # XLM-R: a SentencePiece-style Unigram model with Metaspace, <s> A </s></s> B </s>.
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok.train_from_iterator(CORPUS, trainers.UnigramTrainer(vocab_size=300, special_tokens=specials, unk_token="<unk>"))
    tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")))
    return tok


def config(arch, tok, labels):
    common = dict(vocab_size=tok.get_vocab_size(), max_position_embeddings=MAX_POSITIONS)
    if labels:
        common.update(num_labels=labels, id2label={i: f"class_{i}" for i in range(labels)},
                      label2id={f"class_{i}": i for i in range(labels)})
    if arch == "bert":
        return transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                       intermediate_size=64, pad_token_id=tok.token_to_id("[PAD]"), **common)
    if arch == "distilbert":
        return transformers.DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                                             pad_token_id=tok.token_to_id("[PAD]"), **common)
    if arch == "mpnet":
        common["max_position_embeddings"] = MAX_POSITIONS + 2  # positions start after the padding id
        return transformers.MPNetConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                        intermediate_size=64, pad_token_id=tok.token_to_id("<pad>"),
                                        bos_token_id=tok.token_to_id("<s>"), eos_token_id=tok.token_to_id("</s>"),
                                        **common)
    if arch == "xlm-roberta":
        common["max_position_embeddings"] = MAX_POSITIONS + 2
        return transformers.XLMRobertaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                             intermediate_size=64, pad_token_id=tok.token_to_id("<pad>"),
                                             bos_token_id=tok.token_to_id("<s>"),
                                             eos_token_id=tok.token_to_id("</s>"), type_vocab_size=1, **common)
    raise ValueError(arch)


TOKENIZERS = {"bert": wordpiece, "distilbert": wordpiece, "mpnet": mpnet_tokenizer,
              "xlm-roberta": sentencepiece_tokenizer}


def export(arch, task, seed):
    name = f"{arch}-{task}"
    out = os.path.join(OUT, name)
    os.makedirs(out, exist_ok=True)
    tok = TOKENIZERS[arch]()
    # As a user's tokenizer.json: truncation at the model's length, no padding.
    tok.enable_truncation(MAX_POSITIONS)
    tok.no_padding()
    tok.save(os.path.join(out, "tokenizer.json"))
    torch.manual_seed(seed)
    cfg = config(arch, tok, 3 if task == "classifier" else 0)
    cfg._attn_implementation = "eager"
    model = (transformers.AutoModelForSequenceClassification if task == "classifier" else transformers.AutoModel) \
        .from_config(cfg).eval()
    cfg.save_pretrained(out)
    takes_types = arch == "bert"  # DistilBERT, MPNet and XLM-R's forward() take no token_type_ids
    inputs = ["input_ids", "attention_mask"] + (["token_type_ids"] if takes_types else [])
    output = "logits" if task == "classifier" else "last_hidden_state"
    sample = tok.encode_batch(TEXTS[:2])
    width = max(len(e.ids) for e in sample)
    tensors = {
        "input_ids": torch.tensor([e.ids + [0] * (width - len(e.ids)) for e in sample]),
        "attention_mask": torch.tensor([[1] * len(e.ids) + [0] * (width - len(e.ids)) for e in sample]),
        "token_type_ids": torch.zeros((2, width), dtype=torch.long),
    }

    class Wrapped(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, *args):
            return getattr(self.m(**dict(zip(inputs, args))), output)

    path = os.path.join(out, "model.onnx")
    torch.onnx.export(Wrapped(model), tuple(tensors[i] for i in inputs), path, input_names=inputs,
                      output_names=[output], opset_version=17, dynamo=False,
                      dynamic_axes={**{i: {0: "batch", 1: "sequence"} for i in inputs},
                                    output: {0: "batch", 1: "sequence"} if task == "encoder" else {0: "batch"}})
    # References: what onnxruntime in Python answers for the Python tokenizer's ids, one text at a
    # time (no padding), and for one text pair.
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    cases = [{"text": t} for t in TEXTS] + [{"text": PAIR[0], "text_pair": PAIR[1]}]
    for case in cases:
        enc = tok.encode(case["text"], case.get("text_pair"))
        feed = {"input_ids": np.array([enc.ids], dtype=np.int64),
                "attention_mask": np.array([enc.attention_mask], dtype=np.int64)}
        if takes_types:
            feed["token_type_ids"] = np.array([enc.type_ids], dtype=np.int64)
        (value,) = session.run([output], feed)
        case.update(input_ids=enc.ids, shape=list(value.shape), values=[float(v) for v in value.ravel()])
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump({"model": name, "output": output, "cases": cases}, f)
        f.write("\n")
    print(f"{name}: {os.path.getsize(path) / 1024:.0f} KiB")


if __name__ == "__main__":
    for seed, arch in enumerate(TOKENIZERS):
        for task in ("encoder", "classifier"):
            export(arch, task, seed)
    with open(os.path.join(OUT, "versions.json"), "w") as f:
        json.dump({"torch": torch.__version__, "transformers": transformers.__version__,
                   "tokenizers": tokenizers.__version__, "onnxruntime": onnxruntime.__version__,
                   "exporter": "torch.onnx.export (TorchScript), opset 17"}, f, indent=1)
        f.write("\n")
