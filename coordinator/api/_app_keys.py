"""Typed keys for values stored on the aiohttp application."""

from aiohttp import web

__all__ = ["APP_KEY_PRICES"]

APP_KEY_PRICES = web.AppKey("prices", dict)
