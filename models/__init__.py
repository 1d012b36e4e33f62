"""Reference models built on the fastrq quantizer modules (installed as ``fastrq.models``)."""
