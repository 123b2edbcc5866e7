"""The fill-mask pipeline for binarized masked-LM models, computing vocabulary logits at the masked positions only.

transformers' `FillMaskPipeline` runs the masked-LM head at every position and then reads the rows of the mask
tokens; for a small binarized BERT that head (hidden × vocabulary per position, full precision) costs more than the
whole 1-bit encoder. `BinaryBertFillMaskPipeline` passes the mask positions to `BinaryBertForMaskedLM.forward`
(`logits_positions`) and places the n predicted rows where the parent's post-processing reads them. Other models run
as in `FillMaskPipeline`.

Use: `pipeline("fill-mask", model=model, tokenizer=tokenizer, pipeline_class=BinaryBertFillMaskPipeline)`.
"""

from __future__ import annotations

from transformers import FillMaskPipeline

from .modeling_binary_bert import BinaryBertForMaskedLM


class BinaryBertFillMaskPipeline(FillMaskPipeline):
    """`FillMaskPipeline` whose model computes logits at the mask tokens only (same outputs: top-k tokens, scores and
    sequences). The logits tensor handed to post-processing is [batch, seq, vocab], zero at the other positions
    (never read)."""

    def _forward(self, model_inputs):
        if not isinstance(self.model, BinaryBertForMaskedLM):
            return super()._forward(model_inputs)
        input_ids = model_inputs["input_ids"]
        positions = input_ids == self.tokenizer.mask_token_id  # [batch, seq]
        compact = self.model(**model_inputs, logits_positions=positions).logits  # [n, vocab]
        logits = compact.new_zeros(*input_ids.shape, compact.shape[-1])
        logits[positions] = compact
        return {"logits": logits, "input_ids": input_ids}


__all__ = ["BinaryBertFillMaskPipeline"]
