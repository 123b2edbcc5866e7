"""The sparsity report of a pruned BERT: per encoder layer, heads kept, the query/key head size, FFN width kept and the
share of the encoder Linears' weights kept, as rows, a markdown table and a PNG heat map.

"Kept" counts against the unpruned geometry of the config (num_attention_heads, intermediate_size): a removed head
or neuron counts as 0, a weight still present counts as 1 — or, for a model in memory with `count_zeros=True`, as
1 only when it is non-zero (weights zeroed by the threshold that could not be removed).
"""

from __future__ import annotations

import os

import torch

from ..layer_sizes import encoder_layers, head_size

MODULES = ("query", "key", "value", "attention_output", "intermediate", "output")
_PATHS = {"query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
          "attention_output": "attention.output.dense", "intermediate": "intermediate.dense", "output": "output.dense"}


def _full_shapes(config) -> dict[str, tuple[int, int]]:
    h, i = config.hidden_size, config.intermediate_size
    return {"query": (h, h), "key": (h, h), "value": (h, h), "attention_output": (h, h), "intermediate": (i, h),
            "output": (h, i)}


def _row(layer: int, config, kept: dict[str, float]) -> dict:
    """One report row from the kept weight counts per module."""
    full = _full_shapes(config)
    heads = round(kept["heads"])
    width = round(kept["ffn"])
    d = head_size(config)
    row = {"layer": layer, "heads": f"{heads}/{config.num_attention_heads}",
           "query_key_head_size": f"{round(kept['query_key_head_size'])}/{d}",
           "ffn_width": f"{width}/{config.intermediate_size}"}
    row["heads_kept"] = heads / config.num_attention_heads
    row["ffn_kept"] = width / config.intermediate_size
    for name in MODULES:
        row[f"{name}_kept"] = kept[name] / (full[name][0] * full[name][1])
    row["weights_kept"] = sum(kept[n] for n in MODULES) / sum(a * b for a, b in full.values())
    return row


@torch.no_grad()
def sparsity_report(model: torch.nn.Module, count_zeros: bool = True) -> list[dict]:
    """Rows (one per encoder layer) of a model in memory: `layer`, `heads` ("kept/total"), `ffn_width`,
    `heads_kept`, `ffn_kept`, `<module>_kept` and `weights_kept` (shares in [0, 1]). With `count_zeros`, zero
    weights (latent or full precision) count as removed; packed weights are never zero."""
    rows = []
    for i, layer in enumerate(encoder_layers(model)):
        modules = {name: layer.get_submodule(path) for name, path in _PATHS.items()}
        kept = {}
        for name, module in modules.items():
            weight = getattr(module, "weight", None)
            if count_zeros and weight is not None:
                kept[name] = float(weight.ne(0).sum())
            else:
                kept[name] = float(module.out_features * module.in_features)
        attention = layer.attention.self
        kept["heads"] = modules["value"].out_features / attention.attention_head_size
        kept["query_key_head_size"] = modules["query"].out_features / kept["heads"]
        kept["ffn"] = modules["intermediate"].out_features
        rows.append(_row(i, model.config, kept))
    return rows


def config_sparsity_report(config) -> list[dict] | None:
    """Rows as `sparsity_report`, from a config's per-layer sizes alone (every weight of a kept head or neuron
    counts as kept); None when the config is not pruned (no `layer_num_attention_heads` /
    `layer_query_key_head_sizes` / `layer_intermediate_sizes`)."""
    from ..layer_sizes import is_pruned, layer_attention_sizes

    if not is_pruned(config):
        return None
    layers = config.num_hidden_layers
    widths = getattr(config, "layer_intermediate_sizes", None) or [config.intermediate_size] * layers
    rows = []
    for i, w in enumerate(widths):
        h, qk, d = layer_attention_sizes(config, i)
        hidden = config.hidden_size
        kept = {"query": h * qk * hidden, "key": h * qk * hidden, "value": h * d * hidden,
                "attention_output": h * d * hidden}
        kept.update({"intermediate": w * hidden, "output": w * hidden, "heads": h, "query_key_head_size": qk,
                     "ffn": w})
        rows.append(_row(i, config, kept))
    return rows


def checkpoint_sparsity_report(path: str | os.PathLike, **hub_kwargs) -> list[dict] | None:
    """Rows as `sparsity_report`, read from a saved checkpoint's config (`config_sparsity_report`: the per-layer
    sizes, which the checkpoint validation holds the tensor shapes to); None when the checkpoint is not pruned."""
    from transformers import AutoConfig

    return config_sparsity_report(AutoConfig.from_pretrained(path, **hub_kwargs))


def markdown_table(rows: list[dict]) -> str:
    """The report as a markdown table (shares in %), with a total row (weights kept over all layers)."""
    lines = ["| layer | heads | Q/K head size | FFN width | weights kept | " + " | ".join(MODULES) + " |",
             "|---:|---:|---:|---:|---:|" + "---:|" * len(MODULES)]
    for row in rows:
        cells = [str(row["layer"]), row["heads"], row["query_key_head_size"], row["ffn_width"],
                 f"{100 * row['weights_kept']:.1f} %"]
        cells += [f"{100 * row[f'{m}_kept']:.1f} %" for m in MODULES]
        lines.append("| " + " | ".join(cells) + " |")
    total = sum(r["weights_kept"] for r in rows) / max(len(rows), 1)
    lines.append(f"| all | | | | {100 * total:.1f} % |" + " |" * len(MODULES))
    return "\n".join(lines)


def plot_heat_map(rows: list[dict], path: str | os.PathLike, title: str = "share kept per layer") -> None:
    """A PNG heat map: layers × (heads, FFN width, each module's weights), colour = share kept (0–1), annotated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = ["heads_kept", "ffn_kept", *(f"{m}_kept" for m in MODULES)]
    labels = ["heads", "FFN", *MODULES]
    values = [[row[c] for c in columns] for row in rows]
    fig, ax = plt.subplots(figsize=(1.1 * len(columns) + 1.5, 0.45 * len(rows) + 1.6))
    image = ax.imshow(values, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(columns)), labels, rotation=35, ha="right")
    ax.set_yticks(range(len(rows)), [f"layer {r['layer']}" for r in rows])
    for y, line in enumerate(values):
        for x, v in enumerate(line):
            ax.text(x, y, f"{100 * v:.0f}", ha="center", va="center", color="white" if v < 0.6 else "black", fontsize=8)
    fig.colorbar(image, ax=ax, label="share kept")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_sparsity_report(rows: list[dict], output_dir: str | os.PathLike) -> str:
    """Write `sparsity.md`, `sparsity.json` and `sparsity.png` into `output_dir`; returns the table."""
    import json

    table = markdown_table(rows)
    with open(os.path.join(output_dir, "sparsity.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(output_dir, "sparsity.json"), "w") as f:
        json.dump(rows, f, indent=1)
    plot_heat_map(rows, os.path.join(output_dir, "sparsity.png"))
    return table


__all__ = ["checkpoint_sparsity_report", "config_sparsity_report", "markdown_table", "plot_heat_map", "sparsity_report", "write_sparsity_report"]
