"""Entry points of the core commands (`init-model`, `data`); stage commands live in their stage packages."""
