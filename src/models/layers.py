"""Building blocks of DeiT, with timm's parameter names so public weights load one to one."""

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import TruncatedNormal, initializer

from ..token_reduction import TokenReducer


def trunc_normal_param(shape: tuple[int, ...], std: float = 0.02) -> Parameter:
    return Parameter(initializer(TruncatedNormal(std), shape, ms.float32))


class LayerNorm(nn.Cell):
    """LayerNorm over the last axis with ``weight``/``bias`` (timm's names; ``nn.LayerNorm`` says gamma/beta)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = Parameter(initializer("ones", (dim,), ms.float32))
        self.bias = Parameter(initializer("zeros", (dim,), ms.float32))
        self.layer_norm = ops.LayerNorm(begin_norm_axis=-1, begin_params_axis=-1, epsilon=eps)

    def construct(self, x: Tensor) -> Tensor:
        y, _, _ = self.layer_norm(x, self.weight.astype(x.dtype), self.bias.astype(x.dtype))
        return y


class Linear(nn.Dense):
    """``nn.Dense`` (weight ``[out, in]``, like torch) with DeiT's truncated-normal init and zero bias."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__(in_features, out_features, weight_init=TruncatedNormal(0.02), bias_init="zeros")


class PatchProjection(nn.Cell):
    """The stride-p, p x p convolution of the patch embedding, computed as reshape + matmul.

    Same numbers as ``nn.Conv2d`` and the same ``weight [C, 3, p, p]`` layout, but ~200x faster on CPU.
    """

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int):
        super().__init__()
        self.patch_size = patch_size
        fan_in = in_chans * patch_size * patch_size
        bound = float(np.sqrt(1.0 / fan_in))  # torch's default Conv2d init range
        self.weight = Parameter(initializer(ms.common.initializer.Uniform(bound),
                                            (embed_dim, in_chans, patch_size, patch_size), ms.float32))
        self.bias = Parameter(initializer(ms.common.initializer.Uniform(bound), (embed_dim,), ms.float32))

    def construct(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        p = self.patch_size
        x = x.reshape(b, c, h // p, p, w // p, p).transpose(0, 2, 4, 1, 3, 5)
        x = x.reshape(b, (h // p) * (w // p), c * p * p)
        weight = self.weight.reshape(self.weight.shape[0], -1).astype(x.dtype)
        return ops.matmul(x, weight.swapaxes(0, 1)) + self.bias.astype(x.dtype)


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
    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = Linear(dim, hidden_dim)
        self.act = nn.GELU(approximate=False)  # DeiT uses exact (erf) GELU; nn.GELU defaults to tanh
        self.fc2 = Linear(hidden_dim, dim)

    def construct(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


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
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).transpose(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        logits = ops.matmul(q * self.scale, k.swapaxes(-2, -1))
        if self.prop_attn:
            logits = logits + ops.log(size).reshape(b, 1, 1, n).astype(logits.dtype)
        attn = self.softmax(logits)
        out = ops.matmul(attn, v).swapaxes(1, 2).reshape(b, n, c)
        return self.proj(out), attn, v, k.mean(axis=1)


class Block(nn.Cell):
    """Pre-norm transformer block. A PP block gets a ``reducer`` (a token-reduction policy, see
    ``src.token_reduction``), which removes tokens between the attention residual and the MLP."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop_path: float = 0.0,
                 prop_attn: bool = False, reducer: TokenReducer | None = None):
        super().__init__()
        self.norm1 = LayerNorm(dim)
        self.attn = Attention(dim, num_heads, prop_attn)
        self.drop_path = DropPath(drop_path)
        self.norm2 = LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
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


class LayerScale(nn.Cell):
    """A learned per-channel scale (``gamma``, timm's name), initialised to ``init_values``."""

    def __init__(self, dim: int, init_values: float):
        super().__init__()
        self.gamma = Parameter(initializer(float(init_values), (dim,), ms.float32))

    def construct(self, x: Tensor) -> Tensor:
        return x * self.gamma.astype(x.dtype)


class LayerScaleBlock(Block):
    """DeiT III's block: LayerScale on both residual branches (``ls1``, ``ls2``), in PP blocks too, where
    timm applies it; the reducer still runs after the (scaled) attention residual."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop_path: float = 0.0,
                 prop_attn: bool = False, reducer: TokenReducer | None = None, init_values: float = 1e-6):
        super().__init__(dim, num_heads, mlp_ratio, drop_path, prop_attn, reducer)
        self.ls1 = LayerScale(dim, init_values)
        self.ls2 = LayerScale(dim, init_values)

    def scale_attn(self, out: Tensor) -> Tensor:
        return self.ls1(out)

    def scale_mlp(self, out: Tensor) -> Tensor:
        return self.ls2(out)
