"""Tiny Hugging Face models built from a config (random weights), saved with `save_pretrained` to a
directory, with a tiny tokenizer built with `tokenizers` or an image processor: what the pretrained
import is tested on, without a download."""

from __future__ import annotations

from pathlib import Path

import torch

WORDS = ["the", "a", "cat", "dog", "sat", "ran", "on", "mat", "fast", "slow", "red", "blue", "big", "small",
         "good", "bad", "very", "not", "is", "was"]


def tiny_tokenizer(pad_first: bool = True):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] if pad_first else ["[CLS]", "[PAD]", "[SEP]", "[UNK]"]
    vocab = {token: i for i, token in enumerate(special + WORDS)}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]"), len(vocab), vocab["[PAD]"]


def save_text_model(folder: Path, family: str = "bert", num_labels: int = 3, seed: int = 0, layers: int = 2,
                    with_head: bool = True, **config) -> Path:
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        BertModel,
        RobertaConfig,
        RobertaForSequenceClassification,
        RobertaModel,
    )

    tokenizer, vocab, pad = tiny_tokenizer(pad_first=family == "bert")
    torch.manual_seed(seed)
    common = dict(vocab_size=vocab, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                  intermediate_size=48, max_position_embeddings=40, num_labels=num_labels, pad_token_id=pad,
                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **config)
    if family == "bert":
        model = (BertForSequenceClassification if with_head else BertModel)(BertConfig(**common))
    else:
        model = (RobertaForSequenceClassification if with_head else RobertaModel)(
            RobertaConfig(type_vocab_size=1, **common))
    with torch.no_grad():  # LayerNorms away from their init, so that an unmapped one shows
        for name, parameter in model.named_parameters():
            if "LayerNorm" in name:
                parameter.add_(0.1 * torch.randn_like(parameter))
    model.eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def save_vit_model(folder: Path, num_labels: int = 3, seed: int = 0, image_size: int = 16, patch: int = 4) -> Path:
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(seed)
    config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                       image_size=image_size, patch_size=patch, num_labels=num_labels, hidden_dropout_prob=0.0,
                       attention_probs_dropout_prob=0.0)
    model = ViTForImageClassification(config)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "layernorm" in name:
                parameter.add_(0.1 * torch.randn_like(parameter))
    model.eval().save_pretrained(folder)
    ViTImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(folder)
    return folder


def hf_model(folder: Path):
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForImageClassification,
        AutoModelForSequenceClassification,
    )

    config = AutoConfig.from_pretrained(folder)
    auto = {"vit": AutoModelForImageClassification, **dict.fromkeys(("llama", "qwen2", "qwen3", "gpt2"),
                                                                     AutoModelForCausalLM)}
    return auto.get(config.model_type, AutoModelForSequenceClassification).from_pretrained(folder).eval()


DECODERS = ("llama", "llama-tied", "qwen2", "qwen3", "gpt2")


def byte_tokenizer():
    """A byte-level BPE tokenizer with no merges (256 byte tokens and an end-of-text token), as GPT-2's and
    Llama 3's tokenizers are laid out."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {token: i for i, token in enumerate(sorted(alphabet))}
    vocab["<|endoftext|>"] = len(vocab)
    tokenizer = Tokenizer(models.BPE(vocab, [], unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>", bos_token="<|endoftext|>")


def save_decoder_model(folder: Path, family: str = "llama", seed: int = 0, layers: int = 2, **config) -> Path:
    """A tiny decoder LM of `family` (one of DECODERS; "llama-tied": its LM head is the token table) with a
    byte-level tokenizer (257 tokens), its norms away from their init."""
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
        Qwen3Config,
        Qwen3ForCausalLM,
    )

    tokenizer = byte_tokenizer()
    torch.manual_seed(seed)
    common = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=48, num_hidden_layers=layers,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                  eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id)
    if family == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=layers, n_head=4,
                                           n_positions=64, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                           eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id,
                                           **config))
    else:
        classes = {"llama": (LlamaConfig, LlamaForCausalLM), "llama-tied": (LlamaConfig, LlamaForCausalLM),
                   "qwen2": (Qwen2Config, Qwen2ForCausalLM), "qwen3": (Qwen3Config, Qwen3ForCausalLM)}[family]
        extra = {"tie_word_embeddings": family == "llama-tied", **({"head_dim": 16} if family == "qwen3" else {})}
        model = classes[1](classes[0](**{**common, **extra, **config}))
    with torch.no_grad():  # norms away from their init, so that an unmapped one shows
        for name, parameter in model.named_parameters():
            if "norm" in name or "ln_" in name:
                parameter.add_(0.1 * torch.randn_like(parameter))
    model.eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
