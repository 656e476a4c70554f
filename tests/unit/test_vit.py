"""Model structure, registry and the PPT invariants that the golden cases do not pin down."""
import mindspore as ms
import numpy as np
import pytest

from src.models import PPTStats, create_model, list_models, model_spec

from ..conftest import make_mini
from .test_golden import assert_outputs_match_golden, golden_ppt

MIXED = dict(r=50, layers=[3, 6, 9], threshold=3.9924709317941296e-05, prop_attn=True)  # golden "mixed"


def test_registry_lists_all_deit_variants():
    expected = {f"deit_{s}_{d}patch16_224" for s in ("tiny", "small", "base") for d in ("", "distilled_")}
    expected |= {"deit_base_patch16_384", "deit_base_distilled_patch16_384"}
    assert {name for name in list_models() if name.startswith("deit_")} == expected
    assert model_spec("deit_small_patch16_224").embed_dim == 384
    with pytest.raises(ValueError, match="unknown model 'deit_huge'.*deit_small_patch16_224"):
        create_model("deit_huge")


@pytest.mark.parametrize("name,params", [("deit_tiny_patch16_224", 5_717_416),
                                         ("deit_small_patch16_224", 22_050_664),
                                         ("deit_tiny_distilled_patch16_224", 5_910_800)])
def test_parameter_count_and_names_match_timm(name, params):
    model = create_model(name)
    names = {n: p.shape for n, p in model.parameters_and_names()}
    assert sum(int(np.prod(s)) for s in names.values()) == params
    assert {"cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.11.attn.qkv.bias",
            "blocks.0.norm1.weight", "norm.bias", "head.weight"} <= set(names)
    assert ("dist_token" in names) == ("distilled" in name) == ("head_dist.weight" in names)
    assert names["pos_embed"] == (1, 196 + model.num_prefix_tokens, model.embed_dim)


def test_no_ppt_and_r0_are_exactly_plain_deit(golden_input):
    x = ms.Tensor(golden_input)
    plain = make_mini(None)(x).asnumpy()
    zero = make_mini(dict(MIXED, r=0))
    assert zero.ppt_layers == () and zero.tokens_per_block == (197,) * 12
    np.testing.assert_array_equal(zero(x).asnumpy(), plain)


def test_each_image_is_independent_of_its_batch(golden_input):
    """Batch size 1 works, and PPT's per-image decisions give each image the same result in any batch (in graph
    mode: the mixed_schedule case of test_token_source_tracing)."""
    model = make_mini(MIXED)
    full = model(ms.Tensor(golden_input)).asnumpy()
    for i in (0, 1):  # image 1 is pooled at block 3, image 0 pruned
        one = model(ms.Tensor(golden_input[i:i + 1])).asnumpy()
        np.testing.assert_allclose(one[0], full[i], atol=1e-5)


def test_distilled_model_protects_the_distillation_token():
    """Prune-only and pool-only: the distillation token survives every PP block unmerged at index 1."""
    ms.set_seed(0)
    x = ms.Tensor(np.random.default_rng(0).normal(size=(2, 3, 112, 112)).astype(np.float32))
    for threshold in (0.0, 1e9):
        model = make_mini(dict(r=100, layers=[0, 1, 2], threshold=threshold, prop_attn=True),
                          name="deit_tiny_distilled_patch16_224", weights=False)
        assert model.num_prefix_tokens == 2 and model.tokens_per_block[:3] == (100, 51, 26)  # r clamped to 98, 49, 25
        h = model._embed(x)
        size = ms.ops.ones((2, h.shape[1], 1), ms.float32)
        for blk in model.blocks[:3]:
            out, attn, v, metric = blk.attn(blk.norm1(h), size)
            h_attn = h + out
            red, red_size, _, pooled, _ = blk.reducer(h_attn, size, attn, v, metric)
            assert (pooled.asnumpy() == (threshold > 0)).all()
            np.testing.assert_allclose(red[:, :2].asnumpy(), h_attn[:, :2].asnumpy(), rtol=1e-5, atol=1e-6)
            np.testing.assert_array_equal(red_size[:, :2].asnumpy(), np.ones((2, 2, 1)))
            h, size, _, _, _ = blk(h, size)
        assert np.isfinite(model(x).asnumpy()).all()


def test_scores_and_decision_stay_float32_under_mixed_precision(golden, golden_input):
    """AMP O2 runs the blocks in float16; the variance (~4e-5, below fp16's normal range) must not be."""
    _, ref = golden
    net = ms.amp.auto_mixed_precision(PPTStats(make_mini(MIXED)), "O2")
    logits, pooled, svar = net(ms.Tensor(golden_input))
    assert svar.dtype == ms.float32
    assert np.abs(logits.asnumpy() - ref["mixed/logits"]).max() > 1e-3  # float16 really ran
    np.testing.assert_array_equal(pooled.asnumpy()[:, 0], ref["mixed/pooled_layer3"])
    np.testing.assert_allclose(svar.asnumpy()[:, 0], ref["mixed/svar_layer3"], rtol=2e-2)
    np.testing.assert_allclose(logits.asnumpy().astype(np.float32), ref["mixed/logits"], atol=0.1)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match=r"architecture overrides \['embed_dims'\] are not supported"):
        create_model("deit_tiny_patch16_224", embed_dims=3)
    with pytest.raises(ValueError, match="the 'ppt' policy needs one"):
        create_model("deit_tiny_patch16_224", ppt=dict(r=1, layers=[1]))
    with pytest.raises(ValueError, match=r"ppt: unknown keys \['rr'\], missing keys \['r'\]"):
        create_model("deit_tiny_patch16_224", ppt=dict(rr=1, layers=[1]))
    with pytest.raises(ValueError, match="unknown token-reduction policy 'merge'; known: ppt, prune, pool"):
        create_model("deit_tiny_patch16_224", ppt=dict(r=1, layers=[1], policy="merge"))
    with pytest.raises(ValueError, match=r"PP layers \[12\]"):
        create_model("deit_tiny_patch16_224", ppt=dict(r=1, layers=[12], threshold=0.0, prop_attn=True))
    with pytest.raises(ValueError, match="not divisible"):
        create_model("deit_tiny_patch16_224", img_size=100)
    with pytest.raises(ValueError, match="threshold"):
        create_model("deit_tiny_patch16_224", ppt=dict(r=1, layers=[1], threshold=-1.0, prop_attn=True))


def test_model_code_has_no_data_dependent_shapes():
    """Static shapes for Ascend: none of the ops that make shapes depend on values."""
    import inspect

    import src.models.layers
    import src.models.vit
    import src.token_reduction
    for mod in (src.models.layers, src.models.vit, src.token_reduction):
        text = inspect.getsource(mod)
        for banned in ("nonzero", "masked_select", "unique(", ".asnumpy()", "boolean_mask"):
            assert banned not in text, f"{mod.__name__} uses {banned}"


# One case compiled (graph mode: the traced graph is what visualize.py runs), the one-branch cases in PyNative.
@pytest.mark.parametrize("case, any_mode", [("mixed_schedule", "graph"), ("prune_all", "pynative"),
                                            ("pool_all", "pynative")], indirect=["any_mode"])
def test_token_source_tracing(case, golden, golden_input, any_mode):
    """Each token's sources: every original token is in at most one token; sizes are source counts;
    pooled images lose no patch, pruned images merge none; per image, whatever else is in the batch."""
    meta, ref = golden
    model = make_mini(golden_ppt(meta["cases"][case]))
    traced = PPTStats(model, trace=True)
    logits, pooled, svar, sources = traced(ms.Tensor(golden_input))
    # Tracing changes nothing: the golden logits, decisions and variances (the graph-mode golden check of
    # mixed_schedule in the default suite).
    assert_outputs_match_golden(model, logits, pooled, svar, case, golden)
    assert [s.shape[1] for s in sources] == [model.tokens_per_block[i] for i in model.ppt_layers]
    ever_pruned = np.zeros(8, bool)
    for j, src in enumerate(sources):
        src = src.asnumpy()
        assert set(np.unique(src)) <= {0.0, 1.0}
        assert (src.sum(axis=1) <= 1).all() and (src.sum(axis=2) >= 1).all()
        assert (src[:, 0, 0] == 1).all() and (src[:, 0].sum(-1) == 1).all()  # class token alone, in front
        ever_pruned |= ~pooled.asnumpy()[:, j]
        lossless = ~ever_pruned
        np.testing.assert_array_equal(src[lossless].sum(axis=(1, 2)), 197)
        if case == "prune_all":
            assert (src.sum(axis=2) == 1).all()
    if case == "mixed_schedule":  # a pooled and a pruned image alone: the same sources and logits as in the batch
        first = ref["mixed_schedule/pooled_layer2"]
        for i in (int(np.argmax(first)), int(np.argmin(first))):
            one_logits, _, _, alone = traced(ms.Tensor(golden_input[i:i + 1]))  # one compile for both
            np.testing.assert_allclose(one_logits.asnumpy()[0], logits.asnumpy()[i], atol=1e-5)
            for a, s in zip(alone, sources):
                np.testing.assert_array_equal(a.asnumpy()[0], s.asnumpy()[i])


@pytest.mark.parametrize("threshold", [0.0, 1e9])  # prune-only, pool-only
def test_ppt_is_trainable_in_graph_mode(threshold, golden_input, graph_mode):
    """Gradients flow through either branch (strided-slice backward used to crash on CPU). On 48 px crops (37
    tokens): compiling the backward of a PP block takes longer the more tokens it has."""
    model = make_mini(dict(MIXED, layers=[1, 2], r=8, threshold=threshold), depth=4, weights=False, img_size=48)
    assert model.tokens_per_block == (37, 29, 21, 21)
    model.set_train(True)
    params = model.trainable_params()
    labels = ms.Tensor(np.arange(8) % 10, ms.int32)
    loss_fn = ms.nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")

    def forward(x):
        return loss_fn(model(x), labels)

    x = ms.Tensor(np.ascontiguousarray(golden_input[:, :, :48, :48]))
    loss, grads = ms.value_and_grad(forward, None, params)(x)
    assert np.isfinite(loss.asnumpy())
    for p, g in zip(params, grads):
        assert np.isfinite(g.asnumpy()).all(), p.name
    norms = {p.name: float(np.abs(g.asnumpy()).sum()) for p, g in zip(params, grads)}
    assert norms["blocks.0.attn.qkv.weight"] > 0 and norms["blocks.3.mlp.fc2.weight"] > 0
