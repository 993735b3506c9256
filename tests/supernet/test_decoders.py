"""Decoder LMs as supernets: exactness per family (Llama, tied Llama, Qwen2, Qwen3, GPT-2) on right-padded
batches, the blocks a shallower arch keeps, grouped-query heads sliced in whole groups, the causal-lm task,
and the decoders and layouts that are refused."""

import json

import pytest
import torch

from search_space import Arch, InputError, LayerArch, SearchSpace
from supernet.model import Supernet
from supernet.pretrained.families import PretrainedError
from supernet.pretrained.importance import block_influence
from supernet.pretrained.importing import full_supernet, import_pretrained, model_space, open_pretrained
from supernet.task_spec import TaskSpec
from supernet.tasks import TaskError, load_task
from supernet.training.train import evaluate
from tests.supernet.pretrained_models import DECODERS, hf_model, save_decoder_model

SEQ_LEN = 12


def _spec(model) -> TaskSpec:
    vocab = model.config.vocab_size
    return TaskSpec("tokens", vocab, SEQ_LEN, vocab, model.family.style(model.config))


@pytest.fixture(scope="module", params=DECODERS)
def decoder(request, tmp_path_factory):
    return open_pretrained(save_decoder_model(tmp_path_factory.mktemp(request.param), request.param))


def test_the_largest_arch_is_the_model_on_padded_batches(decoder):
    """Logits of every real token equal the Hugging Face model's (atol 1e-4), in the supernet, in the extracted
    model and after the import has put blocks, head groups and neurons in importance order."""
    reference = hf_model(decoder.path).eval()
    ids = torch.randint(0, decoder.config.vocab_size - 1, (3, SEQ_LEN), generator=torch.Generator().manual_seed(0))
    attention = torch.ones_like(ids)
    attention[1, 7:], attention[2, 3:] = 0, 0  # right-padded: a token sees no padding after it
    real = attention.bool()
    spec = _spec(decoder)
    full, report = full_supernet(decoder, spec, seed=0)
    space = SearchSpace.from_dict(model_space(decoder))
    ordered, ordered_report = import_pretrained(decoder, space, spec, 0, ids)
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=attention).logits
        for model in (full, ordered):
            largest = model.space.largest()
            assert (model(ids, largest) - expected)[real].abs().max() < 1e-4
            assert (model.extract(largest).eval()(ids) - expected)[real].abs().max() < 1e-4
    assert not report.new  # every weight from the checkpoint
    assert "blocks, heads and neurons in importance order" in ordered_report.summary()
    tied = decoder.family.style(decoder.config).tie_embeddings
    assert tied == (decoder.family.name == "gpt2" or decoder.path.name.startswith("llama-tied"))
    assert (ordered.head.classifier.weight is ordered.stem.embed.weight) == tied
    static = ordered.extract(ordered.space.largest())
    assert (static.head.classifier.weight is static.stem.embed.weight) == tied  # tied in the static model too


def test_a_shallower_arch_keeps_the_most_important_blocks_in_the_models_order(tmp_path):
    model = open_pretrained(save_decoder_model(tmp_path / "llama", layers=4))
    spec = _spec(model)
    calibration = torch.randint(0, 256, (8, SEQ_LEN), generator=torch.Generator().manual_seed(1))
    full, _ = full_supernet(model, spec, seed=0)
    influence = block_influence(full, calibration)
    space = SearchSpace.from_dict(model_space(model))
    supernet, report = import_pretrained(model, space, spec, 0, calibration)
    order = supernet.block_order.tolist()
    assert report.orders["blocks"] == [order] and sorted(order) == [0, 1, 2, 3]
    assert order == torch.argsort(influence, descending=True, stable=True).tolist()
    ids = calibration[:2]
    layers = [LayerArch(2, 12, "sliding", 8), LayerArch(4, 36, "causal", 32), LayerArch(2, 48, "none", 8)]
    for depth in (1, 2, 3):
        arch = Arch(32, tuple(layers[:depth]))
        space.validate(arch)
        kept = supernet.slots(arch)
        assert sorted(kept) == list(range(depth))  # the `depth` most important blocks ...
        assert [order[s] for s in kept] == sorted(order[:depth])  # ... run in the model's order
        with torch.no_grad():  # whole query groups with their key-value heads, 4- and 8-bit layers alike
            assert torch.allclose(supernet(ids, arch), supernet.extract(arch).eval()(ids), atol=1e-5)


def test_a_decoder_space_keeps_whole_groups_and_causal_mixers(tmp_path):
    model = open_pretrained(save_decoder_model(tmp_path / "llama"))
    data = model_space(model)
    assert data["layer"]["num_heads"] == [2, 4] and data["layer"]["mixer"] == ["causal", "sliding", "none"]
    assert data["depth_heads"] is False and 4 not in data["layer"]["bits"]  # 32-input blocks: sizes of 16 are not
    spec = _spec(model)
    for layer, message in (({"num_heads": [3, 4]}, "not a multiple of the model's 2 query heads per key-value"),
                           ({"mixer": ["causal", "softmax"]}, "lets a token see later ones")):
        bad = SearchSpace.from_dict({**data, "layer": {**data["layer"], **layer}})
        with pytest.raises(InputError, match=message):
            Supernet(bad, spec)
    with pytest.raises(PretrainedError, match="causal must come first"):
        model_space(model, mixers=("sliding", "causal"))


@pytest.mark.parametrize("change, message", [
    ({"num_key_value_heads": 3}, "num_key_value_heads 3 does not divide num_attention_heads 4"),
    ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, "rope_type 'linear' are not supported"),
])
def test_decoders_it_cannot_compute_exactly_are_refused(tmp_path, change, message):
    folder = save_decoder_model(tmp_path / "llama")
    config = json.loads((folder / "config.json").read_text())
    if "rope_scaling" in change:  # as a Llama 3 checkpoint writes it
        config["rope_parameters"] = {**config.get("rope_parameters", {}), **change["rope_scaling"]}
    config.update(change)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(PretrainedError, match=message):
        open_pretrained(folder)


def test_the_causal_lm_task_packs_text_into_next_token_sequences(tmp_path):
    folder = save_decoder_model(tmp_path / "gpt2", "gpt2")
    corpus = tmp_path / "corpus.jsonl"
    documents = [f"line {i}: the cat sat on the mat" for i in range(40)]
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in documents))
    task = load_task("causal-lm", seed=0, options={"train": str(corpus), "seq_len": SEQ_LEN, "model": str(folder)})
    x, y = task.split("train")
    assert task.metric == "perplexity" and x.shape[1] == SEQ_LEN and y.shape == x.shape
    assert torch.equal(x[:, 1:], y[:, :-1])  # each label is the next token
    tokens = sum(len(d.encode()) + 1 for d in documents)  # a byte a token, and the end of each document
    held = [len(task.split(s)[0]) for s in ("val", "test")]
    assert len(x) + sum(held) == (tokens - 1) // SEQ_LEN and min(held) >= 1  # every sequence in one split
    assert task.spec.style.causal and task.spec.num_classes == task.spec.input_dim == 257
    supernet = Supernet(SearchSpace.from_dict(model_space(open_pretrained(folder))), task.spec)
    uniform = evaluate(supernet, supernet.space.largest(), task)
    assert 1.0 < uniform < 2 * 257  # exp of the loss per token: about the vocabulary for an untrained model
    for options, message in (({"seq_len": 65}, "exceeds the 64 positions"),
                             ({"seq_len": 64, "train": str(_short(tmp_path))}, "too few for one sequence")):
        with pytest.raises(TaskError, match=message):
            load_task("causal-lm", seed=0, options={"train": str(corpus), "model": str(folder), **options})


def _short(tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("too short")
    return short


def test_the_onnx_runtime_decoder_generates_what_the_model_does(tmp_path):
    """The decoder artifact (KV cache, ONNX Runtime GenAI's names) continues prompts as the torch model does for
    32 greedy tokens, with full-precision, 4-bit, sliding-window and attention-free layers; its tied LM head reads
    the token table, stored once; a target times one token at its context, and refuses a context past the model's
    positions."""
    import onnx

    from predictors.measure import example_input
    from predictors.runtimes.onnx_decoder import DecoderProgram, build_decoder
    from predictors.target import HardwareTarget
    from supernet.kv_cache import DecoderStep, greedy

    model = open_pretrained(save_decoder_model(tmp_path / "llama", "llama-tied", layers=3, hidden_size=64,
                                               intermediate_size=128, head_dim=32))
    spec = _spec(model)
    supernet, _ = full_supernet(model, spec, seed=0)
    arch = Arch(64, (LayerArch(4, 128, "causal", 32), LayerArch(2, 64, "none", 4), LayerArch(2, 96, "sliding", 4)))
    static = supernet.extract(arch).eval()
    target = HardwareTarget(context=40)
    program = target.deploy(static, example_input(spec, target))
    assert isinstance(program, DecoderProgram) and program.context == 40
    names = [i.name for i in program.session.get_inputs()]
    assert names == ["input_ids", "attention_mask", "position_ids", *[f"past_key_values.{i}.{p}" for i in (0, 1)
                                                                      for p in ("key", "value")]]
    assert [o.name for o in program.session.get_outputs()][:3] == ["logits", "present.0.key", "present.0.value"]
    step = DecoderStep(static).eval()
    prompt = torch.randint(0, 256, (2, 6), generator=torch.Generator().manual_seed(2))
    assert torch.equal(greedy(step, step.layout, prompt, 32), greedy(program.step, step.layout, prompt, 32))
    tables = [t for t in onnx.load_from_string(build_decoder(static)).graph.initializer if list(t.dims) == [257, 64]]
    assert len(tables) == 1  # 257 x 64 fp32: 64 KiB and more are stored once where equal
    logits, *present = program.runner(prompt)()  # one token at the context: the cache then holds 40
    assert logits.shape == (2, 1, 257) and present[0].shape == (2, 2, 40, 32)
    with pytest.raises(InputError, match="context of 65 tokens is past the 64 positions"):
        example_input(spec, HardwareTarget(context=65))
