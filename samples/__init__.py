"""Sample texts shipped with longlm (installed as package data)."""
