r"""The vision transformer (ViT, Dosovitskiy et al. 2021): an image read as a sequence of patches.

**Patches as tokens.** A language model reads a sequence of token vectors. An image of
$H \times W$ pixels with $C$ channels becomes such a sequence by cutting it into
$N = (H/P)(W/P)$ square patches of $P \times P$ pixels, flattening each patch into a vector of
$C P^2$ numbers and mapping it linearly to the model width $d$:

$$z_i = E\,\mathrm{vec}(x_{\text{patch } i}) + b, \qquad E \in \mathbb{R}^{d \times C P^2}.$$

That linear map is exactly a convolution with kernel size and stride $P$, which is how the
weights are stored (`patch_embeddings.projection`, shape `(d, C, P, P)`). A learned class token
$z_0$ is put in front, a learned position vector added to each of the $N + 1$ tokens (the
encoder is permutation-equivariant and would not otherwise know where a patch came from), and the
sequence goes through a stack of pre-norm [`EncoderBlock`][fms_transformer.blocks.EncoderBlock]s
with bidirectional attention. The final LayerNorm of the class token is the image's
representation; a linear `classifier` on it makes an image classifier.

Parameter names follow Hugging Face `ViTModel` (and `ViTForImageClassification` with a
classifier), so `save_pretrained` / `from_pretrained` exchange weights with transformers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fms_llm.models.gpt import use_fused_kernels
from fms_mm._files import load_renamed, read_model_dir, renamed_state, write_model_dir
from fms_transformer.blocks import EncoderBlock
from fms_transformer.norm import LayerNorm

__all__ = [
    "ImageInputError",
    "PatchEmbedding",
    "ViT",
    "ViTConfig",
    "ViTConfigError",
    "check_images",
]


class ViTConfigError(ValueError):
    """An inconsistent ViT configuration."""


class ImageInputError(ValueError):
    """Images of the wrong shape, channel count or size for the model."""


def check_images(pixels: Tensor, channels: int, size: int, owner: str) -> None:
    """Raise an `ImageInputError` unless `pixels` is a float `(batch, channels, size, size)`."""
    if not isinstance(pixels, Tensor) or not pixels.is_floating_point():
        got = pixels.dtype if isinstance(pixels, Tensor) else type(pixels).__name__
        raise ImageInputError(f"{owner}: pixel_values must be a float tensor, got {got}")
    if pixels.ndim != 4:
        raise ImageInputError(
            f"{owner}: pixel_values must be (batch, {channels}, {size}, {size}), "
            f"got shape {tuple(pixels.shape)}"
        )
    if pixels.shape[1] != channels:
        raise ImageInputError(
            f"{owner}: pixel_values has {pixels.shape[1]} channels, expected {channels} "
            f"(shape {tuple(pixels.shape)})"
        )
    if tuple(pixels.shape[2:]) != (size, size):
        raise ImageInputError(
            f"{owner}: images are {tuple(pixels.shape[2:])} pixels, expected ({size}, {size})"
        )


@dataclass
class ViTConfig:
    r"""The shape of a ViT; field names are those of Hugging Face's `ViTConfig`.

    Attributes:
        image_size: Side of the square input image in pixels.
        patch_size: Side of a square patch; must divide `image_size`.
        num_channels: Input channels (1 for grey, 3 for RGB).
        hidden_size: Model width $d$.
        num_hidden_layers: Encoder blocks.
        num_attention_heads: Heads per block; must divide `hidden_size`.
        intermediate_size: Hidden size of each block's MLP.
        layer_norm_eps: The LayerNorms' $\epsilon$ (transformers' default, 1e-12).
        qkv_bias: Biases on the query/key/value projections.
        hidden_dropout_prob: Dropout on each sub-layer's output.
        attention_probs_dropout_prob: Dropout on the attention probabilities.
        num_labels: Classes of the classifier head on the class token; 0 for the bare encoder.
        initializer_range: Standard deviation of the truncated-normal initialisation.
    """

    image_size: int = 32
    patch_size: int = 4
    num_channels: int = 3
    hidden_size: int = 64
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 128
    layer_norm_eps: float = 1e-12
    qkv_bias: bool = True
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    num_labels: int = 0
    initializer_range: float = 0.02
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for name in (
            "image_size",
            "patch_size",
            "num_channels",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ViTConfigError(f"{name} must be a positive int, got {value!r}")
        if self.image_size % self.patch_size:
            raise ViTConfigError(
                f"patch_size={self.patch_size} must divide image_size={self.image_size}"
            )
        if self.hidden_size % self.num_attention_heads:
            raise ViTConfigError(
                f"num_attention_heads={self.num_attention_heads} must divide "
                f"hidden_size={self.hidden_size}"
            )
        if not isinstance(self.num_labels, int) or self.num_labels < 0:
            raise ViTConfigError(f"num_labels must be an int >= 0, got {self.num_labels!r}")

    @property
    def num_patches(self) -> int:
        """$N$, the number of patches: (image_size / patch_size) squared."""
        return (self.image_size // self.patch_size) ** 2

    def to_hf(self) -> dict[str, Any]:
        """A transformers-readable `config.json` (`model_type` "vit")."""
        out = {k: v for k, v in asdict(self).items() if k not in ("extra", "num_labels")}
        out.update(model_type="vit", hidden_act="gelu")
        if self.num_labels:
            out["architectures"] = ["ViTForImageClassification"]
            out["id2label"] = {str(i): f"LABEL_{i}" for i in range(self.num_labels)}
            out["label2id"] = {f"LABEL_{i}": i for i in range(self.num_labels)}
        else:
            out["architectures"] = ["ViTModel"]
        return out

    @classmethod
    def from_hf(cls, hf: dict[str, Any], source: str = "config.json") -> ViTConfig:
        """Read the fields of a transformers ViT `config.json`."""
        if hf.get("model_type", "vit") != "vit":
            raise ViTConfigError(f"{source}: model_type must be 'vit', got {hf['model_type']!r}")
        if hf.get("hidden_act", "gelu") != "gelu":
            raise ViTConfigError(f"{source}: hidden_act must be 'gelu', got {hf['hidden_act']!r}")
        names = {f for f in cls.__dataclass_fields__ if f not in ("extra", "num_labels")}
        kwargs = {k: hf[k] for k in names if k in hf}
        is_classifier = "ViTForImageClassification" in hf.get("architectures", [])
        labels = len(hf.get("id2label", {})) if is_classifier else 0
        return cls(**kwargs, num_labels=labels)


class PatchEmbedding(nn.Module):
    r"""Cut `(batch, C, H, W)` into $P \times P$ patches and map each linearly to width $d$.

    Written as the reshape and matrix product it is (one row of $E$ per output channel), with the
    weight stored in a convolution's `(d, C, P, P)` layout as transformers stores it.
    """

    def __init__(self, channels: int, patch_size: int, d: int, bias: bool = True) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.weight = nn.Parameter(torch.empty(d, channels, patch_size, patch_size))
        self.bias = nn.Parameter(torch.zeros(d)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        """`(batch, C, H, W)` -> `(batch, (H/P)(W/P), d)`, patches in row-major order."""
        b, c, h, w = x.shape
        p = self.patch_size
        # (b, c, h/p, p, w/p, p) -> (b, h/p, w/p, c, p, p) -> (b, N, c p p)
        patches = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
        patches = patches.reshape(b, (h // p) * (w // p), c * p * p)
        out = patches @ self.weight.flatten(1).T
        return out if self.bias is None else out + self.bias


class ViT(nn.Module):
    """The vision transformer: patch embedding, class token, learned positions, encoder, LayerNorm.

    Args:
        config: The shape.
        fused: Compute the LayerNorms and GELUs with PyTorch's fused kernels (the same function
            and parameters, fewer kernels: faster to train); `False` runs fms-transformer's
            readable reference modules.

    Example:
        >>> vit = ViT(ViTConfig(image_size=8, patch_size=4, num_channels=1, hidden_size=16,
        ...                     num_hidden_layers=1, num_attention_heads=2, intermediate_size=32))
        >>> vit(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 5, 16])
    """

    def __init__(self, config: ViTConfig, fused: bool = True) -> None:
        super().__init__()
        if not isinstance(config, ViTConfig):
            raise TypeError(f"config must be a ViTConfig, got {type(config).__name__}")
        self.config = c = config
        self.patch_embed = PatchEmbedding(c.num_channels, c.patch_size, c.hidden_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.hidden_size))
        self.pos_embed = nn.Parameter(torch.zeros(1, c.num_patches + 1, c.hidden_size))
        self.drop = nn.Dropout(c.hidden_dropout_prob)
        self.blocks = nn.ModuleList(
            EncoderBlock(
                c.hidden_size,
                c.num_attention_heads,
                c.intermediate_size,
                dropout=c.hidden_dropout_prob,
                attn_dropout=c.attention_probs_dropout_prob,
                norm="layernorm",
                norm_eps=c.layer_norm_eps,
                ffn="gelu_mlp",
                norm_first=True,
                attn_bias=c.qkv_bias,
                attn_out_bias=True,
                ffn_bias=True,
            )
            for _ in range(c.num_hidden_layers)
        )
        self.norm = LayerNorm(c.hidden_size, c.layer_norm_eps)
        self.classifier = nn.Linear(c.hidden_size, c.num_labels) if c.num_labels else None
        if fused:
            use_fused_kernels(self)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """transformers' ViT initialisation: truncated $\\mathcal N(0, \\sigma^2)$ for the patch
        map, every linear layer, the class token and the positions; zero biases; unit norms."""
        std = self.config.initializer_range
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, LayerNorm):
                nn.init.ones_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.patch_embed.weight, std=std)
        if self.patch_embed.bias is not None:
            nn.init.zeros_(self.patch_embed.bias)
        nn.init.trunc_normal_(self.cls_token, std=std)
        nn.init.trunc_normal_(self.pos_embed, std=std)

    def embed(self, pixel_values: Tensor) -> Tensor:
        """Class token and patch tokens with their positions, `(batch, N + 1, d)`."""
        c = self.config
        check_images(pixel_values, c.num_channels, c.image_size, "ViT")
        x = self.patch_embed(pixel_values)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.drop(x + self.pos_embed)  # type: ignore[no-any-return]

    def forward(self, pixel_values: Tensor) -> Tensor:
        """`(batch, C, H, W)` -> the final hidden states `(batch, N + 1, d)` (class token first)."""
        x = self.embed(pixel_values)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)  # type: ignore[no-any-return]

    def logits(self, pixel_values: Tensor) -> Tensor:
        """Class logits from the class token, `(batch, num_labels)`."""
        if self.classifier is None:
            raise ViTConfigError("this ViT has no classifier (num_labels=0)")
        return self.classifier(self(pixel_values)[:, 0])  # type: ignore[no-any-return]

    def attention_maps(self, pixel_values: Tensor) -> list[Tensor]:
        """Every block's attention probabilities, `(batch, heads, N + 1, N + 1)` each, detached."""
        attns = [block.self_attn for block in self.blocks]
        for a in attns:
            a.record_attention = True  # type: ignore[union-attr]
        try:
            with torch.no_grad():
                self(pixel_values)
            return [a.last_attention for a in attns]  # type: ignore[union-attr,misc]
        finally:
            for a in attns:
                a.record_attention = False  # type: ignore[union-attr]
                a.last_attention = None  # type: ignore[union-attr]

    # -- Hugging Face layout --------------------------------------------------------------------

    def hf_names(self, prefix: str | None = None) -> dict[str, str]:
        """transformers' name of each of our parameters: `ViTModel`'s, under `vit.` with a
        `classifier.` for a classifier (`ViTForImageClassification`), or under `prefix`."""
        p = prefix if prefix is not None else ("vit." if self.classifier is not None else "")
        names = {
            "cls_token": f"{p}embeddings.cls_token",
            "pos_embed": f"{p}embeddings.position_embeddings",
            "patch_embed.weight": f"{p}embeddings.patch_embeddings.projection.weight",
            "patch_embed.bias": f"{p}embeddings.patch_embeddings.projection.bias",
            "norm.weight": f"{p}layernorm.weight",
            "norm.bias": f"{p}layernorm.bias",
            "classifier.weight": "classifier.weight",
            "classifier.bias": "classifier.bias",
        }
        for i in range(len(self.blocks)):
            for ours, theirs in _VIT_BLOCK_NAMES.items():
                names[f"blocks.{i}.{ours}"] = f"{p}encoder.layer.{i}.{theirs}"
        own = dict(self.named_parameters())
        return {k: v for k, v in names.items() if k in own}

    def to_hf_state_dict(self) -> dict[str, Tensor]:
        """Our weights under transformers' names (see `hf_names`)."""
        return renamed_state(self, self.hf_names())

    def load_hf_state_dict(self, state: dict[str, Tensor], source: str = "state dict") -> None:
        """Load transformers `ViTModel` / `ViTForImageClassification` weights (a pooler, which
        this model does not have, is ignored)."""
        skip = ("pooler.", "vit.pooler.")
        load_renamed(self, state, self.hf_names(), source, lambda n: n.startswith(skip))

    def save_pretrained(self, directory: str | Path) -> Path:
        """`config.json` and `model.safetensors` in transformers' ViT layout, written atomically."""
        return write_model_dir(directory, self.config.to_hf(), self.to_hf_state_dict())

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> ViT:
        """A ViT from a `save_pretrained` directory (ours or transformers')."""
        hf, state = read_model_dir(directory)
        model = cls(ViTConfig.from_hf(hf, source=str(Path(directory) / "config.json")))
        model.load_hf_state_dict(state, source=str(Path(directory) / "model.safetensors"))
        return model


_VIT_BLOCK_NAMES = {
    "attn_norm.weight": "layernorm_before.weight",
    "attn_norm.bias": "layernorm_before.bias",
    "self_attn.q_proj.weight": "attention.attention.query.weight",
    "self_attn.q_proj.bias": "attention.attention.query.bias",
    "self_attn.k_proj.weight": "attention.attention.key.weight",
    "self_attn.k_proj.bias": "attention.attention.key.bias",
    "self_attn.v_proj.weight": "attention.attention.value.weight",
    "self_attn.v_proj.bias": "attention.attention.value.bias",
    "self_attn.out_proj.weight": "attention.output.dense.weight",
    "self_attn.out_proj.bias": "attention.output.dense.bias",
    "ffn_norm.weight": "layernorm_after.weight",
    "ffn_norm.bias": "layernorm_after.bias",
    "ffn.up_proj.weight": "intermediate.dense.weight",
    "ffn.up_proj.bias": "intermediate.dense.bias",
    "ffn.down_proj.weight": "output.dense.weight",
    "ffn.down_proj.bias": "output.dense.bias",
}
