"""Qwen3-VL (`Qwen3VLForConditionalGeneration`: ViT with a patch merger and DeepStack mergers whose
features the text model adds to the first layers' hidden states at the visual positions; Qwen3 text
model with q/k norms and interleaved M-RoPE; images and video). The mergers are the projector."""

from .base import FamilyAdapter

QWEN3_VL = FamilyAdapter(
    name="qwen3_vl",
    hf_model_types=("qwen3_vl",),
    mod_model_type="gamma_mod_qwen3_vl",
    decoder_layers_path="model.language_model.layers",
    image_token_fields=("image_token_id",),
    video_token_fields=("video_token_id",),
    vision_modules=("model.visual",),
    projector_modules=("model.visual.merger", "model.visual.deepstack_merger_list"),
    hf_model_class_name="Qwen3VLForConditionalGeneration",
    hf_processor_class_name="Qwen3VLProcessor",
)
