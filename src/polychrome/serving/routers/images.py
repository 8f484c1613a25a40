"""The gallery: list (newest first, filters, cursor), metadata, PNG, delete."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import FileResponse, Response

from ...persistence import gallery
from ..schemas import ImageList, ImageOut

router = APIRouter(prefix="/api/images", tags=["gallery"])
ImageId = Path(ge=1, le=2**62)


@router.get("", response_model=ImageList)
def list_images(limit: int = Query(50, ge=1, le=gallery.MAX_LIMIT),
                offset: int = Query(0, ge=0, le=10**9),
                cursor: int | None = Query(None, ge=0, le=2**62,
                                           description="next_cursor of the previous page"),
                model: str | None = Query(None, max_length=128),
                style: str | None = Query(None, max_length=128)) -> Any:
    return gallery.list_images(limit=limit, offset=offset, cursor=cursor, model=model,
                               style=style)


@router.get("/{image_id:int}.png", response_class=FileResponse,
            responses={200: {"content": {"image/png": {}}}})
def image_png(image_id: int = ImageId) -> Any:
    return FileResponse(gallery.image_path(image_id), media_type="image/png")


@router.get("/{image_id:int}", response_model=ImageOut)
def image_info(image_id: int = ImageId) -> Any:
    return gallery.get_image(image_id)


@router.delete("/{image_id:int}", status_code=204, response_class=Response)
def delete_image(image_id: int = ImageId) -> Response:
    gallery.delete_image(image_id)
    return Response(status_code=204)
