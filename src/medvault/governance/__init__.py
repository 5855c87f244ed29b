"""Records governance: retention classes, legal holds, destruction, exports, backup/restore."""
