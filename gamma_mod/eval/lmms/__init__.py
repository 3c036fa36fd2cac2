"""lmms-eval plugin: evaluate any gamma-mod model folder on lmms-eval's tasks.

Registered through the `lmms_eval.models` entry point (pyproject.toml), which lmms-eval 0.7 reads
when its model registry is built (`lmms_eval.models.registry_v2.ModelRegistryV2.
load_entrypoint_manifests`): `--model gamma_mod` then resolves to `model.GammaModLMMS`.

    pip install 'gamma-mod[lmms]'
    python -m lmms_eval --model gamma_mod --model_args pretrained=DIR,batch_size=8 --tasks gqa,pope,mme

Importing this package imports no lmms-eval (it is an optional extra); `model` does.
Modules: `options` (the model args), `runner` (prompts, generation, log-likelihood; no lmms-eval),
`model` (the lmms subclass), `efficiency` (`log_efficiency=PATH`), `synthetic_task` (an offline task
over the bundled synthetic held-out split).
"""

from __future__ import annotations

MODEL_ID = "gamma_mod"
MODEL_CLASS_PATH = "gamma_mod.eval.lmms.model.GammaModLMMS"


def model_manifest():
    """The entry point's payload: lmms-eval calls it and registers the manifest it returns."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_ID, simple_class_path=MODEL_CLASS_PATH, aliases=("gamma-mod",))
