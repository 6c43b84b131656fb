#!/usr/bin/env bash
# The "trace" step: export a Hugging Face BERT-style model to ONNX for `stowage serve`
# (scripts/trace.py: torch.onnx, dynamic batch and sequence axes, tokenizer.json and config.json
# beside it, checked against PyTorch with onnxruntime; --fp16 for GPU nodes).
#   scripts/trace.sh MODEL OUT [--task classification|embedding] [--fp16] [--max-length N] [--id ID]
#     MODEL: a hub id (where the hub is reachable) or a local save_pretrained folder.
#   scripts/trace.sh --local-demo OUT
#     builds a small random BERT here (no hub), traces it, serves the ONNX file with stowage and
#     checks the served scores against PyTorch's.
# PyTorch, transformers, onnx and onnxruntime go into a virtual environment (STOWAGE_TRACE_VENV,
# default .venv-trace; several GB, since PyPI's torch wheels bring the CUDA libraries).
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
case "${1:-}" in
  "") usage >&2; exit 2 ;;
  -h | --help) usage; exit 0 ;;
esac
venv=${STOWAGE_TRACE_VENV:-$root/.venv-trace}
if ! "$venv/bin/python" -c 'import torch, transformers, onnx, onnxruntime, onnxconverter_common' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check 'torch>=2.4' 'transformers>=4.44,<6' 'onnx>=1.16' \
    'onnxruntime==1.31.1' 'onnxconverter-common>=1.14' >&2
fi
py=$venv/bin/python

if [ "$1" != --local-demo ]; then
  # From the caller's folder, so that MODEL and OUT are read there (trace.py parses its arguments).
  exec "$py" "$root/scripts/trace.py" "$@"
fi

[ $# -eq 2 ] || refuse "--local-demo takes one folder: scripts/trace.sh --local-demo OUT"
out=$(from_caller "$2")
stowage=$(release_binary)
cd "$root"
rm -rf "$out"
mkdir -p "$out"
# A WordPiece tokenizer from `stowage synth`, and a random 2-layer BERT classifier around it.
"$stowage" synth --out "$out/synth" --count 1 >/dev/null
"$py" - "$out" <<'PY'
import sys, torch
from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast
out = sys.argv[1]
tok = PreTrainedTokenizerFast(tokenizer_file=f"{out}/synth/tiny-0001/tokenizer.json", unk_token="[UNK]",
                              cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]", mask_token="[MASK]")
torch.manual_seed(0)
labels = ["negative", "neutral", "positive"]
config = BertConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=128, max_position_embeddings=128, num_labels=3,
                    id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)})
BertForSequenceClassification(config).eval().save_pretrained(f"{out}/hf")
tok.save_pretrained(f"{out}/hf")
PY
"$py" scripts/trace.py "$out/hf" "$out/onnx" --id traced-0001 > "$out/entry.toml"
# A catalog: synth's instance types and profiles, and the traced model.
{
  sed '/^\[\[models\]\]/,$d' "$out/synth/models.toml"
  sed 's/^peak_rps/profile = "synth-tiny"\npeak_rps/' "$out/entry.toml"
} > "$out/models.toml"
port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
RUST_LOG=warn "$stowage" serve --catalog "$out/models.toml" --host 127.0.0.1 --port "$port" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
until curl -sf "127.0.0.1:$port/ready" >/dev/null; do
  kill -0 $pid
  if curl -s "127.0.0.1:$port/models" | grep -q '"state":"failed"'; then
    curl -s "127.0.0.1:$port/models" >&2
    exit 1
  fi
  sleep 0.2
done
text="the delivery was late but the support team was helpful"
curl -sf -d "{\"inputs\": \"$text\"}" "127.0.0.1:$port/predictions/traced-0001" > "$out/served.json"
"$py" - "$out" "$text" <<'PY'
import json, sys, torch
from transformers import AutoTokenizer, BertForSequenceClassification
out, text = sys.argv[1:3]
tok = AutoTokenizer.from_pretrained(f"{out}/hf")
model = BertForSequenceClassification.from_pretrained(f"{out}/hf").eval()
with torch.no_grad():
    want = torch.softmax(model(**tok(text, return_tensors="pt")).logits, -1)[0].tolist()
served = json.load(open(f"{out}/served.json"))["predictions"][0]["scores"]
labels = model.config.id2label
diff = max(abs(served[labels[i]] - p) for i, p in enumerate(want))
print(f"served by stowage vs PyTorch: largest score difference {diff:.2e}; served {served}")
sys.exit(0 if diff < 1e-4 else 1)
PY
