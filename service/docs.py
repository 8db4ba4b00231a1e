"""The API's documentation pages, /docs (Swagger UI) and /redoc (ReDoc), served with their JavaScript and CSS from
the service itself: the files come from the fastapi-offline package (pinned by the lock), so the pages work with no
internet. The pages carry no inline script or style; static/docs/swagger.js starts Swagger UI."""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from service.pages import STATIC_PREFIX

ASSETS_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"
ASSETS_PREFIX = STATIC_PREFIX + "/vendor"  # under the page's static prefix: files without data, open like the page
DOCS_PATHS = ("/docs", "/redoc")

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" href="{static}/favicon.svg" type="image/svg+xml">
{head}</head>
<body>
{body}
</body>
</html>
"""

# Own origin only: ReDoc's sidebar would otherwise fetch its maker's logo from the maker's CDN. Both UIs set styles
# from their scripts (style attributes), and ReDoc's search runs in a worker made from a blob.
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; worker-src 'self' blob:; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'")

router = APIRouter()


def _page(title: str, head: str, body: str) -> HTMLResponse:
    return HTMLResponse(_PAGE.format(title=title, static=STATIC_PREFIX, head=head, body=body),
                        headers={"Content-Security-Policy": CSP})


@router.get("/docs", include_in_schema=False)
async def swagger() -> HTMLResponse:
    return _page("latentserve - Swagger UI", f'<link rel="stylesheet" href="{ASSETS_PREFIX}/swagger-ui.css">\n',
                 f'<div id="swagger-ui"></div>\n<script src="{ASSETS_PREFIX}/swagger-ui-bundle.js"></script>\n'
                 f'<script src="{STATIC_PREFIX}/docs/swagger.js"></script>')


@router.get("/redoc", include_in_schema=False)
async def redoc() -> HTMLResponse:
    return _page("latentserve - ReDoc", "", f'<redoc spec-url="/openapi.json"></redoc>\n'
                 f'<script src="{ASSETS_PREFIX}/redoc.standalone.js"></script>')


# Before the page's own /static mount, which would otherwise take these paths.
router.routes.append(Mount(ASSETS_PREFIX, StaticFiles(directory=ASSETS_DIR), name="docs-assets"))
