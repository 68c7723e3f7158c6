"""Files shipped inside the tellm.inference package: the default TE model and training recipe.

The one place that names them; ``tellm serve``, ``tellm eval --router model``, ``tellm train`` /
``tellm export``, the benchmarks and the tests all take their defaults from here (stdlib only).
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
#: The shipped TE head (its model card is the .json beside it).
DEFAULT_MODEL_PATH = PACKAGE_DIR / "models" / "tellm-te.onnx"
#: The recipe the shipped head was trained with.
DEFAULT_RECIPE_PATH = PACKAGE_DIR / "recipes" / "tellm-te.yaml"
