"""Qwen2.5-VL (`Qwen2_5_VLForConditionalGeneration`: windowed ViT with a patch merger, Qwen2.5 text model
with multimodal M-RoPE (3-D position ids); images and video). The merger sits inside `model.visual`:
it is the projector, the rest of `model.visual` the vision encoder."""

from .base import FamilyAdapter

QWEN2_5_VL = FamilyAdapter(
    name="qwen2_5_vl",
    hf_model_types=("qwen2_5_vl",),
    mod_model_type="gamma_mod_qwen2_5_vl",
    decoder_layers_path="model.language_model.layers",
    image_token_fields=("image_token_id",),
    video_token_fields=("video_token_id",),
    vision_modules=("model.visual",),
    projector_modules=("model.visual.merger",),
    hf_model_class_name="Qwen2_5_VLForConditionalGeneration",
    hf_processor_class_name="Qwen2_5_VLProcessor",
)
