"""Sample applications bundled with zmqhttp."""
