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
    from transformers import AutoConfig, AutoModelForImageClassification, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(folder)
    auto = AutoModelForImageClassification if config.model_type == "vit" else AutoModelForSequenceClassification
    return auto.from_pretrained(folder).eval()
