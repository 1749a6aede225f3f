"""AutoDistil: few-shot task-agnostic NAS for distilling language models (work in progress)."""
