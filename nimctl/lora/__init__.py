"""LoRA adapters: reading and checking adapter folders, and nimctl's demo adapters.

- :mod:`nimctl.lora.folder`: what an adapter folder holds (Hugging Face PEFT format), whether the
  server can serve it, and a scan of ``NIM_PEFT_SOURCE``. The server and the CLI both use it.
- :mod:`nimctl.lora.demo`: deterministic tiny adapters for the built-in models, made on first use.

Nothing here imports torch at import time, nor Typer.
"""
