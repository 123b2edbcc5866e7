"""Packed-file sizes of pruned 1-1-1 students (issue 12's size goals), from the config alone (`estimate_packed_size`,
equal to the saved file's tensor data; tested in tests/test_flops.py): MiniLM (the shared SST-2 teacher's geometry)
and BERT-base, unpruned and with 50 % of the FFN and 75 % of the heads kept in every layer; the last column also
binarizes the pooler and the position / token-type tables and stores the other tensors in float16.

python examples/pruned_sizes.py [TEACHER]
"""

import sys

from transformers import AutoConfig, BertConfig

from hf_binary_bert import BinaryBertConfig
from hf_binary_bert.flops import count_operations, estimate_packed_size

teacher = sys.argv[1] if len(sys.argv) > 1 else "../shared/teachers/minilm-sst2"
GEOMETRY = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
            "max_position_embeddings", "type_vocab_size")
BIT = {"activation_bits": 1, "activation_quantizer": "elastic", "embedding_bits": 1}  # BiT 1-1-1, as in the docs
MORE = {"binarized_modules": ["query", "key", "value", "attention_output", "intermediate", "output", "pooler"],
        "binarized_embeddings": ["word", "position", "token_type"], "fp_dtype": "float16"}
print("| model | heads kept | FFN kept | packed file (MB) | float16 (MB) | + pooler, position, token type binarized, "
      "float16 (MB) | GFLOPs at T=128 |")
print("|---|---:|---:|---:|---:|---:|---:|")
for name, base in (("MiniLM (SST-2 teacher)", AutoConfig.from_pretrained(teacher)), ("BERT-base", BertConfig())):
    geometry = {k: getattr(base, k) for k in GEOMETRY}
    layers, heads, ffn = base.num_hidden_layers, base.num_attention_heads, base.intermediate_size
    for head_share, ffn_share in ((1.0, 1.0), (0.75, 0.5)):
        sizes = {}
        if head_share < 1:
            sizes = {"layer_num_attention_heads": [round(head_share * heads)] * layers,
                     "layer_intermediate_sizes": [round(ffn_share * ffn)] * layers}
        config = BinaryBertConfig(**geometry, **BIT, **sizes, num_labels=2)
        half = BinaryBertConfig(**geometry, **BIT, **sizes, num_labels=2, fp_dtype="float16")
        most = BinaryBertConfig(**geometry, **BIT, **sizes, **MORE, num_labels=2)
        print(f"| {name} | {round(head_share * heads)}/{heads} | {round(ffn_share * ffn)}/{ffn} | "
              f"{estimate_packed_size(config)['total']:.2f} | {estimate_packed_size(half)['total']:.2f} | "
              f"{estimate_packed_size(most)['total']:.2f} | "
              f"{count_operations(config)['flops'] / 1e9:.3f} |")
