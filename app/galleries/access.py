"""Who may see and write a gallery: one rule for every use case that reads or changes one (a
gallery outside the actor's scope is answered as absent: 404)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.galleries.exceptions import UnknownGallery
from app.galleries.models import Gallery
from app.principals.models import Principal, Role


def visible_gallery(session: Session, actor: Principal, gallery_id: int) -> Gallery:
    """The gallery if ``actor`` may see it (admin: any; registry: its own country's), else 404."""
    gallery = session.get(Gallery, gallery_id)
    if gallery is None or not (
        actor.role == Role.ADMIN.value or (actor.role == Role.REGISTRY.value and actor.country == gallery.country)
    ):
        raise UnknownGallery(f"gallery {gallery_id} not found")
    return gallery


def writable_gallery(session: Session, actor: Principal, gallery_id: int) -> Gallery:
    """The gallery if ``actor`` is a registry officer of its country, else 404."""
    gallery = session.get(Gallery, gallery_id)
    if gallery is None or actor.role != Role.REGISTRY.value or actor.country != gallery.country:
        raise UnknownGallery(f"gallery {gallery_id} not found")
    return gallery
