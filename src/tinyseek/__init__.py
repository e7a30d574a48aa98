"""tinyseek: small, reproducible ablations of DeepSeek-V3's efficiency ideas."""

__version__ = "0.1.0"
