"""Our LLaVA fork (gamma_mod/model/llava_llama.py): LLaVA-1.5, LLaVA-HR and Mini-Gemini towers on a
Llama decoder; the released gamma-MoD checkpoints' `mod_llava_llama` / `mod_mgm` load into it.
Images only; MoD layers are part of the model class itself (no separate twin)."""

from .base import FamilyAdapter

LLAVA_FORK = FamilyAdapter(
    name="llava_fork",
    hf_model_types=("llava_llama", "mod_llava_llama", "mod_mgm"),
    mod_model_type=None,
    decoder_layers_path="model.layers",
    image_token_fields=("image_token_index",),
    vision_modules=("model.vision_tower",),
    projector_modules=("model.mm_projector",),
)
