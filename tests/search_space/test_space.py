import itertools
import subprocess
import sys

import numpy as np
import pytest

from search_space import Arch, LayerArch, SearchSpace, SpaceError
from search_space.layer_genes import factor_of, has_boundaries
from tests.conftest import CONFIGS


def enumerate_archs(space: SearchSpace) -> set[str]:
    """Brute force: every combination of every decision, deduplicated by key."""
    keys = set()
    for embed_dim in space.embed_dims:
        for depth in space.depths:
            per_layer = []
            for i in range(depth):
                c = space.layers[i]
                per_layer.append([LayerArch(c.heads_of(a, h), m, a, b, None if c.width is None else w, r)
                                  for w in c.widths(embed_dim) for h in c.num_heads for m in c.mlp_dims(w)
                                  for a in c.mixer for b in c.bits for r in c.gene_values("reduce")])
            for layers in itertools.product(*per_layer):
                keys.add(Arch(embed_dim, tuple(layers)).key)
    return keys


def test_cardinality_equals_brute_force_on_tiny(tiny_space):
    assert tiny_space.cardinality() == len(enumerate_archs(tiny_space)) == 624


def test_cardinality_with_colliding_mlp_ratios():
    # ratios 1.0 and 1.01 round to the same hidden size at embed 16 but not at 200
    space = SearchSpace.from_dict({"embed_dim": [16, 200], "depth": [1], "layer": {
        "num_heads": [1], "mlp_ratio": [1.0, 1.01], "attention": ["softmax"], "bits": [32]}})
    assert space.cardinality() == len(enumerate_archs(space)) == 3


def test_layer_widths_and_conv_kernels_are_choices_of_their_own():
    # a ratio MLP follows each layer's own width; layer 0 follows embed_dim
    space = SearchSpace.from_dict({"embed_dim": [16, 32], "depth": [1, 2, 3], "layer": {
        "num_heads": [1, 2], "mlp_ratio": [1, 2], "attention": ["fourier", "conv3", "conv5"], "bits": [32],
        "width": [16, 24, 32]}})
    assert space.layers[0].width is None and space.layers[1].width == (16, 24, 32)
    # a Fourier layer has no heads: 5 (heads, mixer) pairs, not 6
    assert space.cardinality() == len(enumerate_archs(space)) == 2 * (10 + 10 * 30 + 10 * 30 * 30)
    arch = space.largest()
    assert arch.widths == (32, 32, 32) and arch.layers[1].mlp_dim == 64
    assert Arch.from_json(arch.to_json()) == arch and '"width":32' in arch.to_json()
    with pytest.raises(SpaceError, match=r"arch.layers\[1\].width: 20 not in \[16, 24, 32\]"):
        space.validate(Arch(16, (LayerArch(1, 16, "fourier", 32), LayerArch(1, 20, "fourier", 32, width=20))))
    with pytest.raises(SpaceError, match=r"arch.layers\[0\].num_heads: 2, but a fourier layer has no heads"):
        space.validate(Arch(16, (LayerArch(2, 16, "fourier", 32),)))
    with pytest.raises(SpaceError, match=r"arch.layers\[0\].width: 16, but this layer of the space has no width"):
        space.validate(Arch(16, (LayerArch(1, 16, "fourier", 32, width=16),)))
    assert SearchSpace.from_dict(space.to_dict()) == space
    assert "width [16, 24, 32]" in space.summary()


def test_stage_boundaries_are_choices_of_their_own():
    """`reduce` before a layer: from layer 1 on, one more gene, every factor a distinct arch, the largest
    arch without a boundary and the smallest with the most tokens merged."""
    space = SearchSpace.from_dict({"embed_dim": [16], "depth": [1, 2, 3], "layer": {
        "num_heads": [1], "mlp_dim": [16], "attention": ["softmax", "conv3"], "bits": [32], "reduce": [1, 2, 4]}})
    assert space.layers[0].reduce is None and space.layers[2].reduce == (1, 2, 4)
    assert space.cardinality() == len(enumerate_archs(space)) == 2 + 2 * 6 + 2 * 6 * 6
    assert len(space.gene_sizes()) == 2 + 5 * 3
    assert [layer.reduce for layer in space.largest().layers] == [None, 1, 1]
    assert space.smallest().depth == 1
    staged = Arch(16, (LayerArch(1, 16, "softmax", 32), LayerArch(1, 16, "conv3", 32, reduce=4)))
    assert space.decode(space.genome(staged)) == staged and '"reduce":4' in staged.to_json()
    assert factor_of(staged, 0) == 1 and factor_of(staged, 1) == 4 and has_boundaries(staged)
    with pytest.raises(SpaceError, match=r"arch.layers\[1\].reduce: 3 not in \[1, 2, 4\]"):
        space.validate(Arch(16, (staged.layers[0], LayerArch(1, 16, "conv3", 32, reduce=3))))
    with pytest.raises(SpaceError, match=r"arch.layers\[0\].reduce: 2, but this layer of the space starts no stage"):
        space.validate(Arch(16, (LayerArch(1, 16, "softmax", 32, reduce=2),)))
    for bad, message in (({"depth": [1]}, "a space of one layer has no layer after the first"),
                         ({"per_layer": [{"layers": [0], "reduce": [2]}]}, "layer 0 reads the stem's tokens"),
                         ({"per_layer": [{"layers": [3], "reduce": [2]}]}, "before layer 3 is beyond the depth"),
                         ({"layer_reduce": [0]}, "0 is not a positive size"),
                         ({"layer_reduce": [1 << 20]}, "merges more tokens than any sequence holds")):
        data = {"embed_dim": [16], "depth": [1, 2, 3], "layer": {"num_heads": [1], "mlp_dim": [16],
                                                                   "attention": ["softmax"], "bits": [32]}}
        data["layer"]["reduce"] = bad.pop("layer_reduce", [1, 2]) if "per_layer" not in bad else None
        data["layer"] = {k: v for k, v in data["layer"].items() if v is not None}
        with pytest.raises(SpaceError, match=message):
            SearchSpace.from_dict({**data, **bad})


def test_a_space_without_layer_widths_keeps_its_hash_and_its_archs_their_keys(tiny_space):
    assert "width" not in str(tiny_space.to_dict()) and "width" not in tiny_space.largest().to_json()
    assert "reduce" not in str(tiny_space.to_dict()) and "reduce" not in tiny_space.largest().to_json()
    assert len(tiny_space.gene_sizes()) == 2 + 4 * tiny_space.max_depth


def test_arch_uniform_sampling_of_a_space_without_widths_draws_what_it_drew_before(digits_space):
    # the keys and the next draw that the sampler gave before layer widths existed: a study sampling
    # this way samples the same archs as it did
    rng = np.random.default_rng(7)
    assert [digits_space.sample(rng, "arch_uniform").key[:8] for _ in range(5)] == [
        "16559084", "c378e23e", "2d41e8a5", "383b31af", "720a904a"]
    assert rng.random() == pytest.approx(0.7417709473618571, abs=0)


def test_cardinality_is_exact_python_int_for_huge_spaces():
    space = SearchSpace.from_dict({"embed_dim": [64], "depth": [40], "layer": {
        "num_heads": [1, 2, 4], "mlp_dim": [64, 128, 256], "attention": ["softmax", "linear"], "bits": [32, 8, 4]},
        "quant_block_size": 16})
    assert space.cardinality() == 54 ** 40  # beyond float precision


def test_heterogeneous_override_applies_to_named_layers_only(tiny_space):
    assert tiny_space.layers[0].num_heads == (1, 2)
    assert tiny_space.layers[1].num_heads == (2,)


def test_literature_spaces_parse():
    autoformer = SearchSpace.from_yaml(CONFIGS / "spaces" / "autoformer_tiny.yaml")
    assert autoformer.max_depth == 14 and autoformer.max_mlp_dim(0) == 960
    hat = SearchSpace.from_yaml(CONFIGS / "spaces" / "hat_encoder.yaml")
    assert hat.cardinality() == 2 * (2 * 3) ** 6


def test_largest_and_smallest(digits_space):
    big, small = digits_space.largest(), digits_space.smallest()
    assert big.embed_dim == 128 and big.depth == 4 and all(x.mlp_dim == 512 and x.num_heads == 8 for x in big.layers)
    assert small.embed_dim == 64 and small.depth == 1 and small.layers[0].mlp_dim == 64
    assert digits_space.contains(big) and digits_space.contains(small)


def test_space_hash_ignores_name_and_tracks_content(tiny_space):
    data = tiny_space.to_dict()
    renamed = dict(data, name="other")
    renamed["layer"] = renamed.pop("layers")[0]
    same = SearchSpace.from_dict({**renamed, "per_layer": [{"layers": [1], "num_heads": [2]}]})
    assert same.hash == tiny_space.hash
    wider = SearchSpace.from_dict({**renamed, "embed_dim": [16, 32, 48], "per_layer": [{"layers": [1], "num_heads": [2]}]})
    assert wider.hash != tiny_space.hash


def test_validate_names_the_offending_field(tiny_space):
    arch = tiny_space.largest()
    bad_layer = LayerArch(num_heads=1, mlp_dim=32, mixer="softmax", bits=32)  # layer 1 allows only 2 heads
    with pytest.raises(SpaceError, match=r"arch.layers\[1\].num_heads"):
        tiny_space.validate(Arch(arch.embed_dim, (arch.layers[0], bad_layer)))
    with pytest.raises(SpaceError, match="arch.embed_dim"):
        tiny_space.validate(Arch(24, arch.layers))
    with pytest.raises(SpaceError, match="depth 3"):
        tiny_space.validate(Arch(32, arch.layers + arch.layers[:1]))
    with pytest.raises(SpaceError, match=r"layers\[0\].mixer"):
        tiny_space.validate(Arch(32, (LayerArch(2, 32, "flash", 32),)))
    with pytest.raises(SpaceError, match=r"layers\[0\].bits"):
        tiny_space.validate(Arch(32, (LayerArch(2, 32, "softmax", 4),)))


BASE = {"embed_dim": [16], "depth": [1, 2], "layer": {
    "num_heads": [1], "mlp_dim": [16], "attention": ["softmax"], "bits": [32]}}


@pytest.mark.parametrize("change, message", [
    ({"embed_dim": []}, "space.embed_dim: empty choice list"),
    ({"embed_dim": [0, 16]}, "space.embed_dim: 0 is not a positive size"),
    ({"embed_dim": [16.5]}, "space.embed_dim: 16.5 is not an integer"),
    ({"depth": [1, -2]}, "space.depth: -2 is not a positive size"),
    ({"depth": [1, 1]}, "duplicate choices"),
    ({"colour": "red"}, "unknown key"),
    ({"head_dim": 0}, "space.head_dim: expected a positive integer"),
    ({"layer": {**BASE["layer"], "attention": ["softmax", "flash"]}}, "unknown mixer 'flash'"),
    ({"layer": {**BASE["layer"], "bits": [32, 3]}}, "unsupported bit width 3"),
    ({"layer": {**BASE["layer"], "num_heads": []}}, "num_heads: empty choice list"),
    ({"layer": {**BASE["layer"], "mlp_ratio": [2]}}, "either mlp_ratio or mlp_dim"),
    ({"layer": {"num_heads": [1], "attention": ["softmax"], "bits": [32]}}, "missing key"),
    ({"layer": {**{k: v for k, v in BASE["layer"].items() if k != "mlp_dim"}, "mlp_ratio": [-1]}},
     "not a ratio in"),
    ({"layer": {**BASE["layer"], "heads": [2]}}, "unknown key"),
    ({"per_layer": [{"layers": [5], "num_heads": [2]}]}, "not a layer index"),
    ({"per_layer": [{"num_heads": [2]}]}, "'layers' list"),
    ({"per_layer": [{"layers": [0], "bogus": [2]}]}, "unknown key"),
    ({"quantize_embeddings": "yes"}, "space.quantize_embeddings: expected true or false"),
    ({"quant_block_size": 24}, "space.quant_block_size: 24 is not a power of two of at least 16"),
    ({"quant_block_size": 8}, "space.quant_block_size: 8 is not a power of two of at least 16"),
    ({"layer": {**BASE["layer"], "bits": [32, 4]}},
     "space.layer[0]: a 4-bit layer quantizes its weights in blocks of quant_block_size 32 inputs, and embed_dim 16"),
    ({"layer": {**BASE["layer"], "attention": ["softmax", "conv4"]}},
     "space.layer[0].mixer: conv4 has an even kernel size 4; a kernel centred on its token needs an odd size"),
    ({"layer": {**BASE["layer"], "attention": ["conv03"]}}, "'conv03' does not name a kernel size"),
    ({"layer": {**BASE["layer"], "attention": ["conv0"]}}, "'conv0' does not name a kernel size"),
    ({"layer": {**BASE["layer"], "attention": ["convolution"]}}, "unknown mixer 'convolution'"),
    ({"per_layer": [{"layers": [1], "width": [8, 32]}]},
     "space.layer[1].width: 32 is outside the embedding's range [1, 16]"),
    ({"per_layer": [{"layers": [1], "width": [0]}]}, "space.layer[1].width: 0 is outside the embedding's range"),
    ({"per_layer": [{"layers": [1], "width": ["wide"]}]}, "space.layer[1].width: 'wide' is not an integer"),
    ({"per_layer": [{"layers": [0], "width": [8]}]}, "layer 0 runs at embed_dim"),
    ({"depth": [1], "layer": {**BASE["layer"], "width": [8]}}, "a space of one layer has no layer after the first"),
    ({"per_layer": [{"layers": [1], "width": [8, 16], "bits": [32, 4]}], "quant_block_size": 16},
     "space.layer[1]: a 4-bit layer quantizes its weights in blocks of quant_block_size 16 inputs, and the "
     "layer's width 8"),
    ({"layer": {**BASE["layer"], "bits": [2]}, "quant_block_size": 16, "head_dim": 8},
     "a 2-bit layer quantizes its weights in blocks of quant_block_size 16 inputs, and num_heads"),
])
def test_bad_spaces_name_the_problem(change, message):
    with pytest.raises(SpaceError, match=message.replace("(", r"\(").replace(".", r"\.").replace("[", r"\[")):
        SearchSpace.from_dict({**BASE, **change})


def test_space_from_non_mapping():
    with pytest.raises(SpaceError, match="expected a mapping"):
        SearchSpace.from_dict([1, 2])


def test_malformed_yaml_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("embed_dim: [16\ndepth: [1]\n")
    with pytest.raises(SpaceError, match=r"bad.yaml: malformed YAML at line \d"):
        SearchSpace.from_yaml(path)


def test_arch_json_round_trip_and_canonical_key(tiny_space):
    arch = tiny_space.largest()
    assert Arch.from_json(arch.to_json()) == arch
    assert Arch.from_json(arch.to_json()).key == arch.key
    assert len({arch.key, tiny_space.smallest().key}) == 2


@pytest.mark.parametrize("text, message", [
    ("{", "not valid JSON"),
    ("[]", "expected a mapping"),
    ('{"embed_dim": 16}', "missing field 'layers'"),
    ('{"embed_dim": "16", "layers": [{"num_heads":1,"mlp_dim":16,"attention":"softmax","bits":32}]}',
     "embed_dim: expected an integer"),
    ('{"embed_dim": 16, "layers": [{"num_heads":1,"mlp_dim":16,"attention":"softmax"}]}', "missing field"),
    ('{"embed_dim": 16, "layers": [], "extra": 1}', "unknown field"),
])
def test_bad_arch_json(text, message):
    with pytest.raises(SpaceError, match=message):
        Arch.from_json(text)


def test_key_is_stable_in_a_fresh_process(tiny_space):
    arch = tiny_space.largest()
    code = ("from search_space import Arch; import sys; "
            "print(Arch.from_json(sys.stdin.read()).key)")
    out = subprocess.run([sys.executable, "-c", code], input=arch.to_json(), capture_output=True, text=True,
                         check=True, env={"PYTHONHASHSEED": "123", "PATH": ""}, cwd=str(CONFIGS.parent))
    assert out.stdout.strip() == arch.key
    # and pinned, so a change of hashing would be caught across releases
    assert Arch.from_dict({"embed_dim": 16, "layers": [
        {"num_heads": 1, "mlp_dim": 16, "attention": "softmax", "bits": 32}]}).key == KNOWN_KEY


KNOWN_KEY = "dfbcf8b1f558d9a61836"


def test_canonical_dict_round_trip(tiny_space, digits_space):
    for space in (tiny_space, digits_space):
        again = SearchSpace.from_dict(space.to_dict())
        assert again == space and again.hash == space.hash
    with pytest.raises(SpaceError, match="not both"):
        SearchSpace.from_dict({**tiny_space.to_dict(), "layer": {}})


def test_a_head_per_depth_is_part_of_the_space(tiny_space):
    data = tiny_space.to_dict()
    assert "depth_heads" not in data and tiny_space.depth_heads is False  # the hash of older spaces stays
    heads = SearchSpace.from_dict({**data, "depth_heads": True})
    assert heads.depth_heads and heads.hash != tiny_space.hash and "a head per depth" in heads.summary()
    assert SearchSpace.from_dict(heads.to_dict()) == heads
    for bad in ("yes", 1, None):
        with pytest.raises(SpaceError, match="space.depth_heads: expected true or false"):
            SearchSpace.from_dict({**data, "depth_heads": bad})


def test_embedding_quantization_defaults_to_the_layers_and_round_trips():
    quantized = SearchSpace.from_dict({**BASE, "layer": {**BASE["layer"], "bits": [32, 8]}})
    assert quantized.quantize_embeddings and quantized.table_bits == 8
    full = SearchSpace.from_dict(BASE)
    assert not full.quantize_embeddings and full.table_bits == 32
    assert "quantize_embeddings" not in full.to_dict()  # a float32 space's hash is what it was
    off = SearchSpace.from_dict({**BASE, "layer": {**BASE["layer"], "bits": [32, 8]}, "quantize_embeddings": False})
    assert SearchSpace.from_dict(off.to_dict()) == off and off.hash != quantized.hash


# the hashes of shipped spaces as the last release wrote them (their layers said `attention`): checkpoints hold them
FORMER_HASHES = {"tiny": "d1367fd3a03112d6", "digits": "398c0dd86ce2a48d", "flexibert": "0cf9d2638e9c88ce",
                 "digits_stages": "01ffe5662770593c"}


def test_the_mixer_gene_reads_its_former_name_and_keeps_hashes_and_keys(tmp_path):
    for name, former in FORMER_HASHES.items():
        space = SearchSpace.from_yaml(CONFIGS / "spaces" / f"{name}.yaml")
        old_file = tmp_path / f"{name}.yaml"
        old_file.write_text((CONFIGS / "spaces" / f"{name}.yaml").read_text().replace("  mixer:", "  attention:"))
        assert space.hash[:16] == former and SearchSpace.from_yaml(old_file) == space
        assert all("mixer" in layer and "attention" not in layer for layer in space.to_dict()["layers"])
    arch = Arch.from_dict({"embed_dim": 16, "layers": [{"num_heads": 1, "mlp_dim": 16, "mixer": "softmax", "bits": 32}]})
    assert arch.key == KNOWN_KEY and '"mixer":"softmax"' in arch.to_json()  # written under its name, keyed as before
    with pytest.raises(SpaceError, match="either mixer or attention"):
        Arch.from_dict({"embed_dim": 16, "layers": [{"num_heads": 1, "mlp_dim": 16, "mixer": "softmax",
                                                     "attention": "softmax", "bits": 32}]})
    with pytest.raises(SpaceError, match="space.layer: give either mixer or attention"):
        SearchSpace.from_dict({**BASE, "layer": {**BASE["layer"], "mixer": ["softmax"]}})
