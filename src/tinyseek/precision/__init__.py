"""FP8 training recipes (torchao tensorwise and rowwise, DeepSeek-V3 blockwise) and telemetry."""

from tinyseek.precision.blockwise import Float8BlockwiseLinear, blockwise_linear, blockwise_mm
from tinyseek.precision.convert import FP8_RECIPES, Fp8Plan, convert_to_fp8, fp8_layers, plan_fp8
from tinyseek.precision.telemetry import FP8Telemetry

__all__ = [
    "FP8_RECIPES",
    "FP8Telemetry",
    "Float8BlockwiseLinear",
    "Fp8Plan",
    "blockwise_linear",
    "blockwise_mm",
    "convert_to_fp8",
    "fp8_layers",
    "plan_fp8",
]
