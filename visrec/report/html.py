"""Self-contained HTML pages from Jinja2 templates (``templates/``): images inline as data URIs, no
external assets, every value escaped by Jinja's autoescaping."""

from __future__ import annotations

import base64
import functools
from typing import Any


def data_uri(data: bytes, mime: str = "image/png") -> str:
    """``data`` as a ``data:`` URI for an ``<img src>``."""
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


@functools.cache
def _environment():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("visrec.report", "templates"),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["data_uri"] = data_uri
    return env


def render(template: str, **context: Any) -> str:
    """Render ``templates/<template>`` with ``context``."""
    return _environment().get_template(template).render(**context)


def similar_page(
    name: str, photo: bytes, guesses: str, matches: list, pngs: dict[str, bytes], context: dict
) -> str:
    """The page ``visrec similar --html`` writes: the photo, then the products like it."""
    mime = "image/" + (name.rsplit(".", 1)[-1].lower().replace("jpg", "jpeg") if "." in name else "png")
    return render(
        "similar.html.j2",
        title=f"Products like {name}",
        photo=data_uri(photo, mime),
        guesses=guesses,
        matches=[{"rank": r, "match": m, "png": pngs.get(m.item_id)} for r, m in enumerate(matches, 1)],
        context=context,
    )
