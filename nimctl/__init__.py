"""nimctl: run an NVIDIA NIM-style server for language and vision-language models locally."""

__version__ = "0.1.0"
# Semantic version of the HTTP API the server speaks (the NIM management + OpenAI routes).
API_VERSION = "1.0.0"
