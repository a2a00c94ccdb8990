"""Small helpers for self-contained HTML pages (images inline as data URIs, no external assets)."""

from __future__ import annotations

import base64
import html


def data_uri(png: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(png).decode()}"


def page(title: str, body: str) -> str:
    """A complete page with a small, readable style."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 12px; }}
figure {{ margin: 0; text-align: center; font-size: 12px; }}
figure img {{ width: 128px; height: 128px; image-rendering: pixelated; border: 1px solid #ddd; }}
table {{ border-collapse: collapse; }} td, th {{ padding: 4px 10px; border-bottom: 1px solid #eee; }}
</style></head><body><h1>{html.escape(title)}</h1>
{body}
</body></html>
"""


def figure(src: str, caption: str, alt: str = "") -> str:
    return (f'<figure><img src="{html.escape(src)}" alt="{html.escape(alt or caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")  # fmt: skip
