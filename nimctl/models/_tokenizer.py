"""Train the demo models' byte-level BPE tokenizer on the built-in corpus.

Byte-level BPE starts from all 256 bytes, so any text encodes and decodes back to itself;
the corpus only decides which merges exist. Training is single-threaded on a fixed
corpus, so the vocabulary and merges are the same on every run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from nimctl.models._corpus import corpus_lines

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
# Chat-control tokens: special, so a plain decode hides them.
CHAT_SPECIAL_TOKENS: tuple[str, ...] = (PAD_TOKEN, IM_START, IM_END)
# Tool tags are ordinary added tokens (as in Qwen2.5): single ids, kept in decoded text, so
# the hermes parser finds "<tool_call>" in the output and its id in the vocabulary.
TOOL_TOKENS: tuple[str, ...] = (
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
    "<tools>",
    "</tools>",
)

# Idefics3's processor writes these into the prompt around each image; each must be one
# token so that the processor's count of image tokens matches the tokenized prompt.
IMAGE_TOKEN = "<image>"
FAKE_IMAGE_TOKEN = "<fake_token_around_image>"
GLOBAL_IMAGE_TOKEN = "<global-img>"
END_OF_UTTERANCE = "<end_of_utterance>"
IDEFICS3_GRID_TOKENS: tuple[str, ...] = tuple(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7))
IDEFICS3_SPECIAL_TOKENS: tuple[str, ...] = (
    FAKE_IMAGE_TOKEN,
    IMAGE_TOKEN,
    END_OF_UTTERANCE,
    GLOBAL_IMAGE_TOKEN,
    *IDEFICS3_GRID_TOKENS,
)

VOCAB_SIZE = 1024


def train_tokenizer(
    chat_template: str,
    *,
    extra_special_tokens: Sequence[str] = (),
    model_max_length: int,
) -> PreTrainedTokenizerFast:
    """A fast tokenizer trained on the corpus, with the chat and tool tokens added."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=list(CHAT_SPECIAL_TOKENS),
    )
    tokenizer.train_from_iterator(corpus_lines(), trainer=trainer)
    tokenizer.add_tokens([AddedToken(tok, special=False, normalized=False) for tok in TOOL_TOKENS])
    if extra_special_tokens:
        tokenizer.add_special_tokens(
            [AddedToken(tok, special=True, normalized=False) for tok in extra_special_tokens]
        )

    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=None,
        eos_token=IM_END,
        pad_token=PAD_TOKEN,
        unk_token=None,
        chat_template=chat_template,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
        padding_side="left",
    )
