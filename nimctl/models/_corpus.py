"""The small built-in text the demo tokenizers are trained on.

Written for nimctl, so it carries no third-party licence. It mixes plain English, chat
turns, JSON (tool calls), numbers and a little code so that the learned merges cover
what the demo models are sent. Byte-level BPE keeps every other text encodable anyway.
"""

from __future__ import annotations

CORPUS: tuple[str, ...] = (
    "nimctl runs a language model on your own machine and answers like a NIM.",
    "The server listens on port 8000 and relays chat completions to the engine.",
    "This is a tiny demo model with random weights, so its answers are nonsense.",
    "Hello! How can I help you today? Please describe the image in one sentence.",
    "What is the weather like in Paris today? It is sunny and warm, about 24 degrees.",
    "What do you see in this picture? I see a red square, a blue circle and a green line.",
    "The quick brown fox jumps over the lazy dog while the cat sleeps in the sun.",
    "A vision language model reads images and text together and writes an answer.",
    "Tell me a short story about a robot who learns to paint the sea at night.",
    "Summarise the following text in three bullet points, then give a title.",
    "You are a helpful assistant. Answer briefly and say when you do not know.",
    "The user asked a question, the assistant called a tool, the tool answered.",
    "Translate to French: good morning, thank you very much, see you tomorrow.",
    "Bonjour, merci beaucoup, a demain. Guten Tag, danke schoen. Hola, gracias.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 16 32 64 100 128 256 512 1000 1024 2048 4096.",
    "Dates and times: 2024-01-31, 12:30, 3.14159, 2.71828, 42, -7, 1e-5, 50%.",
    '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}',
    '{"name": "search", "arguments": {"query": "tiny models", "limit": 5}}',
    '{"type": "function", "function": {"name": "add", "parameters": {"type": "object",'
    ' "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]}}}',
    '{"temperature": 21.5, "humidity": 40, "conditions": "cloudy", "ok": true, "error": null}',
    "<tools>\n</tools>\n<tool_call>\n</tool_call>\n<tool_response>\n</tool_response>",
    "def add(a: int, b: int) -> int:\n    return a + b\n",
    "for i in range(10):\n    print(i, i * i)\n",
    "curl -s http://localhost:8000/v1/models | python -m json.tool",
    "GET /v1/health/ready returns 200 once the model is loaded; 503 before that.",
    "The image shows a cat, a dog, a tree, a house, a car, a road and the sky.",
    "Colours: red, orange, yellow, green, blue, indigo, violet, black, white, grey.",
    "Shapes: square, circle, triangle, line, point, rectangle, star, arrow.",
    "Question: how many apples are on the table? Answer: there are three apples.",
    "I am not sure. Could you give me more details, please? Of course, here they are.",
)


def corpus_lines() -> list[str]:
    """The corpus as training lines, in a fixed order (training must be reproducible)."""
    return list(CORPUS)
