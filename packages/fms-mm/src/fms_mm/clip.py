r"""CLIP (Radford et al. 2021): an image tower and a text tower trained to agree.

**Contrastive learning as classification over the batch.** A batch holds $B$ image-caption
pairs. Each tower maps its input to a vector, a linear projection takes both to one shared
width, and the vectors are normalised to unit length: $u_i$ for image $i$, $v_j$ for caption
$j$. Their cosine similarities, scaled by a learned temperature $\tau$, form a $B \times B$
matrix of logits

$$S_{ij} = \frac{u_i^\top v_j}{\tau} = e^{s}\, u_i^\top v_j, \qquad s = \log(1/\tau),$$

whose diagonal holds the true pairs. Each row is then a $B$-way classification (which caption
goes with image $i$?) and each column another (which image goes with caption $j$?); the loss is
the mean of the two cross-entropies, the symmetric InfoNCE loss

$$\mathcal{L} = \tfrac12\Big(\tfrac1B\sum_i -\log \mathrm{softmax}_j(S_{ij})_{j=i}
  + \tfrac1B\sum_j -\log \mathrm{softmax}_i(S_{ij})_{i=j}\Big).$$

Every other caption in the batch is a negative, so no labels beyond the pairing are needed. The
temperature is learned through $s$ (initialised to $\log(1/0.07) = 2.6592$, as CLIP) and clamped
at $\log 100$ so the logits cannot grow without bound.

**Zero-shot classification.** Writing each class as a caption ("a red circle") and embedding the
captions once gives a matrix of class vectors; an image's class is the caption its vector is
most similar to. No classifier is trained: the text tower *is* the classifier's weights.

The image tower is a ViT with CLIP's two extra LayerNorms (one before the encoder, one on the
class token after it) and no patch bias; the text tower is a causal transformer over token ids
read out at the end-of-text token. Both are stacks of fms-transformer
[`EncoderBlock`][fms_transformer.blocks.EncoderBlock]s. Parameter names follow Hugging Face
`CLIPModel`, so `save_pretrained` / `from_pretrained` exchange weights with transformers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fms_llm.models.gpt import use_fused_kernels
from fms_mm._files import load_renamed, read_model_dir, renamed_state, write_model_dir
from fms_mm.vision import PatchEmbedding, check_images
from fms_transformer.blocks import EncoderBlock
from fms_transformer.norm import LayerNorm

__all__ = [
    "CLIP",
    "CLIPConfig",
    "CLIPConfigError",
    "CLIPTextConfig",
    "CLIPTextTower",
    "CLIPVisionConfig",
    "CLIPVisionTower",
    "TextInputError",
    "ZeroShotClassifier",
    "clip_loss",
    "zero_shot_classifier",
]

Activation = Literal["quick_gelu", "gelu"]
_FFN = {"quick_gelu": "quick_gelu_mlp", "gelu": "gelu_mlp"}
MAX_LOGIT_SCALE = math.log(100.0)
"""The learned log inverse temperature is clamped here in training (CLIP's 100)."""


class CLIPConfigError(ValueError):
    """An inconsistent CLIP configuration."""


class TextInputError(ValueError):
    """Token ids of the wrong shape, longer than the context, or without an end-of-text token."""


def _positive(obj: object, names: Sequence[str]) -> None:
    for name in names:
        value = getattr(obj, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise CLIPConfigError(f"{name} must be a positive int, got {value!r}")
    if obj.hidden_size % obj.num_attention_heads:  # type: ignore[attr-defined]
        raise CLIPConfigError(
            f"num_attention_heads={obj.num_attention_heads} must divide "  # type: ignore[attr-defined]
            f"hidden_size={obj.hidden_size}"  # type: ignore[attr-defined]
        )
    if obj.hidden_act not in _FFN:  # type: ignore[attr-defined]
        raise CLIPConfigError(
            f"hidden_act must be 'quick_gelu' or 'gelu', got {obj.hidden_act!r}"  # type: ignore[attr-defined]
        )


_TOWER_SIZES = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")


@dataclass
class CLIPTextConfig:
    """The text tower; field names are those of Hugging Face's `CLIPTextConfig`.

    Attributes:
        vocab_size: Token ids are `0 .. vocab_size - 1`.
        max_position_embeddings: The context: the longest caption in tokens.
        hidden_size: Tower width.
        intermediate_size: Hidden size of each block's MLP.
        num_hidden_layers: Encoder blocks.
        num_attention_heads: Heads per block.
        hidden_act: `"quick_gelu"` (OpenAI's CLIP) or `"gelu"`.
        layer_norm_eps: The LayerNorms' epsilon.
        pad_token_id: Padding id (only recorded; padding is given by the attention mask).
        bos_token_id: Start-of-text id.
        eos_token_id: End-of-text id; the tower is read out at its first occurrence in each row
            (at the row's largest id when it is 2, transformers' rule for older configs).
    """

    vocab_size: int = 64
    max_position_embeddings: int = 16
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    hidden_act: Activation = "quick_gelu"
    layer_norm_eps: float = 1e-5
    pad_token_id: int = 0
    bos_token_id: int = 1
    eos_token_id: int = 3

    def __post_init__(self) -> None:
        _positive(self, ("vocab_size", "max_position_embeddings", *_TOWER_SIZES))
        if not 0 <= self.eos_token_id < self.vocab_size:
            raise CLIPConfigError(
                f"eos_token_id={self.eos_token_id} must be in [0, vocab_size={self.vocab_size})"
            )


@dataclass
class CLIPVisionConfig:
    """The image tower; field names are those of Hugging Face's `CLIPVisionConfig`.

    Attributes:
        image_size: Side of the square input image in pixels.
        patch_size: Side of a square patch; must divide `image_size`.
        num_channels: Input channels.
        hidden_size: Tower width.
        intermediate_size: Hidden size of each block's MLP.
        num_hidden_layers: Encoder blocks.
        num_attention_heads: Heads per block.
        hidden_act: `"quick_gelu"` (OpenAI's CLIP) or `"gelu"`.
        layer_norm_eps: The LayerNorms' epsilon.
    """

    image_size: int = 32
    patch_size: int = 4
    num_channels: int = 3
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    hidden_act: Activation = "quick_gelu"
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        _positive(self, ("image_size", "patch_size", "num_channels", *_TOWER_SIZES))
        if self.image_size % self.patch_size:
            raise CLIPConfigError(
                f"patch_size={self.patch_size} must divide image_size={self.image_size}"
            )

    @property
    def num_patches(self) -> int:
        """(image_size / patch_size) squared."""
        return (self.image_size // self.patch_size) ** 2


@dataclass
class CLIPConfig:
    """Both towers, the shared embedding width and the temperature's starting value.

    Attributes:
        text_config: The text tower.
        vision_config: The image tower.
        projection_dim: Width of the shared embedding space.
        logit_scale_init_value: Initial $s = \\log(1/\\tau)$ (CLIP's $\\log(1/0.07)$).
        initializer_factor: Scales every initial standard deviation (transformers' field).
    """

    text_config: CLIPTextConfig = field(default_factory=CLIPTextConfig)
    vision_config: CLIPVisionConfig = field(default_factory=CLIPVisionConfig)
    projection_dim: int = 32
    logit_scale_init_value: float = 2.6592
    initializer_factor: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.text_config, dict):
            self.text_config = CLIPTextConfig(**self.text_config)
        if isinstance(self.vision_config, dict):
            self.vision_config = CLIPVisionConfig(**self.vision_config)
        if not isinstance(self.projection_dim, int) or self.projection_dim < 1:
            raise CLIPConfigError(
                f"projection_dim must be a positive int, got {self.projection_dim!r}"
            )

    def to_hf(self) -> dict[str, Any]:
        """A transformers-readable `config.json` (`model_type` "clip")."""
        return {
            "architectures": ["CLIPModel"],
            "model_type": "clip",
            "projection_dim": self.projection_dim,
            "logit_scale_init_value": self.logit_scale_init_value,
            "initializer_factor": self.initializer_factor,
            "text_config": {**asdict(self.text_config), "projection_dim": self.projection_dim},
            "vision_config": {**asdict(self.vision_config), "projection_dim": self.projection_dim},
        }

    @classmethod
    def from_hf(cls, hf: dict[str, Any], source: str = "config.json") -> CLIPConfig:
        """Read the fields of a transformers CLIP `config.json` (unknown fields are ignored)."""
        if hf.get("model_type", "clip") != "clip":
            raise CLIPConfigError(f"{source}: model_type must be 'clip', got {hf['model_type']!r}")

        def pick(kind: type[Any], sub: dict[str, Any]) -> Any:
            names = {f.name for f in fields(kind)}
            return kind(**{k: v for k, v in sub.items() if k in names})

        return cls(
            text_config=pick(CLIPTextConfig, hf.get("text_config", {})),
            vision_config=pick(CLIPVisionConfig, hf.get("vision_config", {})),
            projection_dim=hf.get("projection_dim", 512),
            logit_scale_init_value=hf.get("logit_scale_init_value", 2.6592),
            initializer_factor=hf.get("initializer_factor", 1.0),
        )


def _blocks(c: CLIPTextConfig | CLIPVisionConfig) -> nn.ModuleList:
    return nn.ModuleList(
        EncoderBlock(
            c.hidden_size,
            c.num_attention_heads,
            c.intermediate_size,
            norm="layernorm",
            norm_eps=c.layer_norm_eps,
            ffn=_FFN[c.hidden_act],  # type: ignore[arg-type]
            norm_first=True,
            bias=True,
        )
        for _ in range(c.num_hidden_layers)
    )


class CLIPVisionTower(nn.Module):
    """Patches (no bias), class token, positions, LayerNorm, encoder; the class token, normed."""

    def __init__(self, config: CLIPVisionConfig) -> None:
        super().__init__()
        self.config = c = config
        self.patch_embed = PatchEmbedding(c.num_channels, c.patch_size, c.hidden_size, bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(c.hidden_size))
        self.pos_embed = nn.Parameter(torch.zeros(c.num_patches + 1, c.hidden_size))
        self.pre_norm = LayerNorm(c.hidden_size, c.layer_norm_eps)
        self.blocks = _blocks(c)
        self.post_norm = LayerNorm(c.hidden_size, c.layer_norm_eps)

    def hidden_states(self, pixel_values: Tensor) -> Tensor:
        """Every token's last hidden state `(batch, N + 1, d)` (before the post-norm)."""
        c = self.config
        check_images(pixel_values, c.num_channels, c.image_size, "CLIP image tower")
        x = self.patch_embed(pixel_values)
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        x = self.pre_norm(torch.cat([cls, x], dim=1) + self.pos_embed)
        for block in self.blocks:
            x = block(x)
        out: Tensor = x
        return out

    def forward(self, pixel_values: Tensor) -> Tensor:
        """`(batch, C, H, W)` -> the pooled image vector `(batch, d)`."""
        return self.post_norm(self.hidden_states(pixel_values)[:, 0])  # type: ignore[no-any-return]


class CLIPTextTower(nn.Module):
    """Token and position embeddings, causal encoder, LayerNorm, read out at end-of-text."""

    def __init__(self, config: CLIPTextConfig) -> None:
        super().__init__()
        self.config = c = config
        self.token_embed = nn.Embedding(c.vocab_size, c.hidden_size)
        self.pos_embed = nn.Parameter(torch.zeros(c.max_position_embeddings, c.hidden_size))
        self.blocks = _blocks(c)
        self.final_norm = LayerNorm(c.hidden_size, c.layer_norm_eps)

    def check(self, input_ids: Tensor, attention_mask: Tensor | None) -> None:
        """Raise a `TextInputError` for ids of the wrong shape, range or length."""
        c = self.config
        if not isinstance(input_ids, Tensor) or input_ids.dtype not in (torch.int64, torch.int32):
            got = input_ids.dtype if isinstance(input_ids, Tensor) else type(input_ids).__name__
            raise TextInputError(f"CLIP text tower: input_ids must be an int tensor, got {got}")
        if input_ids.ndim != 2 or input_ids.shape[1] == 0:
            raise TextInputError(
                f"CLIP text tower: input_ids must be (batch, seq) with seq >= 1, "
                f"got shape {tuple(input_ids.shape)}"
            )
        if input_ids.shape[1] > c.max_position_embeddings:
            raise TextInputError(
                f"CLIP text tower: captions of {input_ids.shape[1]} tokens are longer than the "
                f"context max_position_embeddings={c.max_position_embeddings}"
            )
        if int(input_ids.min()) < 0 or int(input_ids.max()) >= c.vocab_size:
            raise TextInputError(
                f"CLIP text tower: token ids must be in [0, {c.vocab_size}), got "
                f"[{int(input_ids.min())}, {int(input_ids.max())}]"
            )
        if attention_mask is not None and tuple(attention_mask.shape) != tuple(input_ids.shape):
            raise TextInputError(
                f"CLIP text tower: attention_mask has shape {tuple(attention_mask.shape)}, "
                f"expected {tuple(input_ids.shape)} (that of input_ids)"
            )
        if c.eos_token_id != 2:
            missing = ~(input_ids == c.eos_token_id).any(dim=1)
            if bool(missing.any()):
                rows = missing.nonzero().flatten().tolist()[:8]
                raise TextInputError(
                    f"CLIP text tower: rows {rows} have no end-of-text token "
                    f"(eos_token_id={c.eos_token_id}); the tower is read out there"
                )

    def hidden_states(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Every token's hidden state after the final LayerNorm, `(batch, seq, d)`."""
        self.check(input_ids, attention_mask)
        x = self.token_embed(input_ids) + self.pos_embed[: input_ids.shape[1]]
        mask = None
        if attention_mask is not None:
            mask = attention_mask.bool()[:, None, None, :]
        for block in self.blocks:
            x = block(x, mask=mask, is_causal=True)
        out: Tensor = self.final_norm(x)
        return out

    def eos_positions(self, input_ids: Tensor) -> Tensor:
        """Where each row is read out: its first end-of-text token (its largest id if eos is 2)."""
        if self.config.eos_token_id == 2:
            return input_ids.argmax(dim=-1)
        return (input_ids == self.config.eos_token_id).int().argmax(dim=-1)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """`(batch, seq)` ids -> the pooled caption vector `(batch, d)`."""
        h = self.hidden_states(input_ids, attention_mask)
        return h[torch.arange(h.shape[0], device=h.device), self.eos_positions(input_ids)]


def clip_loss(logits_per_text: Tensor) -> Tensor:
    """The symmetric InfoNCE loss of a `(B, B)` similarity matrix whose diagonal holds the pairs:
    the mean of the caption-to-image and image-to-caption cross-entropies."""
    if logits_per_text.ndim != 2 or logits_per_text.shape[0] != logits_per_text.shape[1]:
        raise ValueError(
            f"clip_loss: logits must be a square (B, B) matrix, got {tuple(logits_per_text.shape)}"
        )
    target = torch.arange(logits_per_text.shape[0], device=logits_per_text.device)
    return (
        F.cross_entropy(logits_per_text, target) + F.cross_entropy(logits_per_text.T, target)
    ) / 2


@dataclass
class CLIPOutput:
    """What `CLIP.forward` returns: both logit matrices, the unit embeddings and the loss."""

    logits_per_image: Tensor
    logits_per_text: Tensor
    image_embeds: Tensor
    text_embeds: Tensor
    loss: Tensor | None = None


class CLIP(nn.Module):
    """Image tower, text tower, their projections into one space and the learned temperature.

    Args:
        config: Both towers and the shared space.
        fused: Compute the LayerNorms and activations with fused kernels (the same function and
            parameters, fewer kernels); `False` runs fms-transformer's reference modules.

    Example:
        >>> cfg = CLIPConfig(CLIPTextConfig(vocab_size=10, max_position_embeddings=4,
        ...                                 hidden_size=16, intermediate_size=32,
        ...                                 num_hidden_layers=1, num_attention_heads=2,
        ...                                 eos_token_id=3),
        ...                  CLIPVisionConfig(image_size=8, patch_size=4, num_channels=1,
        ...                                   hidden_size=16, intermediate_size=32,
        ...                                   num_hidden_layers=1, num_attention_heads=2),
        ...                  projection_dim=8)
        >>> out = CLIP(cfg)(torch.zeros(2, 1, 8, 8), torch.tensor([[1, 5, 3], [1, 6, 3]]))
        >>> out.logits_per_image.shape
        torch.Size([2, 2])
    """

    def __init__(self, config: CLIPConfig, fused: bool = True) -> None:
        super().__init__()
        if not isinstance(config, CLIPConfig):
            raise TypeError(f"config must be a CLIPConfig, got {type(config).__name__}")
        self.config = config
        self.vision = CLIPVisionTower(config.vision_config)
        self.text = CLIPTextTower(config.text_config)
        self.visual_projection = nn.Linear(
            config.vision_config.hidden_size, config.projection_dim, bias=False
        )
        self.text_projection = nn.Linear(
            config.text_config.hidden_size, config.projection_dim, bias=False
        )
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init_value)))
        if fused:
            use_fused_kernels(self)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        r"""transformers' CLIP initialisation: $\mathcal N(0, 0.02^2)$ token and text position
        embeddings; the image tower's class token $\mathcal N(0, d^{-1})$ and patches and
        positions at the initializer range; attention projections at $d^{-1/2}(2L)^{-1/2}$
        (output $d^{-1/2}$), MLP $(2d)^{-1/2}$ in and $d^{-1/2}(2L)^{-1/2}$ out; the shared
        projections at $d^{-1/2}$; unit norms, zero biases (times `initializer_factor`)."""
        f = self.config.initializer_factor
        tc, vc = self.config.text_config, self.config.vision_config
        nn.init.normal_(self.text.token_embed.weight, std=0.02 * f)
        nn.init.normal_(self.text.pos_embed, std=0.02 * f)
        nn.init.normal_(self.vision.class_embedding, std=vc.hidden_size**-0.5 * f)
        nn.init.normal_(self.vision.patch_embed.weight, std=0.02 * f)
        nn.init.normal_(self.vision.pos_embed, std=0.02 * f)
        for tower, c in ((self.text, tc), (self.vision, vc)):
            d, layers = c.hidden_size, c.num_hidden_layers
            in_std = d**-0.5 * (2 * layers) ** -0.5 * f
            stds = {
                "q_proj.weight": in_std,
                "k_proj.weight": in_std,
                "v_proj.weight": in_std,
                "out_proj.weight": d**-0.5 * f,
                "up_proj.weight": (2 * d) ** -0.5 * f,
                "down_proj.weight": in_std,
            }
            for name, param in tower.blocks.named_parameters():
                leaf = ".".join(name.split(".")[-2:])
                if leaf in stds:
                    nn.init.normal_(param, std=stds[leaf])
        nn.init.normal_(self.visual_projection.weight, std=vc.hidden_size**-0.5 * f)
        nn.init.normal_(self.text_projection.weight, std=tc.hidden_size**-0.5 * f)
        for m in self.modules():
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
            elif isinstance(m, LayerNorm):
                nn.init.ones_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self.logit_scale.fill_(self.config.logit_scale_init_value)

    def image_features(self, pixel_values: Tensor) -> Tensor:
        """Projected image vectors `(batch, projection_dim)` (not normalised)."""
        return self.visual_projection(self.vision(pixel_values))  # type: ignore[no-any-return]

    def text_features(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Projected caption vectors `(batch, projection_dim)` (not normalised)."""
        return self.text_projection(self.text(input_ids, attention_mask))  # type: ignore[no-any-return]

    def forward(
        self,
        pixel_values: Tensor,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        return_loss: bool = False,
    ) -> CLIPOutput:
        """The $B \\times B$ similarity logits of `B` images and `B` captions (and the loss)."""
        u = F.normalize(self.image_features(pixel_values), dim=-1)
        v = F.normalize(self.text_features(input_ids, attention_mask), dim=-1)
        logits_per_text = self.logit_scale.exp() * v @ u.T
        loss = clip_loss(logits_per_text) if return_loss else None
        return CLIPOutput(logits_per_text.T, logits_per_text, u, v, loss)

    @torch.no_grad()
    def clamp_logit_scale(self) -> None:
        """Keep $s \\le \\log 100$ (call after each optimiser step, as CLIP does)."""
        self.logit_scale.clamp_(0.0, MAX_LOGIT_SCALE)

    # -- Hugging Face layout --------------------------------------------------------------------

    def hf_names(self) -> dict[str, str]:
        """transformers' `CLIPModel` name of each of our parameters."""
        names = {
            "logit_scale": "logit_scale",
            "visual_projection.weight": "visual_projection.weight",
            "text_projection.weight": "text_projection.weight",
            "vision.class_embedding": "vision_model.embeddings.class_embedding",
            "vision.patch_embed.weight": "vision_model.embeddings.patch_embedding.weight",
            "vision.pos_embed": "vision_model.embeddings.position_embedding.weight",
            "vision.pre_norm.weight": "vision_model.pre_layrnorm.weight",
            "vision.pre_norm.bias": "vision_model.pre_layrnorm.bias",
            "vision.post_norm.weight": "vision_model.post_layernorm.weight",
            "vision.post_norm.bias": "vision_model.post_layernorm.bias",
            "text.token_embed.weight": "text_model.embeddings.token_embedding.weight",
            "text.pos_embed": "text_model.embeddings.position_embedding.weight",
            "text.final_norm.weight": "text_model.final_layer_norm.weight",
            "text.final_norm.bias": "text_model.final_layer_norm.bias",
        }
        for ours, theirs, tower in (
            ("vision", "vision_model", self.vision),
            ("text", "text_model", self.text),
        ):
            for i in range(len(tower.blocks)):
                for mine, hf in _CLIP_BLOCK_NAMES.items():
                    names[f"{ours}.blocks.{i}.{mine}"] = f"{theirs}.encoder.layers.{i}.{hf}"
        return names

    def to_hf_state_dict(self) -> dict[str, Tensor]:
        """Our weights under transformers' names."""
        return renamed_state(self, self.hf_names())

    def load_hf_state_dict(self, state: dict[str, Tensor], source: str = "state dict") -> None:
        """Load transformers `CLIPModel` weights, every one named and shaped as ours (the
        `position_ids` buffers older transformers saved are ignored)."""
        load_renamed(self, state, self.hf_names(), source, lambda n: n.endswith("position_ids"))

    def save_pretrained(self, directory: str | Path) -> Path:
        """`config.json` and `model.safetensors` in transformers' CLIP layout, atomically."""
        return write_model_dir(directory, self.config.to_hf(), self.to_hf_state_dict())

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> CLIP:
        """A CLIP from a `save_pretrained` directory (ours or transformers')."""
        hf, state = read_model_dir(directory)
        model = cls(CLIPConfig.from_hf(hf, source=str(Path(directory) / "config.json")))
        model.load_hf_state_dict(state, source=str(Path(directory) / "model.safetensors"))
        return model


_CLIP_BLOCK_NAMES = {
    "attn_norm.weight": "layer_norm1.weight",
    "attn_norm.bias": "layer_norm1.bias",
    "self_attn.q_proj.weight": "self_attn.q_proj.weight",
    "self_attn.q_proj.bias": "self_attn.q_proj.bias",
    "self_attn.k_proj.weight": "self_attn.k_proj.weight",
    "self_attn.k_proj.bias": "self_attn.k_proj.bias",
    "self_attn.v_proj.weight": "self_attn.v_proj.weight",
    "self_attn.v_proj.bias": "self_attn.v_proj.bias",
    "self_attn.out_proj.weight": "self_attn.out_proj.weight",
    "self_attn.out_proj.bias": "self_attn.out_proj.bias",
    "ffn_norm.weight": "layer_norm2.weight",
    "ffn_norm.bias": "layer_norm2.bias",
    "ffn.up_proj.weight": "mlp.fc1.weight",
    "ffn.up_proj.bias": "mlp.fc1.bias",
    "ffn.down_proj.weight": "mlp.fc2.weight",
    "ffn.down_proj.bias": "mlp.fc2.bias",
}


class ZeroShotClassifier(nn.Module):
    """A CLIP image tower with the class captions' unit vectors as its classifier weights.

    Attributes:
        class_embeds: `(n_classes, projection_dim)` unit vectors, one a class (the mean of its
            prompts' unit vectors, renormalised, when a class has several prompts).
    """

    class_embeds: Tensor

    def __init__(self, clip: CLIP, class_embeds: Tensor) -> None:
        super().__init__()
        self.clip = clip
        self.register_buffer("class_embeds", class_embeds)

    def forward(self, pixel_values: Tensor) -> Tensor:
        """Class logits `(batch, n_classes)`: scaled cosine similarity to each class caption."""
        u = F.normalize(self.clip.image_features(pixel_values), dim=-1)
        return self.clip.logit_scale.exp() * u @ self.class_embeds.T

    @torch.no_grad()
    def predict(self, pixel_values: Tensor) -> Tensor:
        """The most similar class for each image, `(batch,)`."""
        logits: Tensor = self(pixel_values)
        return logits.argmax(dim=-1)


@torch.no_grad()
def zero_shot_classifier(
    clip: CLIP,
    prompts: Sequence[Tensor],
    attention_masks: Sequence[Tensor | None] | None = None,
) -> ZeroShotClassifier:
    """A classifier from class captions alone, no training: `prompts[k]` is `(n_prompts, seq)`
    token ids of the captions of class `k` (one or several; several are averaged, CLIP's prompt
    ensembling), `attention_masks[k]` their padding masks."""
    if len(prompts) == 0:
        raise ValueError("zero_shot_classifier: prompts is empty, expected one tensor a class")
    if attention_masks is not None and len(attention_masks) != len(prompts):
        raise ValueError(
            f"zero_shot_classifier: {len(attention_masks)} attention masks for "
            f"{len(prompts)} classes"
        )
    rows = []
    for k, ids in enumerate(prompts):
        mask = attention_masks[k] if attention_masks is not None else None
        v = F.normalize(clip.text_features(ids, mask), dim=-1).mean(dim=0)
        rows.append(F.normalize(v, dim=-1))
    return ZeroShotClassifier(clip, torch.stack(rows))
