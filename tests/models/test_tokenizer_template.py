"""The generated tokenizers and chat templates, checked with transformers and vLLM's own parsers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from nimctl.models._chat_template import DEFAULT_SYSTEM_PROMPT

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
TOOL_CONVERSATION = [
    {"role": "user", "content": "What is the weather in Paris?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 21}'},
]
TEXTS = [
    "Hello, world!",
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines\r\n",
    "Unicode: héllo wörld, 日本語, Ελληνικά, emoji 😀🚀",
    '{"name": "get_weather", "arguments": {"city": "Paris"}}',
    "<tool_call>\n{}\n</tool_call>",
    "",
]


@pytest.fixture(scope="module", params=["tiny-llm", "tiny-vlm"])
def tokenizer(request: pytest.FixtureRequest, models_root: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(models_root / request.param)


@pytest.fixture(scope="module")
def vlm_processor(tiny_vlm: Path):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_vlm)


@pytest.mark.parametrize("text", TEXTS)
def test_tokenizer_round_trips_text(tokenizer, text: str) -> None:
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text


def test_chat_and_tool_tokens_are_single_tokens(tokenizer) -> None:
    for token in ("<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>", "<tool_response>"):
        ids = tokenizer.encode(token, add_special_tokens=False)
        assert len(ids) == 1, token
        assert tokenizer.convert_ids_to_tokens(ids) == [token]
    # The hermes parser looks the tags up in the vocabulary.
    vocab = tokenizer.get_vocab()
    assert "<tool_call>" in vocab and "</tool_call>" in vocab
    # Tool tags must survive decoding even when special tokens are skipped.
    ids = tokenizer.encode("<tool_call>x</tool_call><|im_end|>", add_special_tokens=False)
    assert tokenizer.decode(ids, skip_special_tokens=True) == "<tool_call>x</tool_call>"


def test_generation_config_stops_at_end_of_turn(models_root: Path) -> None:
    from transformers import AutoTokenizer

    for name in ("tiny-llm", "tiny-vlm"):
        tok = AutoTokenizer.from_pretrained(models_root / name)
        generation = json.loads((models_root / name / "generation_config.json").read_text(encoding="utf-8"))
        assert tok.convert_tokens_to_ids("<|im_end|>") in generation["eos_token_id"]
        assert tok.eos_token == "<|im_end|>"


def test_template_renders_a_plain_chat(tokenizer) -> None:
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi there"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt == (
        f"<|im_start|>system\n{DEFAULT_SYSTEM_PROMPT}<|im_end|>\n"
        "<|im_start|>user\nHi there<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    with_system = tokenizer.apply_chat_template(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
        ],
        tokenize=False,
    )
    assert with_system == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"


def test_template_renders_tools_calls_and_results_the_hermes_way(tokenizer) -> None:
    prompt = tokenizer.apply_chat_template(
        TOOL_CONVERSATION, tools=TOOLS, tokenize=False, add_generation_prompt=True
    )
    system = prompt.split("<|im_end|>")[0]
    assert "<tools>\n" + json.dumps(TOOLS[0]) + "\n</tools>" in system
    assert "<tool_call></tool_call> XML tags" in system
    assert (
        '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
        "</tool_call><|im_end|>\n"
    ) in prompt
    assert '<|im_start|>user\n<tool_response>\n{"temperature": 21}\n</tool_response><|im_end|>\n' in prompt
    assert prompt.endswith("<|im_start|>assistant\n")


def test_template_accepts_openai_style_string_arguments(tokenizer) -> None:
    conversation = json.loads(json.dumps(TOOL_CONVERSATION))
    conversation[1]["tool_calls"][0]["function"]["arguments"] = '{"city": "Paris"}'
    prompt = tokenizer.apply_chat_template(conversation, tools=TOOLS, tokenize=False)
    assert '{"name": "get_weather", "arguments": {"city": "Paris"}}' in prompt


def test_hermes_parser_reads_what_the_template_writes(tokenizer) -> None:
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.tool_parsers.hermes_tool_parser import Hermes2ProToolParser

    prompt = tokenizer.apply_chat_template(TOOL_CONVERSATION[:2], tools=TOOLS, tokenize=False)
    assistant_turn = prompt.rsplit("<|im_start|>assistant\n", 1)[1].removesuffix("<|im_end|>\n")
    request = ChatCompletionRequest(model="tiny", messages=TOOL_CONVERSATION[:1], tools=TOOLS)
    parsed = Hermes2ProToolParser(tokenizer).extract_tool_calls(assistant_turn, request)
    assert parsed.tools_called
    assert [(c.function.name, json.loads(c.function.arguments)) for c in parsed.tool_calls] == [
        ("get_weather", {"city": "Paris"})
    ]


def test_vllm_passes_content_parts_to_the_template(tokenizer) -> None:
    from vllm.renderers.hf import _detect_content_format

    # "openai" means vLLM hands image parts to the template instead of prepending its own
    # placeholder, so the template decides where "<image>" goes.
    assert _detect_content_format(tokenizer.chat_template, default="string") == "openai"


def test_llm_template_drops_image_parts(tiny_llm: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llm)
    content = [{"type": "image"}, {"type": "text", "text": "What is this?"}]
    prompt = tok.apply_chat_template([{"role": "user", "content": content}], tokenize=False)
    assert "<|im_start|>user\nWhat is this?<|im_end|>" in prompt


@pytest.mark.parametrize(("size", "tiles"), [((32, 32), 5), ((200, 100), 3), ((30, 300), 3)])
def test_vlm_template_and_processor_expand_images(vlm_processor, size: tuple[int, int], tiles: int) -> None:
    # The processor's own template (used by vLLM for requests without tools) is the tokenizer's.
    assert vlm_processor.chat_template == vlm_processor.tokenizer.chat_template
    content = [{"type": "image"}, {"type": "text", "text": "What is in this image?"}]
    prompt = vlm_processor.apply_chat_template(
        [{"role": "user", "content": content}], add_generation_prompt=True
    )
    assert "<|im_start|>user\n<image>What is in this image?<|im_end|>" in prompt

    inputs = vlm_processor(images=[Image.new("RGB", size, (255, 0, 0))], text=prompt)
    image_token = vlm_processor.tokenizer.convert_tokens_to_ids("<image>")
    n_image_tokens = inputs["input_ids"][0].count(image_token)
    # Images are scaled to a 128-pixel longest edge and cut into 64x64 tiles of 16x16 patches,
    # pixel-shuffled by 2: 4 tokens per tile, plus 4 for the global view.
    assert n_image_tokens == tiles * vlm_processor.image_seq_len == tiles * 4
    assert inputs["pixel_values"].shape[1:] == (tiles, 3, 64, 64)
