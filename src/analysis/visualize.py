"""Seeing what PPT does to an image: which patches each PP block pruned and which it pooled together.

:func:`visualize_images` preprocesses images exactly like evaluation (``src.data.transforms.eval_transforms``),
runs ``PPTStats(model, trace=True)`` and, per image, writes

- ``<name>_block<i>.png`` for every PP block ``i``: the un-normalised input with the patches no token stands
  for any more blacked out, each pooled group (a token standing for more than one patch) tinted in one colour
  and outlined, patches of single-patch tokens as they are; the caption gives the block's decision (prune or
  pool, per image) and the score variance that decided it against the threshold;
- ``<name>_grid.png``: the input and one panel per PP block side by side.

The token sources accumulate over blocks, so a panel shows everything removed up to and including its block.
A group's colour is derived from its lowest patch index, so a group that survives to a later block usually
keeps its colour there. Images are enlarged with nearest-neighbour sampling (patch edges stay sharp) to at
least :data:`MIN_PANEL` pixels. Every file is written atomically.
"""
import colorsys
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mindspore as ms
import numpy as np
from mindspore import Tensor
from PIL import Image, ImageDraw, ImageFont

from ..data.folder import scan_image_folder
from ..deploy import Preprocess
from ..deploy.inference import load_images
from ..io.fileio import atomic_path
from ..models import PPTStats, VisionTransformer
from ..token_reduction import get_policy

__all__ = ["MIN_PANEL", "TokenMap", "token_map", "display_pixels", "trace_tokens", "render_block", "render_input",
           "render_grid", "save_png", "demo_images", "visualize_images", "describe_weights"]

MIN_PANEL = 224  # smallest displayed image side, in pixels
_FONT_SIZE = 13
_LINE_HEIGHT = 17
_CAPTION_LINES = 3
_GAP = 6  # pixels between grid panels
_TINT = 0.55  # weight of a group's colour over the image


@dataclass(frozen=True)
class TokenMap:
    """Which token stands for each patch after one PP block, for one image.

    ``owner[y, x]`` is the index of the token covering patch ``(y, x)`` (-1: pruned, no token covers it);
    ``sizes[t]`` is the number of patches token ``t`` stands for (0 for prefix tokens).
    """

    owner: np.ndarray
    sizes: np.ndarray

    @property
    def num_pruned(self) -> int:
        return int((self.owner < 0).sum())

    @property
    def group_sizes(self) -> list[int]:
        """Patch counts of the pooled groups (tokens standing for more than one patch)."""
        return [int(s) for s in self.sizes if s > 1]


def token_map(source: np.ndarray, num_prefix_tokens: int, grid: int) -> TokenMap:
    """Turn one image's ``[N_after, N0]`` token-source matrix into a :class:`TokenMap`.

    Columns are the initial tokens (prefix tokens, then ``grid * grid`` patches in raster order).
    Raises ValueError if the matrix has the wrong width or a patch is covered by more than one token.
    """
    source = np.asarray(source)
    if source.ndim != 2 or source.shape[1] != num_prefix_tokens + grid * grid:
        raise ValueError(f"token_map: expected a [tokens, {num_prefix_tokens + grid * grid}] source matrix "
                         f"({num_prefix_tokens} prefix tokens + {grid}x{grid} patches), got shape {source.shape}")
    covers = source[:, num_prefix_tokens:] > 0.5  # entries are 0/1; the threshold absorbs float noise
    per_patch = covers.sum(axis=0)
    if per_patch.max(initial=0) > 1:
        patch = int(np.argmax(per_patch))
        raise ValueError(f"token_map: patch {patch} is covered by {int(per_patch[patch])} tokens; "
                         f"a patch can belong to at most one token")
    owner = np.where(per_patch == 1, np.argmax(covers, axis=0), -1)
    return TokenMap(owner=owner.reshape(grid, grid), sizes=covers.sum(axis=1))


def display_pixels(batch: np.ndarray, pre: Preprocess) -> np.ndarray:
    """The model input ``[B, 3, H, W]`` un-normalised to uint8 ``[B, H, W, 3]`` for display."""
    mean = np.asarray(pre.mean, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(pre.std, np.float32).reshape(1, 3, 1, 1)
    return np.clip(np.rint((batch * std + mean) * 255.0), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


def trace_tokens(model: VisionTransformer, batch: np.ndarray,
                 batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
    """Run ``PPTStats(model, trace=True)`` over ``batch`` in chunks of ``batch_size`` rows.

    Every chunk has ``min(batch_size, len(batch))`` rows (the last one padded with zeros and cut off
    afterwards), so graph mode compiles once. Returns ``(logits [B, K], pooled [B, L] bool, svar [B, L],
    sources)``, ``sources[l]`` being ``[B, N_after, N0]`` for PP block ``model.ppt_layers[l]``.
    """
    if batch_size < 1:
        raise ValueError(f"trace_tokens: batch_size must be >= 1, got {batch_size}")
    n = len(batch)
    rows = min(batch_size, n)
    stats = PPTStats(model, trace=True)
    was_training = model.training
    model.set_train(False)
    outputs: list[list[np.ndarray]] = []
    try:
        for start in range(0, n, rows):
            chunk = batch[start:start + rows]
            if len(chunk) < rows:
                pad = np.zeros((rows - len(chunk),) + chunk.shape[1:], chunk.dtype)
                chunk = np.concatenate([chunk, pad])
            logits, pooled, svar, sources = stats(Tensor(chunk, ms.float32))
            outputs.append([logits.asnumpy(), pooled.asnumpy(), svar.asnumpy()] + [s.asnumpy() for s in sources])
    finally:
        model.set_train(was_training)
    joined = [np.concatenate(parts)[:n] for parts in zip(*outputs)]
    return joined[0], joined[1].astype(bool), joined[2], joined[3:]


def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default(size=_FONT_SIZE)


def _group_colour(anchor: int) -> np.ndarray:
    """A saturated colour for the group whose lowest patch index is ``anchor`` (golden-ratio hue steps
    keep neighbouring anchors apart)."""
    hue = (anchor * 0.618033988749895) % 1.0
    return np.array(colorsys.hsv_to_rgb(hue, 0.85, 1.0)) * 255.0


def _scale(img_size: int) -> int:
    return max(1, -(-MIN_PANEL // img_size))


def _fit(text: str, width: float, font: ImageFont.ImageFont) -> str:
    """``text``, cut and ended with "..." if it is wider than ``width`` pixels (long class names)."""
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "...") > width:
        text = text[:-1]
    return text + "..."


def _captioned(pixels: np.ndarray, lines: Sequence[str]) -> Image.Image:
    """``pixels`` (uint8 ``[H, W, 3]``) under a white strip holding ``lines`` of text."""
    height, width = pixels.shape[:2]
    top = _CAPTION_LINES * _LINE_HEIGHT + 4
    panel = Image.new("RGB", (width, top + height), "white")
    panel.paste(Image.fromarray(pixels), (0, top))
    draw, font = ImageDraw.Draw(panel), _font()
    for i, line in enumerate(list(lines)[:_CAPTION_LINES]):
        draw.text((3, 2 + i * _LINE_HEIGHT), _fit(line, width - 6, font), fill="black", font=font)
    return panel


def _enlarge(pixels: np.ndarray, scale: int) -> np.ndarray:
    return np.repeat(np.repeat(pixels, scale, axis=0), scale, axis=1)


def render_block(display: np.ndarray, tokens: TokenMap, patch_size: int, lines: Sequence[str]) -> Image.Image:
    """One PP block's panel: pruned patches black, pooled groups tinted and outlined, the rest untouched.

    ``display`` is the uint8 ``[H, W, 3]`` input; ``lines`` (at most 3) are the caption.
    """
    grid = tokens.owner.shape[0]
    if display.shape[:2] != (grid * patch_size, grid * patch_size):
        raise ValueError(f"render_block: image {display.shape[:2]} does not match {grid}x{grid} patches of "
                         f"{patch_size} px")
    out = display.astype(np.float32)
    owner = tokens.owner
    grouped = np.zeros_like(owner, dtype=bool)
    for token in np.flatnonzero(tokens.sizes > 1):
        cells = owner == token
        grouped |= cells
        mask = _enlarge(cells, patch_size)
        out[mask] = (1 - _TINT) * out[mask] + _TINT * _group_colour(int(np.flatnonzero(cells.ravel())[0]))
    out[_enlarge(owner < 0, patch_size)] = 0.0
    scale = _scale(display.shape[0])
    big = _enlarge(np.rint(out).astype(np.uint8), scale)
    # Outline the groups: a dark line on each patch edge between two different tokens, where either is a group.
    cell = patch_size * scale
    cells_owner, cells_grouped = _enlarge(owner, cell), _enlarge(grouped, cell)
    edge_y = (cells_owner[1:] != cells_owner[:-1]) & (cells_grouped[1:] | cells_grouped[:-1])
    edge_x = (cells_owner[:, 1:] != cells_owner[:, :-1]) & (cells_grouped[:, 1:] | cells_grouped[:, :-1])
    big[1:][edge_y] = 32
    big[:, 1:][edge_x] = 32
    return _captioned(big, lines)


def render_input(display: np.ndarray, lines: Sequence[str]) -> Image.Image:
    """The input panel: the un-normalised input, enlarged like the block panels, under ``lines``."""
    return _captioned(_enlarge(display, _scale(display.shape[0])), lines)


def render_grid(panels: Sequence[Image.Image]) -> Image.Image:
    """Panels side by side, :data:`_GAP` pixels apart, on white."""
    width = sum(p.width for p in panels) + _GAP * (len(panels) - 1)
    grid = Image.new("RGB", (width, max(p.height for p in panels)), "white")
    x = 0
    for panel in panels:
        grid.paste(panel, (x, 0))
        x += panel.width + _GAP
    return grid


def save_png(image: Image.Image, path: os.PathLike) -> None:
    """Write ``image`` as PNG, atomically (a temporary file in the same folder, then ``os.replace``)."""
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def demo_images(root: os.PathLike, count: int, split: str = "val") -> list[Path]:
    """``count`` images of a dataset split, one class after another (the first image of each class, then
    the second, ...), so a few images show several classes."""
    if count < 1:
        raise ValueError(f"--demo: expected a number of images >= 1, got {count}")
    scan = scan_image_folder(Path(root) / split)
    per_class: list[list[Path]] = [[] for _ in scan.classes]
    for path, label in scan.samples:
        per_class[label].append(path)
    order = [paths[i] for i in range(max(map(len, per_class))) for paths in per_class if i < len(paths)]
    return order[:count]


def _output_names(paths: Sequence[Path]) -> list[str]:
    """File stems, prefixed with the parent folder's name where stems collide (demo images are 0000.png in
    every class folder)."""
    stems = [p.stem for p in paths]
    names = [f"{p.parent.name}_{p.stem}" if stems.count(p.stem) > 1 else p.stem for p in paths]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"images would share the output name(s) {', '.join(duplicates)}; rename or visualise "
                         f"them in separate runs")
    return names


def visualize_images(model: VisionTransformer, paths: Sequence[os.PathLike], out_dir: os.PathLike,
                     pre: Preprocess, weights_label: str, class_names: Sequence[str],
                     batch_size: int = 8) -> list[dict[str, Any]]:
    """Write the per-block PNGs and the grid PNG of every image (see the module docstring).

    Args:
        model: a PPT model (at least one PP block with r > 0).
        paths: image files.
        out_dir: output folder (created if missing).
        pre: the evaluation preprocessing (``src.deploy.inference.preprocess_from_config``).
        weights_label: shown on every input panel, e.g. the checkpoint name or "RANDOM WEIGHTS".
        class_names: one per class of the model (``src.deploy.inference.resolve_class_names``), shown with the
            prediction.
        batch_size: images per forward pass.

    Returns:
        Per image: ``image``, ``prediction`` (class index), ``prediction_name``, ``probability``, ``grid`` (path),
        and ``blocks``: per PP block
        ``layer``, ``decision`` ("pool"/"prune"), ``svar``, ``tokens``, ``groups`` (group sizes),
        ``pruned_patches``, ``png``.
    """
    if not model.ppt_layers:
        raise ValueError("the model has no PP block (ppt disabled, or every r is 0 after clamping): "
                         "nothing to visualise")
    if len(class_names) != model.num_classes:
        raise ValueError(f"{len(class_names)} class names, but the model has {model.num_classes} classes")
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("no images to visualise: give image files or folders (or --demo N)")
    names = _output_names(paths)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    batch = load_images(paths, pre)
    display = display_pixels(batch, pre)
    logits, pooled, svar, sources = trace_tokens(model, batch, batch_size)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs = shifted / shifted.sum(axis=1, keepdims=True)
    grid = model.img_size // model.patch_size
    decides = get_policy(model.ppt.policy).uses_threshold  # only ppt decides by score variance per image

    results = []
    for b, (path, name) in enumerate(zip(paths, names)):
        pred = int(np.argmax(logits[b]))
        caption = f"prediction: {class_names[pred]} (class {pred}, {100 * probs[b, pred]:.0f} %)"
        panels = [render_input(display[b], [path.name, caption, weights_label])]
        blocks = []
        for k, layer in enumerate(model.ppt_layers):
            tokens = token_map(sources[k][b], model.num_prefix_tokens, grid)
            decision = "pool" if pooled[b, k] else "prune"
            why = (f": score var {svar[b, k]:.3g} {'<' if pooled[b, k] else '>='} {model.ppt.threshold:.3g}"
                   if decides else f" (policy {model.ppt.policy})")
            groups = tokens.group_sizes
            lines = [f"{path.name}: PP block {layer}", f"{decision.upper()}{why}",
                     f"{sources[k].shape[1]} tokens: {len(groups)} groups, {tokens.num_pruned} patches pruned"]
            panel = render_block(display[b], tokens, model.patch_size, lines)
            png = out_dir / f"{name}_block{layer}.png"
            save_png(panel, png)
            panels.append(panel)
            blocks.append({"layer": layer, "decision": decision, "svar": float(svar[b, k]),
                           "tokens": int(sources[k].shape[1]), "groups": groups,
                           "pruned_patches": tokens.num_pruned, "png": str(png)})
        grid_png = out_dir / f"{name}_grid.png"
        save_png(render_grid(panels), grid_png)
        results.append({"image": str(path), "prediction": pred, "prediction_name": class_names[pred],
                        "probability": float(probs[b, pred]), "grid": str(grid_png), "blocks": blocks})
    return results


def describe_weights(ckpt_file: str | None) -> str:
    """The caption naming the weights: the checkpoint's file name, or a warning for random weights."""
    return f"weights: {Path(ckpt_file).name}" if ckpt_file else "RANDOM WEIGHTS (no checkpoint)"
