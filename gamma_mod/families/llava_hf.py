"""llava-hf LLaVA-1.5 (`LlavaForConditionalGeneration`: CLIP tower, MLP projector, Llama text model)."""

from .base import FamilyAdapter

LLAVA_HF = FamilyAdapter(
    name="llava_hf",
    hf_model_types=("llava",),
    mod_model_type="gamma_mod_llava",
    decoder_layers_path="model.language_model.layers",
    image_token_fields=("image_token_id",),
    vision_modules=("model.vision_tower",),
    projector_modules=("model.multi_modal_projector",),
    hf_model_class_name="LlavaForConditionalGeneration",
    hf_processor_class_name="LlavaProcessor",
)
