"""Pictures of a generation's samples: the PNG beside each ``samples/gen_{t}.npz`` of a deep run.

:func:`sample_png` draws a scatter of 2-D points or a grid of images;
:func:`image_grid` tiles images ``(n, H, W)`` into one mosaic (one row per
class where labelled), which the image-loop figures reuse. matplotlib is
imported only when a picture is drawn.
"""

from __future__ import annotations

import numpy as np


def sample_png(x: np.ndarray, y: np.ndarray | None, path: str, title: str) -> None:
    """Draw ``x`` to ``path``: a scatter of 2-D points ``(n, 2)``, or a grid of images ``(n, H, W)`` in [0, 1]
    (:func:`image_grid`: one row per class where ``y`` labels them), titled ``title``.

    Non-finite points are left out of the scatter, whose axes frame the 0.5-99.5 percentiles so that a few
    far outliers do not shrink the cloud to a dot.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if x.ndim == 2 and x.shape[1] == 2:
        fig, ax = plt.subplots(figsize=(3.2, 3.2))
        x = x[np.all(np.isfinite(x), axis=1)]
        ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.3, lw=0)
        if len(x):  # frame the bulk: a few far outliers should not shrink the cloud to a dot
            lo, hi = np.percentile(x, [0.5, 99.5], axis=0)
            pad = 0.1 * np.maximum(hi - lo, 1e-6)
            ax.set(xlim=(lo[0] - pad[0], hi[0] + pad[0]), ylim=(lo[1] - pad[1], hi[1] + pad[1]))
        ax.set(xlabel="$x_1$", ylabel="$x_2$", title=title)
    else:
        mosaic, row_labels = image_grid(x, y)
        fig, ax = plt.subplots(figsize=(4.0, 4.0 * mosaic.shape[0] / mosaic.shape[1] + 0.3))
        ax.imshow(mosaic, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set(xticks=[], yticks=[], title=title)
        if row_labels:  # one row per class: label it
            step = mosaic.shape[0] / len(row_labels)
            ax.set_yticks((np.arange(len(row_labels)) + 0.5) * step, [str(c) for c in row_labels], fontsize=6)
            ax.tick_params(length=0)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def image_grid(x: np.ndarray, y: np.ndarray | None = None, *, per_row: int = 8,
               max_rows: int = 10) -> tuple[np.ndarray, list]:
    """Tile images ``(n, H, W)`` into one mosaic with a 1-pixel grey border.

    Labelled images get one row per class (its first ``per_row`` samples, in
    class order), so a grid shows every class whatever order the sampler
    returned them in; unlabelled ones fill ``per_row``-wide rows in order.
    Non-finite pixels show as mid-grey.

    Returns:
      ``(mosaic, row_labels)``: a 2-D float array in [0, 1] and the class of
      each row (empty when unlabelled).
    """
    x = np.nan_to_num(np.clip(np.asarray(x, np.float32), 0.0, 1.0), nan=0.5)
    if y is not None:
        labels = [int(c) for c in np.unique(y) if c >= 0][:max_rows]
        rows = [x[y == c][:per_row] for c in labels]
    else:
        labels = []
        count = min(len(x), per_row * max_rows)
        rows = [x[i:i + per_row] for i in range(0, count, per_row)]
    h, w = x.shape[1:3]
    per_row = max((len(r) for r in rows), default=1)  # no empty columns when every class has fewer
    mosaic = np.full((len(rows) * (h + 1) + 1, per_row * (w + 1) + 1), 0.5, np.float32)
    for r, images in enumerate(rows):
        for c, image in enumerate(images):
            mosaic[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + c * (w + 1):1 + c * (w + 1) + w] = image
    return mosaic, labels
