"""The model card of an AutoDistil student (``autodistil extract`` and the student ``autodistil search`` writes)."""

from __future__ import annotations

import os
from typing import Optional

from distiller_nlp.core.card import CardInfo, write_model_card
from distiller_nlp.models import describe_model, model_source, size_rows


def write_student_card(directory: str, student, arch, superlm_dir: str, meta: dict,
                       search: Optional[dict] = None) -> str:
    """Write ``directory/README.md`` for a student extracted from the SuperLM in ``superlm_dir`` (its ``meta`` from
    ``load_superlm``): the teacher and the task-agnostic objective the SuperLM was trained with, the sub-space, the
    architecture, params and FLOPs against the teacher; ``search``: the search's metrics (budget, score, ...)."""
    teacher = meta.get("teacher")
    src = model_source(teacher) if teacher else {"id": None, "license": None, "base": None}
    s_desc = describe_model(student, seq_len=128)
    t_desc = None
    if teacher and os.path.isfile(os.path.join(str(teacher), "config.json")):
        from transformers import AutoConfig

        t_desc = describe_model(AutoConfig.from_pretrained(teacher), seq_len=128)
    obj = meta.get("objective") or {}
    space = (meta.get("space") or {}).get("name", "?")
    pipe = {"method": "AutoDistil (Xu et al., 2022): a weight-sharing SuperLM per sub-space, trained task-agnostically, "
                      "the student extracted without retraining",
            "SuperLM": f"`{superlm_dir}` (sub-space {space}, sampling {meta.get('sampling', '?')}, "
                       f"{meta.get('steps', '?')} steps, layer selection {meta.get('layer_selection', '?')})",
            "objective": f"self-attention relation distillation ({obj.get('kind', '?')}"
                         + (f" over {obj['mse_pairs']} pairs" if obj.get("kind") == "mse" and obj.get("mse_pairs")
                            else "") + ", "
                         f"{obj.get('relation_heads', '?')} relation heads, teacher layer {obj.get('teacher_layer', '?')})",
            "architecture": f"`{arch}`"}
    if search:
        pipe["search"] = (f"{search.get('candidates_scored', '?')} candidates scored ({search.get('score', '?')}), "
                          f"budget {search.get('budget_flops', 0):,.0f} "
                          f"{search.get('unit', 'FLOPs = 2 x multiply-adds')}, chosen score "
                          f"{search.get('chosen_score', float('nan')):.5g}")
    info = CardInfo(
        title=os.path.basename(os.path.abspath(directory)) or "student",
        summary=(f"A {s_desc['layers']} × {s_desc['hidden']} student extracted by AutoDistil from a SuperLM trained on "
                 f"the teacher `{src['id']}` (task-agnostic: fine-tune it, or distil into it, for a task)."),
        base_model=src["id"], license=src.get("license"), task_type="feature-extraction",
        tags=["autodistil", "nas", "feature-extraction"], model_rows=size_rows(s_desc, t_desc), pipeline=pipe,
        metrics={}, load_snippet="from transformers import AutoModel\nmodel = AutoModel.from_pretrained(\"PATH\")")
    return write_model_card(directory, info)
