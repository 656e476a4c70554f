"""Building blocks of DeiT, with timm's parameter names so public weights load one to one."""

from collections.abc import Callable

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import TruncatedNormal, initializer

from ..token_reduction import TokenReducer


def trunc_normal_param(shape: tuple[int, ...], std: float = 0.02) -> Parameter:
    return Parameter(initializer(TruncatedNormal(std), shape, ms.float32))


class LayerNorm(nn.Cell):
    """LayerNorm over the last axis with timm's parameter names and epsilon.

    A family whose weights name them otherwise (mindcv's ``nn.LayerNorm``: ``gamma`` / ``beta``, epsilon 1e-7)
    subclasses it with its own ``param_names`` and ``default_eps``: the names are the weights' keys.
    """

    param_names: tuple[str, str] = ("weight", "bias")  # (scale, shift)
    default_eps: float = 1e-6

    def __init__(self, dim: int, eps: float | None = None):
        super().__init__()
        scale, shift = self.param_names
        setattr(self, scale, Parameter(initializer("ones", (dim,), ms.float32)))
        setattr(self, shift, Parameter(initializer("zeros", (dim,), ms.float32)))
        eps = self.default_eps if eps is None else eps
        self.layer_norm = ops.LayerNorm(begin_norm_axis=-1, begin_params_axis=-1, epsilon=eps)

    def construct(self, x: Tensor) -> Tensor:
        scale, shift = self.param_names  # constant names: graph mode resolves the getattr at compile time
        y, _, _ = self.layer_norm(x, getattr(self, scale).astype(x.dtype), getattr(self, shift).astype(x.dtype))
        return y

    @staticmethod
    def macs(tokens: int, dim: int) -> int:
        return tokens * dim  # one product per output element (src.flops' convention)

    @staticmethod
    def num_params(dim: int) -> int:
        return 2 * dim


class GELU(nn.GELU):
    """Exact (erf) GELU, DeiT's and timm's; ``nn.GELU()`` is the tanh approximation (mindcv's). Free in MACs."""

    def __init__(self):
        super().__init__(approximate=False)


class Linear(nn.Dense):
    """``nn.Dense`` (weight ``[out, in]``, like torch) with DeiT's truncated-normal init and zero bias."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__(in_features, out_features, weight_init=TruncatedNormal(0.02), bias_init="zeros")

    @staticmethod
    def macs(tokens: int, in_features: int, out_features: int) -> int:
        return tokens * in_features * out_features  # the bias is free

    @staticmethod
    def num_params(in_features: int, out_features: int) -> int:
        return in_features * out_features + out_features


class PatchProjection(nn.Cell):
    """The stride-p, p x p convolution of the patch embedding, computed as reshape + matmul.

    Same numbers as ``nn.Conv2d`` and the same ``weight [C, 3, p, p]`` layout, but ~200x faster on CPU. The matmul
    is 2-D with the weight transposed in the kernel, as ``nn.Dense`` does: MindSpore's CPU matmul of a 3-D input
    by a 2-D weight, with the weight transposed by a separate op, takes ~1.45x as long (same values).
    """

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int):
        super().__init__()
        self.patch_size = patch_size
        fan_in = in_chans * patch_size * patch_size
        bound = float(np.sqrt(1.0 / fan_in))  # torch's default Conv2d init range
        self.weight = Parameter(initializer(ms.common.initializer.Uniform(bound),
                                            (embed_dim, in_chans, patch_size, patch_size), ms.float32))
        self.bias = Parameter(initializer(ms.common.initializer.Uniform(bound), (embed_dim,), ms.float32))
        self.matmul = ops.MatMul(transpose_b=True)

    def construct(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        p = self.patch_size
        x = x.reshape(b, c, h // p, p, w // p, p).transpose(0, 2, 4, 1, 3, 5)
        x = x.reshape(b * (h // p) * (w // p), c * p * p)
        weight = self.weight.reshape(self.weight.shape[0], -1).astype(x.dtype)
        x = self.matmul(x, weight) + self.bias.astype(x.dtype)
        return x.reshape(b, (h // p) * (w // p), -1)


class PatchEmbed(nn.Cell):
    """Image ``[B, 3, H, W]`` -> patch tokens ``[B, H*W/p^2, C]``."""

    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not divisible by patch_size {patch_size}")
        self.num_patches = (img_size // patch_size) ** 2
        self.proj = PatchProjection(in_chans, embed_dim, patch_size)

    def construct(self, x: Tensor) -> Tensor:
        return self.proj(x)

    @staticmethod
    def macs(img_size: int, patch_size: int, in_chans: int, embed_dim: int) -> int:
        return (img_size // patch_size) ** 2 * Linear.macs(1, in_chans * patch_size ** 2, embed_dim)

    @staticmethod
    def num_params(patch_size: int, in_chans: int, embed_dim: int) -> int:
        return Linear.num_params(in_chans * patch_size ** 2, embed_dim)


class DropPath(nn.Cell):
    """Stochastic depth: drop the residual branch per sample during training."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.keep_prob = 1.0 - drop_prob

    def construct(self, x: Tensor) -> Tensor:
        if not self.training or self.keep_prob == 1.0:
            return x
        mask = ops.floor(self.keep_prob + ops.rand((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype))
        return x / self.keep_prob * mask


class Mlp(nn.Cell):
    def __init__(self, dim: int, hidden_dim: int, act_layer: Callable[[], nn.Cell] = GELU):
        super().__init__()
        self.fc1 = Linear(dim, hidden_dim)
        self.act = act_layer()
        self.fc2 = Linear(hidden_dim, dim)

    def construct(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))

    @staticmethod
    def macs(tokens: int, dim: int, hidden_dim: int) -> int:
        return Linear.macs(tokens, dim, hidden_dim) + Linear.macs(tokens, hidden_dim, dim)  # the activation is free

    @staticmethod
    def num_params(dim: int, hidden_dim: int) -> int:
        return Linear.num_params(dim, hidden_dim) + Linear.num_params(hidden_dim, dim)


class Attention(nn.Cell):
    """Multi-head self-attention, optionally proportional (``+ log(size)`` of the key token).

    Returns the projected output plus what PPT needs: the attention map, the values and the keys
    averaged over heads (the pooling metric).
    """

    def __init__(self, dim: int, num_heads: int, prop_attn: bool = False):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.prop_attn = prop_attn
        self.qkv = Linear(dim, dim * 3)
        self.proj = Linear(dim, dim)
        self.softmax = nn.Softmax(axis=-1)

    def construct(self, x: Tensor, size: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        b, n, c = x.shape
        qkv = self.qkv(x)
        # Sliced off the last axis, then split into heads: timm's values (reshape to [B, N, 3, H, D], permute,
        # index the first axis), but MindSpore's CPU StridedSlice on the first axis of that 5-D tensor costs
        # more than the rest of the attention; this way the attention runs ~2.3x faster.
        q, k, v = self._heads(qkv[:, :, :c]), self._heads(qkv[:, :, c:2 * c]), self._heads(qkv[:, :, 2 * c:])
        logits = ops.matmul(q * self.scale, k.swapaxes(-2, -1))
        if self.prop_attn:
            logits = logits + ops.log(size).reshape(b, 1, 1, n).astype(logits.dtype)
        attn = self.softmax(logits)
        out = ops.matmul(attn, v).swapaxes(1, 2).reshape(b, n, c)
        return self.proj(out), attn, v, k.mean(axis=1)

    def _heads(self, t: Tensor) -> Tensor:
        """``[B, N, C]`` -> ``[B, H, N, D]``."""
        b, n, _ = t.shape
        return t.reshape(b, n, self.num_heads, self.head_dim).transpose(0, 2, 1, 3)

    @staticmethod
    def macs(tokens: int, dim: int, num_heads: int) -> int:
        """qkv, ``q @ k^T`` and ``attn @ v``, the logit scaling (the official code scales the logits, ``H N^2``,
        where this one scales ``q``), proj. The head-averaged keys are the reducer's cost, where it uses them."""
        n, h = tokens, num_heads
        return Linear.macs(n, dim, 3 * dim) + 2 * n * n * dim + h * n * n + Linear.macs(n, dim, dim)

    @staticmethod
    def num_params(dim: int) -> int:
        return Linear.num_params(dim, 3 * dim) + Linear.num_params(dim, dim)


class Block(nn.Cell):
    """Pre-norm transformer block. A PP block gets a ``reducer`` (a token-reduction policy, see
    ``src.token_reduction``), which removes tokens between the attention residual and the MLP. ``norm_layer``
    (called with the width) and ``act_layer`` (called without arguments) build its norms and the MLP's
    activation, as in timm.

    :meth:`macs` and :meth:`num_params` state its cost from the constructor's arguments (a model is costed
    without being built); a variant block that adds a layer adds its cost there."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop_path: float = 0.0,
                 prop_attn: bool = False, reducer: TokenReducer | None = None,
                 norm_layer: Callable[[int], nn.Cell] = LayerNorm, act_layer: Callable[[], nn.Cell] = GELU):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, num_heads, prop_attn)
        self.drop_path = DropPath(drop_path)
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer)
        self.reducer = reducer
        self.reduces = reducer is not None  # a plain bool: graph mode branches on it at compile time

    def construct(self, x: Tensor, size: Tensor, source: Tensor | None = None):
        """Returns ``(x, size, source, pooled, svar)``; the last two are None outside PP blocks and
        ``source`` (which original patches each token covers) is carried only when given."""
        out, attn, v, metric = self.attn(self.norm1(x), size)
        x = x + self.drop_path(self.scale_attn(out))
        pooled, svar = None, None
        if self.reduces:
            x, size, source, pooled, svar = self.reducer(x, size, attn, v, metric, source)
        x = x + self.drop_path(self.scale_mlp(self.mlp(self.norm2(x))))
        return x, size, source, pooled, svar

    # The residual branches as they are added; a variant block (LayerScaleBlock) rescales them here.
    def scale_attn(self, out: Tensor) -> Tensor:
        return out

    def scale_mlp(self, out: Tensor) -> Tensor:
        return out

    @classmethod
    def macs(cls, n_in: int, n_out: int, dim: int, num_heads: int, mlp_ratio: float,
             norm_layer: type[LayerNorm] = LayerNorm, reducer: type[TokenReducer] | None = None) -> int:
        """MACs of one image: attention on the ``n_in`` tokens entering, the reduction (by ``reducer``, the PP
        block's policy class) to ``n_out`` when it removes any, the MLP on the ``n_out`` left."""
        macs = norm_layer.macs(n_in, dim) + Attention.macs(n_in, dim, num_heads)
        if reducer is not None and n_out < n_in:
            macs += reducer.macs(n_in, dim, dim // num_heads)
        return macs + norm_layer.macs(n_out, dim) + Mlp.macs(n_out, dim, int(dim * mlp_ratio))

    @classmethod
    def num_params(cls, dim: int, mlp_ratio: float, norm_layer: type[LayerNorm] = LayerNorm) -> int:
        return 2 * norm_layer.num_params(dim) + Attention.num_params(dim) + Mlp.num_params(dim, int(dim * mlp_ratio))


class LayerScale(nn.Cell):
    """A learned per-channel scale (``gamma``, timm's name), initialised to ``init_values``."""

    def __init__(self, dim: int, init_values: float):
        super().__init__()
        self.gamma = Parameter(initializer(float(init_values), (dim,), ms.float32))

    def construct(self, x: Tensor) -> Tensor:
        return x * self.gamma.astype(x.dtype)

    @staticmethod
    def macs(tokens: int, dim: int) -> int:
        return tokens * dim  # element-wise products are counted

    @staticmethod
    def num_params(dim: int) -> int:
        return dim


class LayerScaleBlock(Block):
    """DeiT III's block: LayerScale on both residual branches (``ls1``, ``ls2``), in PP blocks too, where
    timm applies it; the reducer still runs after the (scaled) attention residual."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop_path: float = 0.0,
                 prop_attn: bool = False, reducer: TokenReducer | None = None,
                 norm_layer: Callable[[int], nn.Cell] = LayerNorm, act_layer: Callable[[], nn.Cell] = GELU,
                 init_values: float = 1e-6):
        super().__init__(dim, num_heads, mlp_ratio, drop_path, prop_attn, reducer, norm_layer, act_layer)
        self.ls1 = LayerScale(dim, init_values)
        self.ls2 = LayerScale(dim, init_values)

    def scale_attn(self, out: Tensor) -> Tensor:
        return self.ls1(out)

    def scale_mlp(self, out: Tensor) -> Tensor:
        return self.ls2(out)

    @classmethod
    def macs(cls, n_in: int, n_out: int, dim: int, num_heads: int, mlp_ratio: float,
             norm_layer: type[LayerNorm] = LayerNorm, reducer: type[TokenReducer] | None = None) -> int:
        # ls1 on the attention branch (n_in tokens), ls2 on the MLP branch (n_out)
        block = super().macs(n_in, n_out, dim, num_heads, mlp_ratio, norm_layer, reducer)
        return block + LayerScale.macs(n_in, dim) + LayerScale.macs(n_out, dim)

    @classmethod
    def num_params(cls, dim: int, mlp_ratio: float, norm_layer: type[LayerNorm] = LayerNorm) -> int:
        return super().num_params(dim, mlp_ratio, norm_layer) + 2 * LayerScale.num_params(dim)
