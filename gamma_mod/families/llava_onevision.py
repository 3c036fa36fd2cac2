"""LLaVA-OneVision (`LlavaOnevisionForConditionalGeneration`: SigLIP tower, anyres tiles, Qwen2 text
model; images and video). `image_newline` (the learned row separator of anyres features) trains with
the projector."""

from .base import FamilyAdapter

LLAVA_ONEVISION = FamilyAdapter(
    name="llava_onevision",
    hf_model_types=("llava_onevision",),
    mod_model_type="gamma_mod_llava_onevision",
    decoder_layers_path="model.language_model.layers",
    image_token_fields=("image_token_id",),
    video_token_fields=("video_token_id",),
    vision_modules=("model.vision_tower",),
    projector_modules=("model.multi_modal_projector", "model.image_newline"),
    hf_model_class_name="LlavaOnevisionForConditionalGeneration",
    hf_processor_class_name="LlavaOnevisionProcessor",
)
