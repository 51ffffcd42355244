"""Build a small byte-level BPE tokenizer and a random-weight Llama-architecture model on local disk.

Nothing is downloaded: the tokenizer is trained on text we give it (plus the SPRINT format's tags as single
tokens), and the model is created from a config. Both load back with `AutoTokenizer` / `AutoModelForCausalLM`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

_DEFAULT_CORPUS = [
    "The quick brown fox jumps over the lazy dog. 0 1 2 3 4 5 6 7 8 9 + - * / = ( ) [ ] { } \\boxed{42}",
    "Let me think step by step. First, compute 2 + 3 = 5. Then 5 * 4 = 20. So the answer is 20.",
    "Based on execution_1.1, execution_1.2: we combine the results. No prompt to execute.",
    "Okay, so I need to find x. If 2^8 = 4^x then x = 4. Therefore the answer is $\\boxed{4}$.",
]


def format_special_tokens(max_stage: int = 12, max_prompt: int = 8) -> list[str]:
    """Every tag of the SPRINT format up to `max_stage` stages and `max_prompt` prompts per stage."""
    from sprint.format import tags as T

    names = [T.QUESTION, T.THINK, T.FINAL_ANSWER]
    for i in range(1, max_stage + 1):
        names += [T.plan_name(i), T.execution_block_name(i)]
        for j in range(1, max_prompt + 1):
            names += [T.prompt_name(i, j), T.execution_name(i, j)]
    return [t for n in names for t in (T.open_tag(n), T.close_tag(n))]


def build_tiny_tokenizer(out_dir: str | Path, corpus: Iterable[str] | None = None, vocab_size: int = 512,
                         tags_as_tokens: bool = False, chat_template: str | None = None):
    """Train a byte-level BPE tokenizer on `corpus` and save it as a Hugging Face tokenizer in `out_dir`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|bos|>", "<|eos|>", "<|pad|>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(corpus or _DEFAULT_CORPUS), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|bos|>", eos_token="<|eos|>",
                                   pad_token="<|pad|>")
    if tags_as_tokens:
        fast.add_tokens(format_special_tokens(), special_tokens=False)
    if chat_template:
        fast.chat_template = chat_template
    fast.save_pretrained(out_dir)
    return fast


def build_tiny_llama(out_dir: str | Path, tokenizer, *, hidden_size: int = 64, layers: int = 2, heads: int = 4,
                     kv_heads: int = 2, intermediate_size: int = 128, max_position_embeddings: int = 2048,
                     seed: int = 0, initializer_range: float = 0.02):
    """Create a random-weight LlamaForCausalLM sized for `tokenizer` and save it (with the tokenizer) in `out_dir`.

    With the default `initializer_range` a random model mostly repeats its last token; around 0.3 its greedy output
    varies from token to token, which tests of decoding (stops, batching) need.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv_heads, intermediate_size=intermediate_size,
                      max_position_embeddings=max_position_embeddings, bos_token_id=tokenizer.bos_token_id,
                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                      tie_word_embeddings=True, initializer_range=initializer_range)
    model = LlamaForCausalLM(cfg)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return model


def build_tiny_countdown(out_dir: str | Path, *, train: int = 6, val: int = 2, test: int = 2, width: int = 3,
                         seed: int = 2):
    """A small Countdown data build in `out_dir` (problems, both formats with executor records, the tokenizer), as
    `sprint countdown data` writes it; returns the loaded tokenizer. Tests pair it with `build_tiny_llama`."""
    from transformers import AutoTokenizer

    from sprint.tasks.countdown.data import CountdownDataConfig, build_countdown_data
    from sprint.tasks.countdown.traces import TraceConfig

    out_dir = Path(out_dir)
    build_countdown_data(CountdownDataConfig(seed=seed, train=train, val=val, test=test, trace=TraceConfig(width=width)),
                         out_dir, progress=False)
    return AutoTokenizer.from_pretrained(out_dir / "tokenizer")
