"""Pretrained Hugging Face models as supernets: exactness per family on padded batches of uneven
lengths, importance order, the padding mask in every kernel, and refused models."""

import dataclasses
import json

import pytest
import torch

from search_space import Arch, LayerArch, SearchSpace
from supernet.model import Supernet
from supernet.pretrained.families import PretrainedError
from supernet.pretrained.importance import importance, reorder_by_importance
from supernet.pretrained.importing import full_supernet, import_pretrained, model_space, open_pretrained
from supernet.task_spec import TaskSpec
from supernet.tasks.user_data import patches
from tests.supernet.pretrained_models import hf_model, save_text_model, save_vit_model, tiny_tokenizer

SENTENCES = ["the cat sat on the mat", "a dog", "very very big red dog ran fast on the mat", "good"]
PAIRS = ["not bad", "the mat", "slow", "a very small cat was on a big blue mat"]
SEQ_LEN = 16


@pytest.fixture(scope="module", params=["bert", "roberta"])
def text_model(request, tmp_path_factory):
    return request.param, save_text_model(tmp_path_factory.mktemp(request.param), request.param)


@pytest.fixture(scope="module")
def vit_model(tmp_path_factory):
    return save_vit_model(tmp_path_factory.mktemp("vit"))


def _text_batch(family: str):
    tokenizer = tiny_tokenizer(pad_first=family == "bert")[0]
    encoded = tokenizer(SENTENCES, PAIRS, padding="max_length", max_length=SEQ_LEN, truncation=True,
                        return_tensors="pt", return_token_type_ids=True)
    if family == "roberta":  # one token type, as RoBERTa's own tokenizer gives
        encoded["token_type_ids"].zero_()
    lengths = encoded["attention_mask"].sum(dim=1)
    assert len(set(lengths.tolist())) > 2 and int(lengths.min()) < SEQ_LEN  # padded, of uneven lengths
    return encoded, torch.stack([encoded["input_ids"], encoded["token_type_ids"]], dim=-1)


def _text_spec(model, classes=3):
    return TaskSpec("text", model.config.vocab_size, SEQ_LEN, classes, style=model.family.style(model.config))


def test_imported_text_encoder_computes_what_the_pretrained_model_computes(text_model):
    family, folder = text_model
    model = open_pretrained(folder)
    supernet, report = full_supernet(model, _text_spec(model), seed=0)
    assert report.new == []  # every weight came from the checkpoint, classifier included
    encoded, x = _text_batch(family)
    with torch.no_grad():
        expected = hf_model(folder)(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"],
                                    token_type_ids=encoded["token_type_ids"]).logits
        largest = supernet.space.largest()
        assert (supernet(x, largest) - expected).abs().max() < 1e-4
        static = supernet.extract(largest).eval()
        assert (static(x) - expected).abs().max() < 1e-4


def test_imported_vit_computes_what_the_pretrained_model_computes(vit_model):
    model = open_pretrained(vit_model)
    spec = TaskSpec("features", 3 * 4 * 4, 16, 3, style=model.family.style(model.config))
    supernet, _ = full_supernet(model, spec, seed=0)
    pixels = torch.randn(5, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = hf_model(vit_model)(pixel_values=pixels).logits
        assert (supernet(patches(pixels, 4), supernet.space.largest()) - expected).abs().max() < 1e-4
        assert (supernet.extract(supernet.space.largest())(patches(pixels, 4)) - expected).abs().max() < 1e-4


def test_onnx_artifact_of_an_imported_model_computes_the_same(text_model):
    from predictors.runtimes import runtime_named

    family, folder = text_model
    model = open_pretrained(folder)
    supernet, _ = full_supernet(model, _text_spec(model), seed=0)
    encoded, x = _text_batch(family)
    for arch in (supernet.space.largest(), supernet.space.smallest()):
        static = supernet.extract(arch).eval()
        program = runtime_named("onnxruntime").deploy(static, x)
        with torch.no_grad():
            assert (program(x) - static(x)).abs().max() < 1e-4  # fp32 layers: the same arithmetic


def test_importance_order_keeps_the_function_and_sorts_the_units(text_model):
    family, folder = text_model
    model = open_pretrained(folder)
    supernet, _ = full_supernet(model, _text_spec(model), seed=0)
    _, x = _text_batch(family)
    largest = supernet.space.largest()
    with torch.no_grad():
        before = supernet(x, largest)
    orders = reorder_by_importance(supernet, x)
    with torch.no_grad():
        assert (supernet(x, largest) - before).abs().max() < 1e-5  # the full model is unchanged
    assert any(order != sorted(order) for order in orders["heads"] + orders["neurons"])  # something moved
    heads, neurons = importance(supernet, x)
    for scores in heads + neurons:  # measured again: now in descending order
        assert torch.all(scores[:-1] >= scores[1:] - 1e-6)


def test_import_into_a_smaller_space_slices_the_importance_ordered_model(text_model):
    family, folder = text_model
    model = open_pretrained(folder)
    spec = _text_spec(model)
    data = model_space(model)
    data["layer"]["num_heads"] = [1, 2]
    data["layer"]["mlp_dim"] = [12, 24]
    data["quantize_embeddings"] = False  # as the full model: fp32 tables, so that they compute alike
    space = SearchSpace.from_dict(data)
    _, x = _text_batch(family)
    supernet, report = import_pretrained(model, space, spec, seed=0, calibration=x)
    assert report.orders is not None
    full, _ = full_supernet(model, spec, seed=0)
    reorder_by_importance(full, x)
    arch = space.largest()
    with torch.no_grad():
        assert torch.equal(supernet(x, arch), full(x, arch))  # the same first heads and neurons
    too_wide = SearchSpace.from_dict({**model_space(model), "depth": [3]})
    with pytest.raises(PretrainedError, match="exceeds the model's 2 layers"):
        import_pretrained(model, too_wide, spec, seed=0, calibration=None)


def test_new_mixers_and_layer_widths_leave_the_imported_model_as_the_largest_arch(text_model):
    """The model has no weight for a convolution's kernel, a join or a stage boundary's projection: they
    start on their own, and the largest arch (softmax, every layer at the model's width, no boundary) is
    still exactly the model."""
    family, folder = text_model
    model = open_pretrained(folder)
    spec = _text_spec(model)
    data = model_space(model, mixers=("softmax", "fourier", "conv3"))
    data["quantize_embeddings"] = False
    hidden = data["embed_dim"][0]
    data["per_layer"] = [{"layers": [1], "width": [hidden // 2, hidden], "reduce": [1, 2]}]
    space = SearchSpace.from_dict(data)
    supernet, _ = import_pretrained(model, space, spec, seed=0, calibration=None)
    full, _ = full_supernet(model, spec, seed=0)
    _, x = _text_batch(family)
    largest = space.largest()
    assert largest.layers[1].width == hidden and {layer.mixer for layer in largest.layers} == {"softmax"}
    with torch.no_grad():
        assert torch.equal(supernet(x, largest), full(x, full.space.largest()))
        narrower = Arch(hidden, (largest.layers[0], LayerArch(1, largest.layers[1].mlp_dim, "conv3", 32, hidden // 2,
                                                               reduce=2)))
        assert torch.isfinite(supernet(x, narrower)).all()
        torch.testing.assert_close(supernet.extract(narrower).eval()(x), supernet(x, narrower), atol=1e-5, rtol=0)


def test_a_vit_in_stages_keeps_the_model_as_its_largest_arch(vit_model):
    """A ViT space with a boundary before layer 1: the largest arch (no boundary) is the model; an arch
    that merges the 4x4 patch grid 2x2 keeps [CLS] apart and extracts exactly."""
    model = open_pretrained(vit_model)
    spec = TaskSpec("features", 3 * 4 * 4, 16, 3, style=model.family.style(model.config), patch_grid=(4, 4))
    data = model_space(model)
    data["per_layer"] = [{"layers": [1], "reduce": [1, 2]}]
    space = SearchSpace.from_dict(data)
    supernet, _ = import_pretrained(model, space, spec, seed=0, calibration=None)
    pixels = torch.randn(5, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    x = patches(pixels, 4)
    largest = space.largest()
    staged = Arch(largest.embed_dim, (largest.layers[0], dataclasses.replace(largest.layers[1], reduce=2)))
    with torch.no_grad():
        assert (supernet(x, largest) - hf_model(vit_model)(pixel_values=pixels).logits).abs().max() < 1e-4
        torch.testing.assert_close(supernet.extract(staged).eval()(x), supernet(x, staged), atol=1e-5, rtol=0)


@pytest.mark.parametrize("attention", ["softmax", "linear", "local", "fourier", "conv3"])
def test_padding_changes_nothing_in_any_kernel(text_model, attention):
    """A text padded to more tokens gives the same logits: no kernel lets a padded key in, a Fourier
    layer transforms each text over its own tokens, a convolution sees zeros beyond them."""
    family, folder = text_model
    model = open_pretrained(folder)
    data = model_space(model)
    data["local_window"] = 2
    data["layer"]["mixer"] = list(dict.fromkeys(["softmax", attention]))
    space = SearchSpace.from_dict(data)
    supernet = Supernet(space, _text_spec(model), seed=0).eval()
    tokenizer = tiny_tokenizer(pad_first=family == "bert")[0]
    arch = space.largest()
    arch = type(arch)(arch.embed_dim, tuple(type(layer)(layer.num_heads, layer.mlp_dim, attention, 32)
                                           for layer in arch.layers))
    outputs = []
    for length in (10, SEQ_LEN):
        ids = tokenizer(SENTENCES[:2], padding="max_length", max_length=length, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            outputs.append(supernet(torch.stack([ids, torch.zeros_like(ids)], dim=-1), arch))
    assert (outputs[0] - outputs[1]).abs().max() < 1e-5


def test_sliding_local_attention_honours_the_mask():
    from supernet.mixers.attention import LocalAttention

    kernel = LocalAttention(window=3)
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 130, 8, generator=generator) for _ in range(3))
    mask = torch.ones(2, 130, dtype=torch.bool)
    mask[0, 100:] = False
    sliding = kernel(q, k, v, mask)
    masked = torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=((torch.arange(130)[None] - torch.arange(130)[:, None]).abs() <= 3)
        & (mask[:, None, None, :] | torch.eye(130, dtype=torch.bool)))
    assert torch.isfinite(sliding).all()
    assert (sliding - masked).abs().max() < 1e-5


def test_bare_encoder_gets_a_new_classifier_and_other_labels_a_new_one(tmp_path):
    bare = save_text_model(tmp_path / "bare", with_head=False)
    model = open_pretrained(bare)
    _, report = full_supernet(model, _text_spec(model), seed=0)
    assert report.new == ["head.classifier"]  # the pooler is imported, the classifier is new
    named = save_text_model(tmp_path / "named", id2label={0: "neg", 1: "neu", 2: "pos"},
                            label2id={"neg": 0, "neu": 1, "pos": 2})
    model = open_pretrained(named)
    reordered, _ = full_supernet(model, _text_spec(model), seed=0, labels=["pos", "neg", "neu"])
    theirs = hf_model(named).classifier.weight
    assert torch.equal(reordered.head.classifier.weight, theirs[[2, 0, 1]])  # rows follow the task's labels
    _, report = full_supernet(model, _text_spec(model), seed=0, labels=["a", "b", "c"])
    assert report.new == ["head.classifier"]


def test_bad_models_are_refused_with_one_line(tmp_path, text_model):
    _, folder = text_model
    with pytest.raises(PretrainedError, match="no such directory"):
        open_pretrained(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PretrainedError, match="no config.json"):
        open_pretrained(tmp_path / "empty")
    t5 = tmp_path / "t5"
    t5.mkdir()
    (t5 / "config.json").write_text(json.dumps({"model_type": "t5"}))
    with pytest.raises(PretrainedError, match="not supported; supported: bert, .*gpt2, .*vit"):
        open_pretrained(t5)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((folder / "config.json").read_text())
    (pickled / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(PretrainedError, match="pickled"):
        open_pretrained(pickled)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(PretrainedError, match="unreadable config.json"):
        open_pretrained(broken)
    # weights that do not match the config: the config says a wider model
    mismatched = tmp_path / "mismatched"
    mismatched.mkdir()
    config = json.loads((folder / "config.json").read_text())
    (mismatched / "config.json").write_text(json.dumps({**config, "intermediate_size": 64}))
    (mismatched / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    model = open_pretrained(mismatched)
    with pytest.raises(PretrainedError, match="do not match the config"):
        full_supernet(model, _text_spec(model), seed=0)
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "config.json").write_text((folder / "config.json").read_text())
    (garbage / "model.safetensors").write_bytes(b"\x00" * 64)
    model = open_pretrained(garbage)
    with pytest.raises(PretrainedError, match="not readable safetensors"):
        full_supernet(model, _text_spec(model), seed=0)


def test_training_from_a_pretrained_teacher_resumes_to_the_same_weights(tmp_path, monkeypatch):
    """The frozen teacher is kept in the checkpoint: stopping after the teacher's phase and going on
    ends where one uninterrupted run ends."""
    from supernet.tasks import Task
    from supernet.training.train import TrainSettings, train_supernet

    folder = save_text_model(tmp_path / "bert", with_head=False)
    model = open_pretrained(folder)
    tokenizer = tiny_tokenizer()[0]
    generator = torch.Generator().manual_seed(0)
    texts = [" ".join(WORDS_FOR_TEST[i] for i in torch.randint(len(WORDS_FOR_TEST), (5,), generator=generator))
             for _ in range(48)]
    encoded = tokenizer(texts, padding="max_length", max_length=SEQ_LEN, return_tensors="pt",
                        return_token_type_ids=True)
    x = torch.stack([encoded["input_ids"], encoded["token_type_ids"]], dim=-1)
    y = torch.tensor([int("good" in t) for t in texts])
    spec = _text_spec(model, classes=2)
    task = Task("text", spec, {"train": (x, y), "val": (x, y), "test": (x, y)}, labels=["0", "1"])
    space = SearchSpace.from_dict(model_space(model))
    settings = TrainSettings(steps=10, batch_size=8, warmup_steps=1, lr=1e-3, sandwich_random=1,
                             teacher="pretrained", teacher_steps=4, checkpoint_every=6)
    whole, _ = import_pretrained(model, space, spec, seed=0, calibration=x[:16])
    train_supernet(whole, task, settings, seed=0, checkpoint=tmp_path / "whole.pt", progress=False)
    import supernet.training.train as train_module

    save = train_module.save_checkpoint

    def save_then_die(*args, **kwargs):
        save(*args, **kwargs)
        raise SystemExit("killed after the checkpoint of step 6")

    monkeypatch.setattr(train_module, "save_checkpoint", save_then_die)
    parts, _ = import_pretrained(model, space, spec, seed=0, calibration=x[:16])
    with pytest.raises(SystemExit):
        train_supernet(parts, task, settings, seed=0, checkpoint=tmp_path / "parts.pt", progress=False)
    monkeypatch.undo()
    state = torch.load(tmp_path / "parts.pt", weights_only=True)
    assert state["step"] == 6
    assert "teacher" in state  # taken after the teacher's 4 steps, kept for the rest
    resumed = Supernet(space, spec, seed=0)
    train_supernet(resumed, task, settings, seed=0, checkpoint=tmp_path / "parts.pt", progress=False)
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name


WORDS_FOR_TEST = ["the", "cat", "dog", "good", "bad", "mat", "red", "blue"]


def test_each_depth_s_head_starts_as_the_model_s_head(text_model):
    family, folder = text_model
    model = open_pretrained(folder)
    space = SearchSpace.from_dict(model_space(model))
    assert space.depth_heads and space.depths == (1, 2)
    supernet, _ = import_pretrained(model, space, _text_spec(model), seed=0, calibration=None)
    head = supernet.head.state_dict()
    assert head and all(torch.equal(tensor, head[name]) for name, tensor in supernet.exits["1"].state_dict().items())
    full, _ = full_supernet(model, _text_spec(model), seed=0)
    _, x = _text_batch(family)
    fp32_tables = SearchSpace.from_dict({**model_space(model), "quantize_embeddings": False})
    exact, _ = import_pretrained(model, fp32_tables, _text_spec(model), seed=0, calibration=None)
    with torch.no_grad():  # the largest arch is still the model; with int8 tables, nearly
        expected = full(x, full.space.largest())
        assert torch.allclose(exact(x, fp32_tables.largest()), expected, atol=1e-5)
        assert space.quantize_embeddings  # written by from-model for a text model
        assert (supernet(x, space.largest()) - expected).abs().max() < 0.02 * expected.abs().max()
