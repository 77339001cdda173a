"""The storefront-page fixtures (`shop_store`, `shop_settings`) live in `tests/conftest.py`: the
integration tier uses them too."""
